"""Ablation sweep: TinyTrain budget x channel ranking (dynamic Fisher vs static
L2 vs static random), each at the same memory and compute budgets and from
the same (meta-trained) start weights.

  python -m experiments.sweep --config=tinytrain_jax/configs/sweep.py[:quick] \
      --workdir=runs/sweep
Every point shares one cached meta-training (same meta_train config). Add
`h.sweep('starts.tinytrain', ['', 'pretrained'])` (with the same for the
other two) for with/without meta-training.
"""
from tinytrain_jax.configs import default


def get_config(arg: str = ''):
  c = default.get_config(arg)
  c.methods = 'tinytrain'
  c.domains = 'omniglot,cifar10_subset'
  c.ablation = False
  c.extra_backbones.backbones = ''
  c.variable.domains = ''
  return c


def get_sweep(h, arg: str = ''):
  scales = [0.5, 1.0] if arg == 'quick' else [0.25, 0.5, 1.0, 2.0]
  return h.product([
      h.sweep('selection.budget_scale', scales),
      h.sweep('methods', ['tinytrain', 'tinytrain_l2', 'tinytrain_random']),
  ])
