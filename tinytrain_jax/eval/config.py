"""What an evaluation runs: `EvalConfig`, frozen and validated.

Launchers build it from a config file and its flags
(`tinytrain_jax.configs.eval_config.from_config_dict`); the library reads
only this, never the config file itself.

  cfg = EvalConfig(domains=('omniglot',), methods=('none', 'tinytrain'),
                   episodes=2, meta_train=None)
  rows = protocol.run_evaluation(cfg, '/tmp/eval')

Field names follow the `--config.<field>` flags of configs/default.py, so a
validation error names the flag to fix; `to_json_dict` writes the config in
that flag layout (lists for comma lists), for run_config.json and
results.json. Three blocks differ from their flags: `lr_choice` holds
`--config.finetune.{lr_grid,lr_per_method,dev_source,dev_episodes}`,
`meta_train_checkpoints` is `--config.meta_train.checkpoint`, and
`meta_train=None` is `--config.meta_train.steps=0` (no meta-training).
"""
import dataclasses
import json
import math
from typing import Any, Dict, Optional, Tuple

from tinytrain_jax import data
from tinytrain_jax.eval import plan as plan_lib
from tinytrain_jax.models.registry import canonical_name
from tinytrain_jax.train import finetune as finetune_lib
from tinytrain_jax.train import meta_train as meta_lib
from tinytrain_jax.train import methods as methods_lib

# MetaTrainConfig fields the evaluation sets itself: the model and mix conv
# from each backbone, the seed from EvalConfig.seed.
META_TRAIN_DERIVED = ('model', 'feature_mix', 'seed')
# FinetuneConfig fields the evaluation sets itself (from EvalConfig.seed).
FINETUNE_DERIVED = ('seed',)


def _names(obj, field: str, flag: str, accepted=None,
           empty_ok: bool = False) -> Tuple[str, ...]:
  """obj.<field> as a tuple of names, checked; sets it on the frozen obj."""
  value = getattr(obj, field)
  if isinstance(value, str):  # tuple('ab') would be ('a', 'b')
    raise ValueError(f'--config.{flag} must be a tuple of names, got the '
                     f'string {value!r}')
  items = check_names(tuple(value), flag, accepted, empty_ok)
  object.__setattr__(obj, field, items)
  return items


def check_names(items: Tuple[str, ...], flag: str, accepted=None,
                empty_ok: bool = False) -> Tuple[str, ...]:
  """`items`, or a one-line ValueError naming `--config.<flag>` when it is
  empty (unless empty_ok) or holds a name not in `accepted`."""
  if not items and not empty_ok:
    raise ValueError(f'--config.{flag} is empty; give a comma list')
  if accepted is not None:
    bad = [v for v in items if v not in accepted]
    if bad:
      raise ValueError(f'--config.{flag}: unknown {bad}; accepted: '
                       f'{", ".join(accepted)}')
  return items


def _backbones(obj, field: str, flag: str, empty_ok: bool = False) -> None:
  """obj.<field> as canonical backbone names (aliases resolved)."""
  names = _names(obj, field, flag, empty_ok=empty_ok)
  try:
    object.__setattr__(obj, field, tuple(canonical_name(b) for b in names))
  except ValueError as e:
    raise ValueError(f'--config.{flag}: {e}') from None


def _count(value, flag: str, low: int) -> None:
  if not isinstance(value, int) or isinstance(value, bool):
    raise ValueError(f'--config.{flag} must be an int, got {value!r}')
  if value < low:
    raise ValueError(f'--config.{flag} must be >= {low}, got {value}')


@dataclasses.dataclass(frozen=True)
class ExtraBackbones:
  """More backbones on a subset of the domains: fixed tasks, no ablation.

  episodes: tasks per domain; 0 = EvalConfig.episodes.
  """
  backbones: Tuple[str, ...] = ()
  domains: Tuple[str, ...] = ()
  episodes: int = 0

  def __post_init__(self):
    _backbones(self, 'backbones', 'extra_backbones.backbones', empty_ok=True)
    _names(self, 'domains', 'extra_backbones.domains', empty_ok=True)
    _count(self.episodes, 'extra_backbones.episodes', 0)


@dataclasses.dataclass(frozen=True)
class VariableStudies:
  """Meta-Dataset's variable-way variable-shot tasks on some domains (first
  backbone; rows '<domain> (MD)').

  methods: () = EvalConfig.methods; episodes: 0 = EvalConfig.episodes.
  """
  domains: Tuple[str, ...] = ()
  methods: Tuple[str, ...] = ()
  episodes: int = 0

  def __post_init__(self):
    _names(self, 'domains', 'variable.domains', empty_ok=True)
    _names(self, 'methods', 'variable.methods', list(methods_lib.METHODS),
           empty_ok=True)
    _count(self.episodes, 'variable.episodes', 0)


@dataclasses.dataclass(frozen=True)
class LrChoiceConfig:
  """How each (backbone, variant) gets its fine-tuning lr (`lr_choice`).

  lr_grid: lrs tried on dev tasks; () = FinetuneConfig.lr, no search.
  lr_per_method: (method, lr) pairs fixed without a search.
  dev_source: the dev tasks come from its 'valid' split, never a target.
  dev_episodes: dev tasks per search.
  lr_grid_extend: times the grid may grow one step past the edge the best
    lr sits on (`lr_choice.choose_lr`); 0 = the grid as given.
  """
  lr_grid: Tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)
  lr_per_method: Tuple[Tuple[str, float], ...] = ()
  dev_source: str = 'mini-imagenet'
  dev_episodes: int = 4
  lr_grid_extend: int = 0

  def __post_init__(self):
    grid = tuple(float(x) for x in self.lr_grid)
    if not all(0 < x < math.inf for x in grid):
      raise ValueError(f'--config.finetune.lr_grid: every lr must be a '
                       f'finite number > 0, got {list(grid)}')
    object.__setattr__(self, 'lr_grid', grid)
    pairs = tuple(
        (str(m), float(lr)) for m, lr in dict(self.lr_per_method).items())
    unknown = sorted(m for m, _ in pairs if m not in methods_lib.METHODS)
    if unknown:
      raise ValueError(f'--config.finetune.lr_per_method: unknown methods '
                       f'{unknown}; accepted: {", ".join(methods_lib.METHODS)}')
    bad = [f'{m}={lr:g}' for m, lr in pairs if not 0 < lr < math.inf]
    if bad:
      raise ValueError(f'--config.finetune.lr_per_method: lrs must be finite '
                       f'numbers > 0, got {",".join(bad)}')
    object.__setattr__(self, 'lr_per_method', pairs)
    _count(self.dev_episodes, 'finetune.dev_episodes', 1)
    _count(self.lr_grid_extend, 'finetune.lr_grid_extend', 0)


@dataclasses.dataclass(frozen=True)
class BudgetConfig:
  """TinyTrain's budgets: `methods.tinytrain_budgets(spec, budget_scale,
  budget_bytes, budget_macs)` (bytes fp32 batch 1; MACs per sample; 0 = the
  backbone's default x budget_scale)."""
  budget_scale: float = 1.0
  budget_bytes: int = 0
  budget_macs: int = 0

  def __post_init__(self):
    if not (isinstance(self.budget_scale,
                       (int, float)) and 0 < self.budget_scale < math.inf):
      raise ValueError(f'--config.selection.budget_scale must be a finite '
                       f'number > 0, got {self.budget_scale}')
    _count(self.budget_bytes, 'selection.budget_bytes', 0)
    _count(self.budget_macs, 'selection.budget_macs', 0)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """An evaluation (configs/default.py describes the protocol).

  seed: test tasks (episode i = f(seed, i)), fine-tuning and meta-training.
  backbones, domains: the main studies (every backbone x domain).
  in_domain: domains left out of the Avg. column.
  methods: `methods.METHODS` names; starts: (method, 'pretrained' |
    'metatrained') pairs overriding Table 1's start weights.
  ablation: also run every method from the other start.
  sampler: `mode` is the main studies' sampler; ways, shots and queries fix
    every N-way K-shot task (main studies in mode 'fixed', extra backbones,
    dev tasks); mode 'variable' samples them (Meta-Dataset).
  meta_train: how the meta-trained starts are trained (model, feature_mix
    and seed are set per backbone); None = no meta-training, those variants
    start from the pretrained weights.
  meta_train_checkpoints: meta-train workdirs to load instead (one per
    backbone, matched by the model each stored).
  meta_train_lrs: (backbone, lr) pairs: a backbone's own meta-training lr
    (chosen on the multi-domain validation curve), else meta_train.lr.
  finetune: per-task fine-tuning (its seed is set to `seed`; its lr is the
    one `lr_choice` gives).
  """
  seed: int = 0
  backbones: Tuple[str, ...] = ('mcunet-5fps',)
  domains: Tuple[str, ...] = ('omniglot', 'cifar10_subset', 'mini-imagenet')
  in_domain: Tuple[str, ...] = ('mini-imagenet',)
  methods: Tuple[str, ...] = ('none', 'lastlayer', 'tinytl', 'sparseupdate',
                              'tinytrain', 'fulltrain')
  starts: Tuple[Tuple[str, str], ...] = ()
  ablation: bool = True
  resolution: int = 64
  episodes: int = 20
  split: str = 'test'
  sampler: data.SamplerConfig = data.SamplerConfig(mode='fixed', ways=5,
                                                   shots=5, queries=10)
  extra_backbones: ExtraBackbones = ExtraBackbones()
  variable: VariableStudies = VariableStudies()
  meta_train: Optional[meta_lib.MetaTrainConfig] = None
  meta_train_checkpoints: Tuple[str, ...] = ()
  meta_train_lrs: Tuple[Tuple[str, float], ...] = ()
  finetune: finetune_lib.FinetuneConfig = finetune_lib.FinetuneConfig()
  lr_choice: LrChoiceConfig = LrChoiceConfig()
  selection: BudgetConfig = BudgetConfig()

  def __post_init__(self):
    _count(self.seed, 'seed', 0)
    _backbones(self, 'backbones', 'backbones')
    _names(self, 'domains', 'domains')
    _names(self, 'in_domain', 'in_domain', empty_ok=True)
    _names(self, 'methods', 'methods', list(methods_lib.METHODS))
    plan_lib.start_map((), dict(self.starts))  # checks names and starts
    starts = tuple((str(m), str(s)) for m, s in dict(self.starts).items() if s)
    object.__setattr__(self, 'starts', starts)
    _count(self.episodes, 'episodes', 1)
    _count(self.resolution, 'resolution', 32)
    _names(self, 'meta_train_checkpoints', 'meta_train.checkpoint',
           empty_ok=True)
    # One seed drives everything, as in the config file.
    object.__setattr__(self, 'finetune',
                       dataclasses.replace(self.finetune, seed=self.seed))
    if self.meta_train is not None:
      object.__setattr__(self, 'meta_train',
                         dataclasses.replace(self.meta_train, seed=self.seed))
    try:
      lrs = tuple((canonical_name(b), float(lr))
                  for b, lr in dict(self.meta_train_lrs).items())
    except ValueError as e:
      raise ValueError(f'--config.meta_train.lr_per_backbone: {e}') from None
    bad = [f'{b}={lr:g}' for b, lr in lrs if not 0 < lr < math.inf]
    if bad:
      raise ValueError('--config.meta_train.lr_per_backbone: lrs must be '
                       f'finite numbers > 0, got {",".join(bad)}')
    object.__setattr__(self, 'meta_train_lrs', lrs)

  @property
  def fixed_sampler(self) -> data.SamplerConfig:
    """The N-way K-shot sampler (extra backbones, dev tasks)."""
    return dataclasses.replace(self.sampler, mode='fixed')

  @property
  def variable_sampler(self) -> data.SamplerConfig:
    """Meta-Dataset's sampler (ways, shots and queries sampled)."""
    return dataclasses.replace(self.sampler, mode='variable', ways=None,
                               shots=None, queries=None)

  def to_json_dict(self) -> Dict[str, Any]:
    """The config in the layout of its flags (lists for comma lists)."""
    finetune = {
        k: v
        for k, v in dataclasses.asdict(self.finetune).items()
        if k not in FINETUNE_DERIVED
    }
    finetune.update(
        dataclasses.asdict(self.lr_choice),
        lr_per_method=dict(self.lr_choice.lr_per_method))
    if self.meta_train is None:
      meta = {'steps': 0}
    else:
      meta = {
          k: v
          for k, v in dataclasses.asdict(self.meta_train).items()
          if k not in META_TRAIN_DERIVED
      }
    meta['checkpoint'] = self.meta_train_checkpoints
    meta['lr_per_backbone'] = dict(self.meta_train_lrs)
    out = dict(
        seed=self.seed, backbones=self.backbones, domains=self.domains,
        in_domain=self.in_domain, methods=self.methods,
        starts={m: dict(self.starts).get(m, '') for m in methods_lib.METHODS
               }, ablation=self.ablation, resolution=self.resolution,
        episodes=self.episodes, split=self.split,
        sampler=dataclasses.asdict(self.sampler),
        extra_backbones=dataclasses.asdict(self.extra_backbones),
        variable=dataclasses.asdict(self.variable), meta_train=meta,
        finetune=finetune, selection=dataclasses.asdict(self.selection))
    return json.loads(json.dumps(out))  # tuples -> lists, as stored
