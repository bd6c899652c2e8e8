"""Baseline fine-tuning methods of TinyTrain's cost table as layer views.

* fulltrain: every conv kernel and bias (+ the classifier, if any).
* lastlayer: the last conv, kernel and bias (the mix conv of MBV2/Proxyless
  with feature_mix; MCUNet's last pointwise2) (+ the classifier, if any).
* biasonly: every conv bias (+ the classifier, if any).
* sparseupdate: the cached scheme of the backbone (`sparse_update_scheme`,
  found offline by `experiments.sparseupdate_search`: contribution analysis
  + search under the published SparseUpdate budgets), the same scheme the
  evaluation trains (+ the classifier, if any, which tiny-training always
  trains).

Count MACs of fulltrain with count_unneeded_input_grad=True to reproduce the
published 2 × forward numbers (`methods.PUBLISHED_CONVENTION`).
"""
import functools
import json
import pathlib
from typing import Any, Dict, List, Tuple

import jax

from tinytrain_jax.cost import analytic
from tinytrain_jax.cost import step
from tinytrain_jax.masks import LayerView
from tinytrain_jax.models import network
from tinytrain_jax.models.registry import model_spec
from tinytrain_jax.models.spec import ModelSpec

METHODS = ('fulltrain', 'lastlayer', 'biasonly', 'sparseupdate')
# Written by experiments/sparseupdate_search.py; read here (one code path for
# the evaluation and the cost launcher).
SCHEMES_PATH = (
    pathlib.Path(__file__).resolve().parents[1] / 'configs' /
    'sparseupdate_schemes.json')
# count_unneeded_input_grad per method in TinyTrain's table.
PUBLISHED_CONVENTION = {
    'fulltrain': True,
    'lastlayer': False,
    'biasonly': False,
    'sparseupdate': False
}


def method_layer_view(spec: ModelSpec, method: str) -> LayerView:
  """The `masks.LayerView` of a static method.

  Example:
    view = method_layer_view(model_spec('mcunet-5fps'), 'sparseupdate')
    tt_memory_bits(spec, view)  # the searched scheme's cost (configs/)
  """
  if method not in METHODS:
    raise ValueError(f'method must be one of {", ".join(METHODS)}, got '
                     f'{method!r}')
  cls = bool(spec.num_classes)
  n = len(spec.convs)
  if method == 'fulltrain':
    return analytic.as_layer_view(spec, {c.index: 'full' for c in spec.convs},
                                  cls)
  if method == 'lastlayer':
    return analytic.as_layer_view(spec, {n - 1: 'full'}, cls)
  if method == 'biasonly':
    return analytic.as_layer_view(spec, {c.index: 'bias' for c in spec.convs},
                                  cls)
  n_bias, idx, ratios = sparse_update_scheme(spec)
  layers = analytic.sparse_update_to_layers(spec, n_bias, idx, ratios)
  return layers._replace(classifier=cls)


@functools.lru_cache(maxsize=4)
def _load_schemes(path: str, mtime_ns: int) -> Dict[str, Any]:
  del mtime_ns  # cache key only: a regenerated file is read again
  return json.loads(pathlib.Path(path).read_text())['schemes']


def sparse_update_scheme(spec: ModelSpec,
                         path=None) -> Tuple[int, List[int], List[float]]:
  """(n_bias_update, manual_weight_idx, weight_update_ratio) cached for spec.

  Reads `SCHEMES_PATH` (or `path`). Raises ValueError when the backbone has
  no scheme or was searched with another feature_mix setting.
  """
  path = pathlib.Path(path or SCHEMES_PATH)
  fix = ('run python -m experiments.sparseupdate_search '
         f'--models={spec.name}')
  if not path.exists():
    raise ValueError(f'no SparseUpdate schemes file at {path.name}; {fix}')
  schemes = _load_schemes(str(path), path.stat().st_mtime_ns)
  if spec.name not in schemes:
    raise ValueError(f'no cached SparseUpdate scheme for {spec.name} (have '
                     f'{", ".join(sorted(schemes))}); {fix}')
  e = schemes[spec.name]
  if bool(e['feature_mix']) != bool(spec.feature_mix):
    raise ValueError(f'the SparseUpdate scheme of {spec.name} was searched '
                     f'with feature_mix={bool(e["feature_mix"])}, got '
                     f'feature_mix={bool(spec.feature_mix)}; pass '
                     f'--{"" if e["feature_mix"] else "no"}feature_mix')
  return (int(e['n_bias_update']), [int(i) for i in e['manual_weight_idx']],
          [float(r) for r in e['weight_update_ratio']])


def method_report(model: str, method: str, resolution: int = 128,
                  feature_mix: bool = False, batch_size: int = 1,
                  num_classes=None) -> Dict[str, Any]:
  """Every cost model for one backbone + mask method, as a JSON-able dict.

  Top level: the jaxpr-measured step (`step.analyze_training_step`; MACs per
  sample, FullTrain with the published count_unneeded_input_grad convention;
  bytes at `batch_size`), plus 'analytic' (§2 MACs, fp32_saved bytes at
  `batch_size`, tiny-training kB). Raises ValueError for a bad model/option.
  """
  spec = model_spec(model, resolution=resolution, feature_mix=feature_mix,
                    num_classes=num_classes)
  view = method_layer_view(spec, method)
  params = jax.eval_shape(lambda: network.init(spec, jax.random.PRNGKey(0)))[0]
  flag = PUBLISHED_CONVENTION[method]
  cost = step.analyze_training_step(spec, params, view, batch_size, flag)
  macs = analytic.backward_macs(spec, view, flag)
  mem = analytic.backward_memory_bytes(spec, view, batch_size)
  out = {k: v for k, v in cost._asdict().items()}
  out.update(model=spec.name, method=method, resolution=resolution,
             feature_mix=bool(feature_mix), count_unneeded_input_grad=flag)
  out['analytic'] = {
      'bwd_macs': macs.total_macs,
      'bwd_weight_grad_macs': macs.weight_grad_macs,
      'bwd_input_grad_macs': macs.input_grad_macs,
      'fp32_saved_activation_bytes': mem.saved_activation_bytes,
      'fp32_total_bytes': mem.total_bytes,
      'tt_memory_kb': analytic.tt_memory_bits(spec, view) / 8 / 1024,
  }
  return out


def format_report(report: Dict[str, Any]) -> str:
  """Per-layer table and totals of `method_report` as text."""
  lines = [
      f"{report['model']} {report['method']} @ {report['resolution']} px,"
      f" batch {report['batch_size']} (MACs per sample, bytes per batch)",
      f"{'idx':>4} {'layer':<22} {'fwd MACs':>11} {'wgrad MACs':>11} "
      f"{'igrad MACs':>11} {'saved B':>10}"
  ]
  for l in report['layers']:
    idx = '' if l['index'] is None else l['index']
    lines.append(f"{idx:>4} {l['name']:<22} {l['fwd_macs']:>11,} "
                 f"{l['bwd_weight_grad_macs']:>11,} "
                 f"{l['bwd_input_grad_macs']:>11,} {l['saved_bytes']:>10,}")
  a = report['analytic']
  lines += [
      f"total: fwd {report['fwd_macs']:,} MACs; bwd {report['bwd_macs']:,} "
      f"MACs (wgrad {report['bwd_weight_grad_macs']:,}, igrad "
      f"{report['bwd_input_grad_macs']:,}); analytic bwd {a['bwd_macs']:,}",
      f"jax saved {report['saved_bytes']:,} B (conv inputs "
      f"{report['saved_conv_input_bytes']:,} B); peak live "
      f"{report['peak_bytes']:,} B; trainable params "
      f"{report['param_bytes']:,} B",
      f"fp32_saved model: activations {a['fp32_saved_activation_bytes']:,} B,"
      f" total {a['fp32_total_bytes']:,} B; tiny-training model "
      f"{a['tt_memory_kb']:.2f} kB"
  ]
  return '\n'.join(lines)
