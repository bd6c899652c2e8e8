"""Fine-tuning lr per method, chosen on dev episodes of the *valid* split.

  python -m benchmarks.lr_selection --model=mcunet-5fps --episodes=8

docs/reference/protocol.md §5: one lr per (method, backbone) from a grid, picked on dev
episodes disjoint from the test tasks (Omniglot valid alphabets, seed 12345).
Starts from the pretrained weights. Prints mean accuracy per (method, lr),
the best lr per method as a `--config.finetune.lr_per_method` string, and
writes benchmarks/results/lr_selection_<model>.json.
"""
from absl import app, flags
import numpy as np

from benchmarks import common
from tinytrain_jax import data
from tinytrain_jax.models import load_pretrained, protonet
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import methods as methods_lib

_MODEL = flags.DEFINE_string('model', 'mcunet-5fps', 'backbone')
_METHODS = flags.DEFINE_list(
    'methods', ['lastlayer', 'sparseupdate', 'tinytrain', 'fulltrain'],
    'methods')
_LRS = flags.DEFINE_list('lrs', ['1e-3', '3e-3', '1e-2'], 'lr grid')
_EPISODES = flags.DEFINE_integer('episodes', 8, 'dev episodes')
_RES = flags.DEFINE_integer('resolution', 128, 'input size')
_STEPS = flags.DEFINE_integer('steps', 40, 'fine-tune steps')


def main(argv):
  del argv
  spec, params = load_pretrained(_MODEL.value, _RES.value, _MODEL.value
                                 != 'mcunet-5fps')
  head = protonet.init_head()
  src = data.get_source('omniglot', 'valid')
  cfg = data.SamplerConfig(mode='fixed', ways=5, shots=5, queries=10)
  eps = [
      data.make_episode(src, s, _RES.value, buckets=None, way_buckets=None)
      for s in data.sample_episodes(src, cfg, 12345, _EPISODES.value)
  ]
  rows, best = [], {}
  for m in _METHODS.value:
    for lr in map(float, _LRS.value):
      fcfg = ft.FinetuneConfig(steps=_STEPS.value, lr=lr)
      accs = [
          100 *
          methods_lib.run_method(m, spec, params, head, e, fcfg)['accuracy']
          for e in eps
      ]
      mean, ci = float(np.mean(accs)), float(1.96 * np.std(accs) /
                                             np.sqrt(len(accs)))
      rows.append(dict(method=m, lr=lr, accuracy_mean=mean, accuracy_ci95=ci))
      print(f'{m:<14} lr {lr:<7g} {mean:5.1f} ± {ci:.1f}', flush=True)
      if m not in best or mean > best[m][1]:
        best[m] = (lr, mean)
  pick = ','.join(f'{m}={lr:g}' for m, (lr, _) in best.items())
  print('--config.finetune.lr_per_method=' + pick)
  common.write_results(
      f'lr_selection_{_MODEL.value}',
      dict(device=common.device_info(), model=_MODEL.value,
           episodes=_EPISODES.value, steps=_STEPS.value, rows=rows, best=pick))


if __name__ == '__main__':
  app.run(main)
