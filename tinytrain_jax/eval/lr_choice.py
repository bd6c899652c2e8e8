"""Fine-tuning lr per (backbone, variant), chosen on dev episodes.

The protocol picks one lr per method and backbone from a grid, on dev tasks
of a *validation* split (mini-ImageNet val by default), from the weights the
variant actually starts from, never on a test target. Ties go to the
smaller lr. When the best lr lies on an edge of the grid and beats its
neighbour, the grid grows one step past that edge (by the edge's own ratio),
up to `extend` times, so a choice is not an artefact of where the grid
stops. The new lr continues the grid's pattern (3e-4, 1e-3, 3e-3, 1e-2
grows to 1e-4, 3e-5 below and 3e-2, 1e-1 above). An lr whose loss turns
non-finite scores -inf and is never extended past. Choices are kept in `<workdir>/lr_choice.json` so a rerun does not
repeat them, and are recorded with the results.
"""
import dataclasses
import json
import math
import pathlib
from typing import Dict, List, Sequence

import numpy as np

from tinytrain_jax import data
from tinytrain_jax import devices
from tinytrain_jax.train import methods as methods_lib

# Dev tasks use their own seed stream, apart from the test tasks'.
DEV_SEED = 777


def dev_episodes(source_name: str, resolution: int, n: int,
                 sampler: data.SamplerConfig) -> List[data.Episode]:
  """`n` dev tasks of the source's valid split (the evaluation passes its
  N-way K-shot sampler)."""
  src = data.get_source(source_name, 'valid')
  return [
      data.make_episode(src, s, resolution, buckets=None, way_buckets=None)
      for s in data.sample_episodes(src, sampler, DEV_SEED, n)
  ]


def _step_past(lrs: Sequence[float]) -> float:
  """The next lr below sorted `lrs`, continuing their pattern: with three or
  more, the ratio two steps in (1e-3, 3e-3, 1e-2 -> 3e-4, then 1e-4), else
  the edge's own ratio."""
  if len(lrs) >= 3:
    return lrs[0] * lrs[1] / lrs[2]
  return lrs[0] * lrs[0] / lrs[1]


def choose_lr(method: str, spec, params, head, episodes: Sequence, ft_cfg,
              budgets, grid: Sequence[float], mesh=None,
              extend: int = 0) -> Dict:
  """{'lr': best, 'dev_accuracy': {lr: mean % or None if it diverged}} of
  `method` on `episodes`.

  The dev tasks run in chunks of one task per device of `mesh` (default:
  all local devices), as the evaluation's tasks do. `extend`: how many
  times the grid may grow past the edge the best lr sits on (module
  docstring); a diverged lr has accuracy -inf.
  """
  mesh = mesh or devices.make_mesh(local=True)
  accs = {}

  def score(lr):
    cfg = dataclasses.replace(ft_cfg, lr=float(lr))
    got = []
    try:
      for c0 in range(0, len(episodes), mesh.size):
        chunk = list(episodes[c0:c0 + mesh.size])
        got += [
            100.0 * r['accuracy'] for r in methods_lib.run_methods(
                method, spec, params, head, chunk, cfg, budgets,
                tasks=list(range(c0, c0 + len(chunk))), mesh=mesh)
        ]
    except RuntimeError:  # non-finite loss: this lr diverges
      return -math.inf
    return float(np.mean(got))

  for lr in grid:
    accs[float(lr)] = score(lr)
  for _ in range(extend if len(accs) > 1 else 0):
    lrs = sorted(accs)
    best = max(lrs, key=lambda lr: accs[lr])  # first max: smaller lr
    # Only an edge strictly better than its neighbour is extended: on a
    # plateau the grid already brackets the choice.
    if best == lrs[0] and accs[lrs[0]] > accs[lrs[1]]:
      new = _step_past(lrs)
    elif best == lrs[-1] and accs[best] > max(accs[lrs[-2]], -math.inf):
      new = 1.0 / _step_past([1.0 / lr for lr in reversed(lrs)])
    else:
      break
    new = float(f'{new:.6g}')  # 1e-4, not 9.999999999999999e-05
    accs[new] = score(new)
  best = max(sorted(accs), key=lambda lr: accs[lr])
  # JSON has no -inf: a diverged lr is recorded as None.
  return {
      'lr': best,
      'dev_accuracy': {
          f'{k:g}': (v if v > -math.inf else None)
          for k, v in sorted(accs.items())
      }
  }


class LrChoices:
  """lr_choice.json of a workdir: {'<backbone>/<label>': choice}."""

  def __init__(self, workdir):
    self.path = pathlib.Path(workdir) / 'lr_choice.json'
    self.table = (
        json.loads(self.path.read_text()) if self.path.exists() else {})

  def get(self, backbone: str, label: str):
    return self.table.get(f'{backbone}/{label}')

  def put(self, backbone: str, label: str, choice: Dict) -> None:
    self.table[f'{backbone}/{label}'] = choice
    tmp = self.path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(self.table, indent=1, sort_keys=True))
    tmp.replace(self.path)
