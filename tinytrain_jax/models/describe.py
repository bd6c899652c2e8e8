"""Per-layer tables of a backbone (shapes, parameters, MACs) as rows or JSON."""
from typing import Any, Dict

from tinytrain_jax.models.spec import ModelSpec

_KIND = {'first': 'conv', 'pw1': 'pw1', 'dw': 'dw', 'pw2': 'pw2', 'mix': 'mix'}


def describe(spec: ModelSpec) -> Dict[str, Any]:
  """JSON-able description: totals plus one row per conv (and classifier).

  Keys (stable; other tools read them): model, resolution, feature_mix,
  num_classes, feature_dim, total_macs, total_params, backbone_macs,
  backbone_params, layers[index, name, type, c_in, c_out, k, stride, h_in,
  h_out, params, macs]. MACs are per image; params are BN-folded.
  """
  layers = [
      dict(index=c.index, name=c.name, type=_KIND[c.kind], c_in=c.c_in,
           c_out=c.c_out, k=c.kernel, stride=c.stride, h_in=c.h_in,
           h_out=c.h_out, params=c.n_params, macs=c.macs) for c in spec.convs
  ]
  if spec.num_classes:
    layers.append(
        dict(index=None, name='classifier', type='linear',
             c_in=spec.feature_dim, c_out=spec.num_classes, k=1, stride=1,
             h_in=1, h_out=1, params=spec.classifier_params,
             macs=spec.classifier_macs))
  return dict(model=spec.name, resolution=spec.resolution,
              feature_mix=spec.feature_mix, num_classes=spec.num_classes,
              feature_dim=spec.feature_dim, total_macs=spec.total_macs,
              total_params=spec.total_params, backbone_macs=spec.backbone_macs,
              backbone_params=spec.backbone_params, layers=layers)


def format_table(desc: Dict[str, Any]) -> str:
  """Fixed-width text table of `describe` output with a totals line."""
  head = (f"{'idx':>4} {'name':<22} {'type':<6} {'C_in':>5} {'C_out':>5} "
          f"{'k':>2} {'s':>2} {'H_in':>5} {'H_out':>5} {'#params':>9} "
          f"{'MACs':>11}")
  lines = [
      f"{desc['model']} @ {desc['resolution']} px"
      f"{' + mix ' + str(desc['feature_mix']) if desc['feature_mix'] else ''}",
      head, '-' * len(head)
  ]
  for r in desc['layers']:
    idx = '' if r['index'] is None else r['index']
    lines.append(f"{idx:>4} {r['name']:<22} {r['type']:<6} {r['c_in']:>5} "
                 f"{r['c_out']:>5} {r['k']:>2} {r['stride']:>2} "
                 f"{r['h_in']:>5} {r['h_out']:>5} {r['params']:>9,} "
                 f"{r['macs']:>11,}")
  lines.append('-' * len(head))
  lines.append(f"{'total':<63} {desc['total_params']:>9,} "
               f"{desc['total_macs']:>11,}")
  return '\n'.join(lines)
