"""Tiny sweep algebra for configs/sweep.py: `sweep` and `product` of overrides.

  get_sweep(h) -> list of {dotted key: value} dicts, e.g.
  h.product([h.sweep('selection.budget_scale', [0.5, 1, 2]),
             h.sweep('methods', ['tinytrain', 'tinytrain_l2'])])
"""
import itertools
from typing import Any, Dict, List, Sequence


def sweep(key: str, values: Sequence[Any]) -> List[Dict[str, Any]]:
  return [{key: v} for v in values]


def product(sweeps: Sequence[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
  out = []
  for combo in itertools.product(*sweeps):
    point = {}
    for d in combo:
      point.update(d)
    out.append(point)
  return out


def point_name(point: Dict[str, Any]) -> str:
  """Workdir-safe name of a sweep point, from its overrides."""
  parts = [f'{k.split(".")[-1]}={v}' for k, v in sorted(point.items())]
  return ','.join(parts).replace('/', '_').replace(' ', '')


def apply_overrides(cfg, point: Dict[str, Any]):
  """Returns a copy of the ConfigDict with dotted keys set (unlocked)."""
  cfg = cfg.copy_and_resolve_references()
  with cfg.unlocked():
    for key, value in point.items():
      node = cfg
      *path, leaf = key.split('.')
      for p in path:
        node = node[p]
      if leaf not in node:
        raise ValueError(f'sweep key {key!r} is not a config field')
      node[leaf] = value
  return cfg
