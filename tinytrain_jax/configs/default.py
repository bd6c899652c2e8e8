"""Default evaluation config: the main job, TinyTrain's protocol at CPU scale.

  python -m experiments.evaluate --config=tinytrain_jax/configs/default.py
  python -m experiments.evaluate --config=tinytrain_jax/configs/default.py:quick

Meta-train each backbone on mini-ImageNet's train classes (checkpoint chosen
on mini-ImageNet val + Omniglot valid), then test on domains the
meta-training never saw: Omniglot's evaluation alphabets and the CIFAR-10
subset's test classes, with mini-ImageNet's test classes as the in-domain
reference (left out of Avg.). Table-1 starts (baselines from the pretrained
weights, TinyTrain from the meta-trained ones) plus the ablation with every
start swapped; mbv2-w0.35 and proxyless-w0.3 on one target; Meta-Dataset's
variable-way variable-shot sampler on one target. The lr of each (backbone,
variant) is chosen on dev tasks of mini-ImageNet val.

CPU scale (2 cores): 64 px instead of the paper's 128, 20 tasks per target
instead of 200, 40 fine-tuning steps as in the paper. `quick` shrinks
everything further (minutes), as big_vision's runlocal.

Every key is a flag (`--config.finetune.weight_decay=1e-4`). Lists are comma
strings, as flags spell them; `configs/eval_config.from_config_dict` turns
this into a validated `eval.config.EvalConfig` (tuples, (method, lr) pairs),
which is all the library reads.
"""
import math

import ml_collections

from tinytrain_jax.train import methods as methods_lib


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  if arg not in ('', 'quick'):
    raise ValueError(f'unknown config argument {arg!r}; use default.py or '
                     'default.py:quick')
  quick = arg == 'quick'
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.backbones = 'mcunet-5fps'  # comma list
  c.domains = 'omniglot,cifar10_subset,mini-imagenet'  # comma list: omniglot,
  # cifar10_subset, mini-imagenet[:PATH],
  # tfds:<name>, dir:<path>
  c.in_domain = 'mini-imagenet'  # reference rows, left out of Avg.
  c.methods = 'none,lastlayer,tinytl,sparseupdate,tinytrain,fulltrain'
  # Start weights per method: '' = the paper's Table 1 (baselines from the
  # pretrained weights, TinyTrain from the meta-trained ones), or
  # 'pretrained' / 'metatrained'.
  c.starts = ml_collections.ConfigDict({m: '' for m in methods_lib.METHODS})
  c.ablation = True  # also every method from the other start
  c.resolution = 32 if quick else 64
  c.episodes = 2 if quick else 20  # the paper: 200 per target
  c.split = 'test'

  c.sampler = ml_collections.ConfigDict()
  c.sampler.mode = 'fixed'  # 'variable' = Meta-Dataset sampler
  c.sampler.ways = 5
  c.sampler.shots = 5
  c.sampler.queries = 5 if quick else 10
  # Meta-Dataset's sampler (mode 'variable'); bilevel None = by source.
  c.sampler.bilevel = ml_collections.FieldReference(None, field_type=bool)
  c.sampler.min_ways = 5
  c.sampler.max_ways_upper_bound = 50
  c.sampler.max_num_query = 10
  c.sampler.max_support_set_size = 500
  c.sampler.max_support_size_contrib_per_class = 100
  c.sampler.min_log_weight = math.log(0.5)
  c.sampler.max_log_weight = math.log(2.0)

  # Other backbones, on a subset of the targets, without the ablation.
  c.extra_backbones = ml_collections.ConfigDict()
  c.extra_backbones.backbones = '' if quick else 'mbv2-w0.35,proxyless-w0.3'
  c.extra_backbones.domains = 'cifar10_subset'
  c.extra_backbones.episodes = 0  # 0 = c.episodes

  # Meta-Dataset's variable-way variable-shot tasks on some targets (first
  # backbone), rows labelled '<domain> (MD)'.
  c.variable = ml_collections.ConfigDict()
  c.variable.domains = '' if quick else 'omniglot'
  c.variable.methods = 'none,lastlayer,sparseupdate,tinytrain'
  c.variable.episodes = 0 if quick else 15

  c.meta_train = ml_collections.ConfigDict()
  c.meta_train.source = 'mini-imagenet'
  c.meta_train.split = 'train'
  c.meta_train.init = 'pretrained'  # or 'random'
  c.meta_train.resolution = 0  # 0 = c.resolution
  c.meta_train.steps = 4 if quick else 400  # 0 = no meta-training
  # (model, feature_mix and seed: each backbone's, and c.seed)
  c.meta_train.ways = 3 if quick else 5
  c.meta_train.shots = 1 if quick else 5
  c.meta_train.queries = 2 if quick else 10
  c.meta_train.lr = 1e-4
  # A backbone's own lr ('backbone=lr,...'). Empty: at head scale 30 all three
  # backbones do best at 1e-4 on the validation grid (mini-ImageNet val +
  # Omniglot valid; docs/results/meta_training.md).
  c.meta_train.lr_per_backbone = ''
  c.meta_train.momentum = 0.9
  c.meta_train.weight_decay = 0.0
  c.meta_train.warmup_steps = 1 if quick else 30
  c.meta_train.augment = True
  c.meta_train.checkpoint_every = 2 if quick else 100
  c.meta_train.keep = 3
  c.meta_train.log_every = 50
  c.meta_train.val_every = 2 if quick else 100
  c.meta_train.val_episodes = 2 if quick else 40
  c.meta_train.val_sources = 'mini-imagenet,omniglot'
  c.meta_train.episodes_per_step = 1  # per step, over the devices
  c.meta_train.train_from_block = 0  # the stem and blocks below stay frozen
  # The cosine head's start scale. At 10 the softmax is too soft for these
  # backbones; 30 won the validation grid for all three (meta_training.md).
  c.meta_train.head_scale = 30.0
  c.meta_train.checkpoint = ''  # meta-train workdirs to reuse, one per
  # backbone (comma list)

  c.finetune = ml_collections.ConfigDict()
  c.finetune.steps = 3 if quick else 40
  c.finetune.lr = 1e-3  # used when lr_grid is empty
  c.finetune.lr_grid = '1e-3,1e-2' if quick else '3e-4,1e-3,3e-3,1e-2'
  c.finetune.dev_source = 'mini-imagenet'  # its valid split, never a target
  c.finetune.dev_episodes = 1 if quick else 4
  # A best lr on the grid's edge: try up to 2 more lrs past that edge.
  c.finetune.lr_grid_extend = 0 if quick else 2
  c.finetune.lr_per_method = ''  # 'method=lr,...' fixes an lr (no search)
  c.finetune.momentum = 0.9
  c.finetune.augment = False
  c.finetune.weight_decay = 0.0
  c.finetune.impl = 'sparse'  # or 'dense' (the masked reference)
  c.finetune.train_head = False  # also train the cosine head
  c.finetune.cache_prefix = True  # frozen blocks once per task

  c.selection = ml_collections.ConfigDict()
  c.selection.budget_scale = 1.0  # x per-backbone default_budgets()
  c.selection.budget_bytes = 0  # > 0 overrides (bytes, fp32 batch 1)
  c.selection.budget_macs = 0  # > 0 overrides (MACs per sample)
  return c
