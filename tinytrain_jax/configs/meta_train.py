"""Meta-training config (fields of train.MetaTrainConfig).

  python -m experiments.meta_train --config=tinytrain_jax/configs/meta_train.py \
      --workdir=runs/meta --config.model=mbv2-w0.35 --config.feature_mix=True
"""
import ml_collections


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  quick = arg == 'quick'
  c = ml_collections.ConfigDict()
  c.model = 'mcunet-5fps'
  c.resolution = 64 if quick else 128
  c.feature_mix = False
  c.init = 'pretrained'
  c.source = 'omniglot'        # MiniImageNet in the paper: tfds/dir source
  c.split = 'train'
  c.ways = 5
  c.shots = 5
  c.queries = 5 if quick else 15
  c.steps = 10 if quick else 2000
  c.lr = 3e-3
  c.momentum = 0.9
  c.weight_decay = 0.0
  c.warmup_steps = 2 if quick else 100
  c.augment = True
  c.seed = 0
  c.checkpoint_every = 5 if quick else 500
  c.keep = 3
  c.log_every = 5 if quick else 50
  return c
