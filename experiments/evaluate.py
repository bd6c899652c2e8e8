"""Evaluates methods x backbones x domains on few-shot test tasks.

  python -m experiments.evaluate --config=tinytrain_jax/configs/default.py \
      --workdir=runs/main [--config.domains=omniglot,dir:/data/signs]

Writes results.json, results.md and pareto.png into --workdir (rerunning
resumes from workdir/episodes.jsonl).
"""
import pathlib

from absl import flags
from ml_collections import config_flags

from tinytrain_jax.configs import cli
from tinytrain_jax.configs import eval_config
from tinytrain_jax.eval import protocol

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/main', 'output directory')
_PROGRESS = flags.DEFINE_bool('progress', True, 'progress bar / log lines')
cli.define_device_flags()


def main(argv):
  del argv
  cli.require_config(_CONFIG.value, 'tinytrain_jax/configs/default.py')
  try:
    cli.initialize_devices()
    cfg = eval_config.from_config_dict(_CONFIG.value)  # validates
    rows = protocol.run_evaluation(cfg, _WORKDIR.value, _PROGRESS.value)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    cli.error_exit(str(e))
  del rows  # results.md holds the same tables, with Avg. over the targets
  print((pathlib.Path(_WORKDIR.value) / 'results.md').read_text())
  print(f'wrote {_WORKDIR.value}/results.json, results.md, pareto.png')


if __name__ == '__main__':
  cli.run(main)
