"""Fine-tuning methods of TinyTrain's comparison (protocol.md §7) as masks.

  res = run_method('lastlayer', spec, params, head, episode, FinetuneConfig())

Each method maps (spec, params, episode) to a mask (`masks`), or None for no
training; `run_method` fine-tunes with it (`finetune.finetune`) and reports its
analytic backward cost (`cost.backward_macs`, `cost.backward_memory_bytes` at
the support-set batch). Which weights a method starts from (pretrained for the
Table-1 baselines, meta-trained for TinyTrain; the 'w/o meta-training'
ablation swaps them) is the caller's choice of `params`.

Methods:
  none: no fine-tuning; ProtoNet on the given features.
  fulltrain: every conv kernel and bias.
  lastlayer: the last conv, kernel + bias (MBV2/Proxyless with feature_mix:
    the mix 1x1 conv; MCUNet: the last pointwise2, 576->160).
  biasonly: every conv bias.
  sparseupdate: tiny-training's static scheme, `SPARSE_UPDATE_SCHEMES`
    (biases of the last 20-24 convs + the kernels of four late 1x1 convs,
    two of them on the first half of their input channels), built by
    `selection.sparse_update_mask` when available, else by
    `cost.sparse_update_to_layers` (same semantics).
  tinytrain: dynamic per-task `selection.select` under
    `selection.default_budgets(model)`.
  tinytrain_l2 / tinytrain_random: the same with a static channel ranking
    (SelectionConfig(channel_rank='l2' | 'random')).
  tinytl: lite-residual branches + all biases (`tinytl.py`).
"""
import dataclasses
from typing import Any, Callable, Dict

import numpy as np

from tinytrain_jax import masks as masks_lib
from tinytrain_jax.train import collapse
from tinytrain_jax.train import finetune as finetune_lib

# Static SparseUpdate schemes, expressed from the end of the network so they
# fit every backbone: n_bias_update, then (conv offset from the last conv,
# input-channel ratio). Offsets: 0 = last conv (MCUNet pw2 / mix conv);
# MCUNet's last block is pw1 = -2, dw = -1, pw2 = 0. Chosen so the analytic
# backward compute lands near the published SparseUpdate numbers at 128 px
# (MCUNet 11.9M, MBV2 8.10M, Proxyless 7.60M MACs; see the report in
# benchmarks/results/step_costs.json); a reconstruction, not tiny-training's
# searched scheme.
SPARSE_UPDATE_SCHEMES = {
    # 128 px analytic bwd MACs / fp32 bytes (batch 1): 12.10M / 2.34 MB
    'mcunet-5fps': (20, ((0, 1.0), (-2, 1.0), (-3, 0.5), (-5, 0.5))),
    # 7.97M / 1.39 MB (with feature_mix)
    'mbv2-w0.35': (24, ((0, 1.0), (-1, 1.0), (-3, 0.5), (-4, 0.5))),
    # 7.55M / 1.20 MB (with feature_mix)
    'proxyless-w0.3': (24, ((0, 1.0), (-1, 1.0), (-3, 0.5), (-4, 0.5))),
}


def _none(spec, params, episode, head=None):
  del head, spec, params, episode
  return None


def _fulltrain(spec, params, episode, head=None):
  del head, episode
  return masks_lib.mask_from_layers(spec, params,
                                    {c.name: 'full' for c in spec.convs})


def _lastlayer(spec, params, episode, head=None):
  del head, episode
  return masks_lib.mask_from_layers(spec, params, {spec.convs[-1].name: 'full'})


def _biasonly(spec, params, episode, head=None):
  del head, episode
  return masks_lib.mask_from_layers(spec, params,
                                    {c.name: 'bias' for c in spec.convs})


def sparse_update_args(spec):
  """(n_bias_update, manual_weight_idx, weight_update_ratio) for `spec`."""
  n_bias, weights = SPARSE_UPDATE_SCHEMES[spec.name]
  last = len(spec.convs) - 1
  n_bias = min(n_bias, last + 1)
  idx = [last + off for off, _ in weights]
  ratios = [r for _, r in weights]
  return n_bias, idx, ratios


def _sparseupdate(spec, params, episode, head=None):
  del head, episode
  n_bias, idx, ratios = sparse_update_args(spec)
  try:
    from tinytrain_jax import selection  # pylint: disable=g-import-not-at-top
    fn = selection.sparse_update_mask
  except (ImportError, AttributeError):
    fn = None
  if fn is not None:
    return fn(spec, params, n_bias, idx, ratios)
  from tinytrain_jax import cost  # pylint: disable=g-import-not-at-top
  layers = cost.sparse_update_to_layers(spec, n_bias, idx, ratios)
  return masks_lib.mask_from_layers(spec, params, layers)


def tinytrain_budgets(spec, scale: float = 1.0, budget_bytes: int = 0,
                      budget_macs: int = 0):
  """(bytes, MACs) budgets of TinyTrain's selection for `spec`.

  Defaults are `selection.default_budgets` (published TinyTrain costs at
  128 px), scaled by (resolution / 128)^2 because every activation and MAC
  count scales with the pixel count (at 64 px the unscaled 6.51M MACs would
  cover half a full backward and push the selection to the stem), then by
  `scale` (budget sweeps). Positive `budget_bytes` / `budget_macs` override.
  """
  from tinytrain_jax import selection  # pylint: disable=g-import-not-at-top
  b, m = selection.default_budgets(spec.name)
  px = (spec.resolution / 128.0) ** 2
  return (int(budget_bytes) or int(b * px * scale),
          int(budget_macs) or int(m * px * scale))


def _tinytrain(channel_rank=None):
  def fn(spec, params, episode, head=None, budgets=None):
    from tinytrain_jax import selection  # pylint: disable=g-import-not-at-top
    budget_bytes, budget_macs = budgets or tinytrain_budgets(spec)
    kw = {} if channel_rank is None else {'channel_rank': channel_rank}
    cfg = selection.SelectionConfig(budget_bytes=budget_bytes,
                                    budget_macs=budget_macs, **kw)
    return selection.select(spec, params, episode, cfg, head=head).mask
  return fn


@dataclasses.dataclass(frozen=True)
class Method:
  """name; mask_fn(spec, params, episode) -> mask | None; start: the weights
  the paper's Table 1 starts this method from ('pretrained'|'metatrained')."""
  name: str
  mask_fn: Callable[..., Any]
  start: str = 'pretrained'


METHODS: Dict[str, Method] = {
    'none': Method('none', _none),
    'fulltrain': Method('fulltrain', _fulltrain),
    'lastlayer': Method('lastlayer', _lastlayer),
    'biasonly': Method('biasonly', _biasonly),
    'sparseupdate': Method('sparseupdate', _sparseupdate),
    'tinytrain': Method('tinytrain', _tinytrain(), 'metatrained'),
    'tinytrain_l2': Method('tinytrain_l2', _tinytrain('l2'), 'metatrained'),
    'tinytrain_random': Method('tinytrain_random', _tinytrain('random'),
                               'metatrained'),
    'tinytl': Method('tinytl', None),
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f'unknown method {name!r}; accepted: '
                     f'{", ".join(METHODS)}')
  return METHODS[name]


def method_mask(name: str, spec, params, episode, head=None, budgets=None):
  """The mask `name` trains for this task (None = nothing); `head` is used by
  TinyTrain's Fisher pass, `budgets` = (bytes, MACs) by its selection."""
  m = get_method(name)
  if m.mask_fn is None:
    raise ValueError(f'method {name!r} trains extra modules, not a mask of '
                     'the params; use run_method')
  if budgets is not None and name.startswith('tinytrain'):
    return m.mask_fn(spec, params, episode, head=head, budgets=budgets)
  return m.mask_fn(spec, params, episode, head=head)


def mask_summary(spec, mask) -> Dict[str, Any]:
  """JSON-able {'n_trained', 'layers': {name: [channels, of, bias]}}."""
  if mask is None:
    return {'n_trained': 0, 'layers': {}}
  ups = masks_lib.layer_updates(spec, mask)
  return {'n_trained': masks_lib.count_trained(mask, _shapes(spec)),
          'layers': {n: [len(u.weight_channels), u.n_channels, u.bias]
                     for n, u in ups.items()}}


def _shapes(spec):
  import jax  # pylint: disable=g-import-not-at-top
  from tinytrain_jax.models import network  # pylint: disable=g-import-not-at-top
  return jax.eval_shape(lambda: network.init(spec, jax.random.PRNGKey(0)))[0]


def episode_ways(episode):
  """bool[W] valid ways of an Episode or episode dict."""
  return (episode['way_mask'] if isinstance(episode, dict)
          else episode.way_mask)


def run_method(method: str, spec, params, head, episode,
               config: finetune_lib.FinetuneConfig = finetune_lib.FinetuneConfig(),
               budgets=None) -> Dict[str, Any]:
  """Runs one method on one task (`budgets`: TinyTrain's (bytes, MACs);
  default `tinytrain_budgets(spec)`).

  Returns:
    dict(method, accuracy, query_loss, bwd_macs (per sample), bwd_bytes (fp32
    model at the support batch), final_support_loss, mask summary).
  """
  get_method(method)
  if method == 'tinytl':
    from tinytrain_jax.train import tinytl  # pylint: disable=g-import-not-at-top
    res = tinytl.finetune_tinytl(spec, params, head, episode, config)
    mask = None
    costs, summary = res.costs, {'n_trained': res.costs.get('n_trained', 0),
                                 'layers': 'all biases + lite residual'}
  else:
    mask = method_mask(method, spec, params, episode, head, budgets)
    steps = config.steps if mask is not None else 0
    res = finetune_lib.finetune(spec, params, head, episode, mask,
                                dataclasses.replace(config, steps=steps))
    costs, summary = res.costs, mask_summary(spec, mask)
  curve = np.asarray(res.loss_curve)
  if curve.size and getattr(res, 'params', None) is not None:
    ways = int(np.asarray(episode_ways(episode)).sum())
    collapse.warn_if_collapsed(f'fine-tuning (method {method})',
                               config.lr, ways, float(res.query_loss),
                               collapse.param_norm(params), res.params)
  return {'method': method, 'accuracy': res.accuracy,
          'query_loss': res.query_loss,
          'bwd_macs': costs['bwd_macs'], 'bwd_bytes': costs['bwd_bytes'],
          'final_support_loss': float(curve[-1]) if curve.size else None,
          'mask': summary}
