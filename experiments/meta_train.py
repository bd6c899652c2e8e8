"""Episodic meta-training of a pretrained backbone (resumable).

  python -m experiments.meta_train --config=tinytrain_jax/configs/meta_train.py \
      --workdir=runs/meta
Rerunning with the same workdir resumes from the last checkpoint; the result
is loadable by path: `train.meta_train.load_backbone('runs/meta')`. Each
step's `episodes_per_step` episodes are split over all visible devices
(`--devices=N`: the first N); multi-process: `--coordinator_address
--num_processes --process_id` (docs/devices.md).
"""
from absl import flags
from ml_collections import config_flags

from tinytrain_jax.configs import cli
from tinytrain_jax.configs import dataclass_config
from tinytrain_jax.train import meta_train as meta_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'config file',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/meta', 'checkpoint directory')
cli.define_device_flags()


def main(argv):
  del argv
  cli.require_config(_CONFIG.value, 'tinytrain_jax/configs/meta_train.py')
  try:
    cli.initialize_devices()
    cfg = dataclass_config.meta_train_config(_CONFIG.value)  # validates
    state = meta_lib.run_meta_training(cfg, _WORKDIR.value,
                                       num_devices=cli.num_devices())
  except (ValueError, RuntimeError, FileNotFoundError) as e:
    cli.error_exit(str(e))
  print(f'meta-trained {cfg.model} for {int(state.step)} steps; checkpoints '
        f'in {_WORKDIR.value}/checkpoints')


if __name__ == '__main__':
  cli.run(main)
