"""Evaluates methods x backbones x domains on few-shot test tasks.

  python -m experiments.evaluate --config=tinytrain_jax/configs/default.py \
      --workdir=runs/main [--config.domains=omniglot,dir:/data/signs]

Writes results.json, results.md and pareto.png into --workdir (rerunning
resumes from workdir/episodes.jsonl).
"""
import pathlib

from absl import flags
import jax
from ml_collections import config_flags

from tinytrain_jax import devices
from tinytrain_jax.configs import cli
from tinytrain_jax.configs import eval_config
from tinytrain_jax.eval import protocol

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/main', 'output directory')
_PROGRESS = flags.DEFINE_bool('progress', True, 'progress bar / log lines')
_TASKS_PER_DEVICE = flags.DEFINE_integer(
    'tasks_per_device', 1, 'tasks per device in one chunk; the tasks of a '
    'chunk whose plans agree run vmapped in one program')
cli.define_device_flags()


def main(argv):
  del argv
  cli.require_config(_CONFIG.value, 'tinytrain_jax/configs/default.py')
  try:
    cli.initialize_devices()
    cfg = eval_config.from_config_dict(_CONFIG.value)  # validates
    if _TASKS_PER_DEVICE.value < 1:
      raise ValueError(f'--tasks_per_device must be >= 1, got '
                       f'{_TASKS_PER_DEVICE.value}')
    mesh = devices.make_mesh(cli.num_devices(), local=True)
    rows = protocol.run_evaluation(cfg, _WORKDIR.value, _PROGRESS.value, mesh,
                                   _TASKS_PER_DEVICE.value)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    cli.error_exit(str(e))
  if jax.process_index() != 0:  # process 0 merges every share and reports
    print(f'process {jax.process_index()}: its tasks are in {_WORKDIR.value}')
    return
  del rows  # results.md holds the same tables, with Avg. over the targets
  print((pathlib.Path(_WORKDIR.value) / 'results.md').read_text())
  print(f'wrote {_WORKDIR.value}/results.json, results.md, pareto.png')


if __name__ == '__main__':
  cli.run(main)
