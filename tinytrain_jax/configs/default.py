"""Default evaluation config: the README's main job on Omniglot.

  python -m experiments.evaluate --config=tinytrain_jax/configs/default.py
  python -m experiments.evaluate --config=tinytrain_jax/configs/default.py:quick
  ... --config.domains=omniglot,cifar10_subset --config.episodes=600

`quick` shrinks everything (minutes on a 2-core CPU), as big_vision's runlocal.
Reconstructed hyper-parameters (protocol.md): 5-way 5-shot tasks, 40 full-batch
momentum-SGD fine-tuning steps, ProtoNet cosine head; the Table-1 baselines
start from the pretrained weights, TinyTrain from the meta-trained ones.
"""
import ml_collections

LR_PER_METHOD = ('lastlayer=1e-2,biasonly=1e-2,sparseupdate=1e-2,tinytrain=1e-2,'
                 'tinytrain_l2=1e-2,tinytrain_random=1e-2,fulltrain=1e-3')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  quick = arg == 'quick'
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.backbones = 'mcunet-5fps'          # comma list
  c.domains = 'omniglot'               # comma list: omniglot, cifar10_subset,
                                       # tfds:<name>, dir:<path>
  c.methods = 'none,lastlayer,sparseupdate,tinytrain,fulltrain'
  c.meta_methods = 'tinytrain'         # methods that start from meta-trained
                                       # weights ('all' for the ablation)
  c.resolution = 64 if quick else 128
  c.episodes = 3 if quick else 40      # Meta-Dataset prescribes 600
  c.split = 'test'

  c.sampler = ml_collections.ConfigDict()
  c.sampler.mode = 'fixed'             # 'variable' = Meta-Dataset sampler
  c.sampler.ways = 5
  c.sampler.shots = 5
  c.sampler.queries = 5 if quick else 10

  c.meta_train = ml_collections.ConfigDict()
  c.meta_train.steps = 8 if quick else 300  # 0 skips meta-training
  c.meta_train.source = 'omniglot'
  c.meta_train.ways = 5
  c.meta_train.shots = 5
  c.meta_train.queries = 5 if quick else 10
  c.meta_train.lr = 1e-3               # 80 steps @128: val loss 0.91 -> 0.24
  c.meta_train.warmup_steps = 2 if quick else 30
  c.meta_train.augment = True
  c.meta_train.checkpoint_every = 100
  c.meta_train.checkpoint = ''         # a meta-train workdir to reuse

  c.finetune = ml_collections.ConfigDict()
  c.finetune.steps = 5 if quick else 40
  c.finetune.lr = 1e-3
  # Per-method lr overrides 'method=lr,...' (protocol.md: one lr per method
  # and backbone, chosen on dev episodes of the valid split; see
  # benchmarks/lr_selection.py for how these were picked).
  c.finetune.lr_per_method = LR_PER_METHOD
  c.finetune.momentum = 0.9
  c.finetune.augment = False

  c.selection = ml_collections.ConfigDict()
  c.selection.budget_scale = 1.0       # x per-backbone default_budgets()
  c.selection.budget_bytes = 0         # > 0 overrides (bytes, fp32 batch 1)
  c.selection.budget_macs = 0          # > 0 overrides (MACs per sample)
  return c
