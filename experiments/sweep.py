"""Runs an ablation sweep: one evaluation per sweep point, then sweep curves.

  python -m experiments.sweep --config=tinytrain_jax/configs/sweep.py \
      --workdir=runs/sweep
Each point gets workdir/<overrides> with its own results.json; points whose
results exist are skipped. Writes workdir/sweep.json and sweep.png.
"""
import importlib.util
import json
import pathlib
from absl import flags
from ml_collections import config_flags

from tinytrain_jax.configs import cli
from tinytrain_jax.configs import eval_config
from tinytrain_jax.configs import sweep_helpers
from tinytrain_jax.eval import protocol, report

_CONFIG = config_flags.DEFINE_config_file('config', None, 'sweep config file')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/sweep', 'output directory')


def _get_sweep(config_path):
  path = config_path.split(':')[0]
  spec = importlib.util.spec_from_file_location('sweep_cfg', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  if not hasattr(mod, 'get_sweep'):
    raise ValueError(f'{path} has no get_sweep(h); see configs/sweep.py')
  arg = config_path.partition(':')[2]
  try:  # a get_sweep(h, arg) shrinks its grid for ':quick' as the config does
    return mod.get_sweep(sweep_helpers, arg)
  except TypeError:
    return mod.get_sweep(sweep_helpers)


def main(argv):
  del argv
  cli.require_config(_CONFIG.value, 'tinytrain_jax/configs/sweep.py')
  root = pathlib.Path(_WORKDIR.value)
  points = []
  try:
    # Every point is built (and so validated) before the first one runs.
    todo = [(point,
             eval_config.from_config_dict(
                 sweep_helpers.apply_overrides(_CONFIG.value, point)))
            for point in _get_sweep(flags.FLAGS['config'].config_filename)]
    for point, cfg in todo:
      wd = root / sweep_helpers.point_name(point)
      if (wd / 'results.json').exists():
        rows = json.loads((wd / 'results.json').read_text())['results']
      else:
        rows = protocol.run_evaluation(cfg, wd)
      for r in rows:
        points.append(
            dict(r, variant=r['method'],
                 budget_scale=cfg.selection.budget_scale,
                 point=sweep_helpers.point_name(point)))
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    cli.error_exit(str(e))
  (root / 'sweep.json').write_text(json.dumps(points, indent=1))
  report.plot_sweep(points, root / 'sweep.png', x_key='bwd_bytes')
  for p in points:
    print(f"{p['point']:<45} {p['accuracy_mean']:6.1f} ± "
          f"{p['accuracy_ci95']:.1f}  {p['bwd_bytes'] / 1024:8.1f} KiB  "
          f"{p['bwd_macs'] / 1e6:6.2f} M MACs")
  print(f'wrote {root}/sweep.json, sweep.png')


if __name__ == '__main__':
  cli.run(main)
