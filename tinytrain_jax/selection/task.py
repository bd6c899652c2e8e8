"""Selection on one sampled test task, and its report (for experiments/select).

Example:
  spec, params, sel = select_for_task('mcunet-5fps', 'omniglot', seed=0)
  print(format_selection(sel))
"""
import dataclasses
from typing import Any, Dict, Optional, Tuple

from tinytrain_jax import data
from tinytrain_jax.models import pretrained
from tinytrain_jax.models.registry import canonical_name
from tinytrain_jax.selection import budget as budget_lib
from tinytrain_jax.selection import criterion


def task_episode(source_name: str, seed: int, resolution: int = 128,
                 ways: int = 5, shots: int = 5, queries: int = 5,
                 variable: bool = False) -> data.Episode:
  """Test-split episode 0 of stream `seed` (fixed N-way K-shot by default).

  Args:
    source_name: a `data.get_source` name, e.g. 'omniglot'.
    seed: stream seed (>= 0).
    resolution: image side in pixels.
    ways, shots, queries: the fixed-mode task shape (ignored if variable).
    variable: Meta-Dataset variable-way variable-shot sampling instead.
  """
  src = data.get_source(source_name, 'test')
  cfg = (
      data.SamplerConfig(mode='variable') if variable else data.SamplerConfig(
          mode='fixed', ways=ways, shots=shots, queries=queries))
  spec = data.sample_episode(src, cfg, seed, 0)
  return data.make_episode(src, spec, resolution=resolution)


def select_for_task(model: str, source_name: str = 'omniglot', seed: int = 0,
                    budget_bytes: Optional[float] = None,
                    budget_macs: Optional[float] = None, resolution: int = 128,
                    ways: int = 5, shots: int = 5, variable: bool = False,
                    **config_kwargs) -> Tuple[Any, Any, criterion.Selection]:
  """Loads pretrained weights, samples a test task, runs `select`.

  Args:
    model: backbone name; mbv2/proxyless get TinyTrain's feature-mix conv.
    source_name: test-task source.
    seed: task stream seed (also SelectionConfig.seed).
    budget_bytes, budget_macs: None = `default_budgets(model)`.
    resolution, ways, shots, variable: the task (see `task_episode`).
    **config_kwargs: other SelectionConfig fields.

  Returns:
    (spec, params, Selection).
  """
  name = canonical_name(model)
  default_bytes, default_macs = budget_lib.default_budgets(name)
  config = criterion.SelectionConfig(
      default_bytes if budget_bytes is None else budget_bytes,
      default_macs if budget_macs is None else budget_macs, seed=seed,
      **config_kwargs)
  spec, params = pretrained.load_pretrained(name, resolution, feature_mix=name
                                            != 'mcunet-5fps')
  episode = task_episode(source_name, seed, resolution, ways, shots,
                         variable=variable)
  return spec, params, criterion.select(spec, params, episode, config)


def selection_report(sel: criterion.Selection) -> Dict[str, Any]:
  """JSON-able summary: layers, costs, budgets, the config."""
  num = lambda v: v if v != float('inf') else None  # JSON has no inf
  return {
      'layers': [{
          k: l[k] for k in ('index', 'name', 'kind', 'channels_selected',
                           'channels_total', 'score', 'fisher', 'channels')
      } for l in sel.layers],
      'bwd_bytes': sel.bwd_bytes,
      'bwd_macs': sel.bwd_macs,
      'tt_kb': sel.tt_kb,
      'budget_bytes': num(sel.budget_bytes),
      'budget_macs': num(sel.budget_macs),
      'fisher_loss': sel.fisher.loss,
      'n_support': sel.fisher.n_support,
      'config': {
          k: (list(v) if isinstance(v, tuple) else num(v))
          for k, v in dataclasses.asdict(sel.config).items()
      },
  }


def format_selection(sel: criterion.Selection) -> str:
  """Human-readable table of the chosen layers and the mask's costs."""
  rows = [
      f'{"idx":>4} {"name":<24} {"kind":<5} {"channels":>10} '
      f'{"P_i":>10} {"s_i":>10}'
  ]
  for l in sel.layers:
    ch = f'{l["channels_selected"]}/{l["channels_total"]}'
    rows.append(f'{l["index"]:>4} {l["name"]:<24} {l["kind"]:<5} {ch:>10} '
                f'{l["fisher"]:>10.3g} {l["score"]:>10.3g}')
  rows.append(f'backward memory {sel.bwd_bytes:,} B (budget '
              f'{sel.budget_bytes:,} B); backward compute {sel.bwd_macs:,} '
              f'MACs/sample (budget {sel.budget_macs:,}); tiny-training '
              f'model {sel.tt_kb:.1f} kB')
  return '\n'.join(rows)
