"""An evaluation's ConfigDict (configs/default.py + flags) -> `EvalConfig`.

  cfg = eval_config.from_config_dict(_CONFIG.value)
  rows = protocol.run_evaluation(cfg, workdir)

Comma strings become tuples (`--config.domains=omniglot,cifar10_subset`),
`--config.finetune.lr_per_method=lastlayer=1e-2,tinytrain=3e-3` becomes
(method, lr) pairs, `--config.meta_train.resolution=0` the evaluation's
resolution and `--config.meta_train.steps=0` no meta-training (the
`meta_train` block's other keys are then unused). A key the config file
leaves out keeps the dataclass default. Every error is one line naming the
flag.
"""
import dataclasses

from tinytrain_jax.configs import cli
from tinytrain_jax.configs import dataclass_config as dc
from tinytrain_jax.data import sampler as sampler_lib
from tinytrain_jax.eval import config as config_lib
from tinytrain_jax.eval import plan as plan_lib
from tinytrain_jax.train import finetune as finetune_lib
from tinytrain_jax.train import meta_train as meta_lib
from tinytrain_jax.train import methods as methods_lib

_LIST_KEYS = ('backbones', 'domains', 'in_domain', 'methods')
_SECTIONS = ('sampler', 'extra_backbones', 'variable', 'meta_train', 'finetune',
             'selection', 'starts')
_TOP_KEYS = ('seed', 'ablation', 'resolution', 'episodes',
             'split') + _LIST_KEYS + _SECTIONS
_FINETUNE_KEYS = tuple(
    f for f in dc.field_names(finetune_lib.FinetuneConfig)
    if f not in config_lib.FINETUNE_DERIVED)
_LR_KEYS = dc.field_names(config_lib.LrChoiceConfig)
_META_KEYS = tuple(
    f for f in dc.field_names(meta_lib.MetaTrainConfig)
    if f not in config_lib.META_TRAIN_DERIVED) + ('checkpoint',
                                                  'lr_per_backbone')


def _section(d, name, accepted):
  sec = dict(d.get(name) or {})
  dc.check_keys(sec, accepted, f'{name}.')
  return sec


def _sampler(d):
  s = _section(d, 'sampler', dc.field_names(sampler_lib.SamplerConfig))
  mode = s.get('mode', 'fixed')
  if mode not in sampler_lib.MODES:
    raise ValueError(f'--config.sampler.mode must be one of '
                     f'{sampler_lib.MODES}, got {mode!r}')
  base = dataclasses.asdict(config_lib.EvalConfig().sampler)
  return dc.build(sampler_lib.SamplerConfig, dict(base, **s), 'sampler.')


def _finetune(d):
  ft = _section(d, 'finetune', _FINETUNE_KEYS + _LR_KEYS)
  lr = {k: ft.pop(k) for k in _LR_KEYS if k in ft}
  if 'lr_grid' in lr:
    lr['lr_grid'] = dc.split_floats(lr['lr_grid'], 'finetune.lr_grid')
  if 'lr_per_method' in lr:
    lr['lr_per_method'] = dc.split_pairs(lr['lr_per_method'],
                                         'finetune.lr_per_method')
  return (dc.build(finetune_lib.FinetuneConfig, ft, 'finetune.'),
          dc.build(config_lib.LrChoiceConfig, lr, 'finetune.'))


def _meta_train(d, cfg: config_lib.EvalConfig):
  """(MetaTrainConfig or None, checkpoint workdirs, (backbone, lr) pairs)
  of the meta_train block."""
  if 'meta_train' not in d:
    return None, (), ()
  mt = _section(d, 'meta_train', _META_KEYS)
  checkpoints = dc.split_list(
      mt.pop('checkpoint', ''), 'meta_train.checkpoint', empty_ok=True)
  lrs = dc.split_pairs(
      mt.pop('lr_per_backbone', ''), 'meta_train.lr_per_backbone',
      'backbone=lr')
  if mt.get('steps') == 0:
    return None, checkpoints, ()
  if mt.get('resolution'):
    cli.check_resolution(mt['resolution'], '--config.meta_train.resolution')
  if 'val_sources' in mt:
    mt['val_sources'] = dc.split_list(mt['val_sources'],
                                      'meta_train.val_sources', empty_ok=True)
  model = cfg.backbones[0]  # a template: each backbone sets its own
  mt.update(
      resolution=mt.get('resolution') or cfg.resolution, model=model,
      feature_mix=model in plan_lib.MIX_BACKBONES, seed=cfg.seed)
  return (dc.build(meta_lib.MetaTrainConfig, mt, 'meta_train.'), checkpoints,
          lrs)


def from_config_dict(cfg) -> config_lib.EvalConfig:
  """The validated EvalConfig of a ConfigDict (or dict) of configs/default.py.

  Raises:
    ValueError: one line naming the `--config.<key>` flag, the value and
      the accepted ones.
  """
  d = dc.as_dict(cfg)
  dc.check_keys(d, _TOP_KEYS)
  if 'resolution' in d:
    cli.check_resolution(d['resolution'], '--config.resolution')
  top = {
      k: d[k]
      for k in ('seed', 'ablation', 'resolution', 'episodes', 'split')
      if k in d
  }
  for k in _LIST_KEYS:
    if k in d:
      top[k] = dc.split_list(
          d[k], k,
          list(methods_lib.METHODS) if k == 'methods' else None,
          empty_ok=k == 'in_domain')
  ex = _section(d, 'extra_backbones', dc.field_names(config_lib.ExtraBackbones))
  va = _section(d, 'variable', dc.field_names(config_lib.VariableStudies))
  for sec, key, flag in ((ex, 'backbones', 'extra_backbones.backbones'),
                         (ex, 'domains', 'extra_backbones.domains'),
                         (va, 'domains', 'variable.domains'),
                         (va, 'methods', 'variable.methods')):
    if key in sec:
      sec[key] = dc.split_list(
          sec[key], flag,
          list(methods_lib.METHODS) if key == 'methods' else None,
          empty_ok=True)
  finetune, lr_choice = _finetune(d)
  out = dc.build(
      config_lib.EvalConfig,
      dict(
          top, starts=tuple(dict(d.get('starts') or
                                 {}).items()), sampler=_sampler(d),
          extra_backbones=dc.build(config_lib.ExtraBackbones, ex,
                                   'extra_backbones.'),
          variable=dc.build(config_lib.VariableStudies, va, 'variable.'),
          finetune=finetune, lr_choice=lr_choice, selection=dc.build(
              config_lib.BudgetConfig,
              _section(d, 'selection', dc.field_names(config_lib.BudgetConfig)),
              'selection.')))
  meta, checkpoints, lrs = _meta_train(d, out)
  return dataclasses.replace(out, meta_train=meta,
                             meta_train_checkpoints=checkpoints,
                             meta_train_lrs=lrs)
