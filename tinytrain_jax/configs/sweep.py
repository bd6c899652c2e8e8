"""Ablation sweep: TinyTrain budget x channel ranking (dynamic Fisher vs static
L2 vs static random), each at the same memory and compute budgets.

  python -m experiments.sweep --config=tinytrain_jax/configs/sweep.py[:quick] \
      --workdir=runs/sweep
Add `h.sweep('meta_methods', ['', 'none'])` for with/without meta-training.
"""
from tinytrain_jax.configs import default


def get_config(arg: str = ''):
  c = default.get_config(arg)
  c.methods = 'tinytrain'
  return c


def get_sweep(h):
  return h.product([
      h.sweep('selection.budget_scale', [0.25, 0.5, 1.0, 2.0]),
      h.sweep('methods', ['tinytrain', 'tinytrain_l2', 'tinytrain_random']),
  ])
