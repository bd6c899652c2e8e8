"""Meta-training config (fields of train.MetaTrainConfig).

  python -m experiments.meta_train --config=tinytrain_jax/configs/meta_train.py \
      --workdir=runs/meta --config.model=mbv2-w0.35 --config.feature_mix=True

Meta-trains on mini-ImageNet's train classes (`--config.source=
mini-imagenet:PATH` for a full copy, `dir:PATH` for a folder of class
folders) and keeps the step with the best None accuracy on the valid splits
of mini-ImageNet and Omniglot (`val_sources`). lr 1e-4: at 1e-3 the
pretrained features degrade on every domain (docs/results/meta_training.md).

`episodes_per_step` (E, default 1) episodes make one step: the step's loss is
their mean, and they are split over the devices (docs/devices.md; the launcher
uses all visible devices, `--devices=N` the first N). `steps` counts steps,
so a run sees steps * E episodes; raise E with the device count and keep
steps * E, or lower steps. E=1 gives exactly the runs made before E existed
(and their cache keys).
"""
import ml_collections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  if arg not in ('', 'quick'):
    raise ValueError(f'unknown config argument {arg!r}; use meta_train.py or '
                     'meta_train.py:quick')
  quick = arg == 'quick'
  c = ml_collections.ConfigDict()
  c.model = 'mcunet-5fps'
  c.resolution = 32 if quick else 64
  c.feature_mix = False
  c.init = 'pretrained'
  c.source = 'mini-imagenet'
  c.split = 'train'
  c.ways = 5
  c.shots = 1 if quick else 5
  c.queries = 2 if quick else 10
  c.steps = 4 if quick else 400
  c.lr = 1e-4
  c.momentum = 0.9
  c.weight_decay = 0.0
  c.warmup_steps = 1 if quick else 30
  c.augment = True
  c.seed = 0
  c.checkpoint_every = 2 if quick else 100
  c.keep = 3
  c.log_every = 1 if quick else 25
  c.val_sources = 'mini-imagenet,omniglot'
  c.val_every = 2 if quick else 100
  c.val_episodes = 2 if quick else 40
  c.episodes_per_step = 1  # episodes per step, split over the devices
  c.train_from_block = 0  # the stem and blocks below it stay frozen
  c.head_scale = 30.0  # the cosine head's start scale (val grid: 30 for all)
  return c
