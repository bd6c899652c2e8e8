"""Meta-trained start weights: trained once per config, cached, reused.

A meta-trained backbone is kept under a key of its full `MetaTrainConfig`
(`$TINYTRAIN_CACHE/meta_train/<model>-<sha256[:12]>/`), so every evaluation
and every sweep point with the same meta-training config reuses it, and an
interrupted meta-training resumes there. The weights returned are the
validated best step (`meta_train.best_step`), or the last step without
validation. `EvalConfig.meta_train_checkpoints`
(`--config.meta_train.checkpoint`) instead names existing meta-train
workdirs (one per backbone, matched by the model stored in each).
"""
import dataclasses
import fcntl
import hashlib
import pathlib
import sys
from typing import Dict, Sequence, Tuple

from tinytrain_jax import assets
from tinytrain_jax import checkpoint
from tinytrain_jax.eval import plan as plan_lib
from tinytrain_jax.train import meta_train as meta_lib


def metatrain_config(template: meta_lib.MetaTrainConfig, backbone: str,
                     seed: int, lrs=()) -> meta_lib.MetaTrainConfig:
  """The MetaTrainConfig of `backbone`: the evaluation's `meta_train` with
  the backbone's model and mix conv, the evaluation's seed, and the
  backbone's own lr when `lrs` ((backbone, lr) pairs) has one."""
  return dataclasses.replace(template, model=backbone, feature_mix=backbone
                             in plan_lib.MIX_BACKBONES, seed=seed,
                             lr=dict(lrs).get(backbone, template.lr))


def cache_dir(config: meta_lib.MetaTrainConfig) -> pathlib.Path:
  """Where the meta-training of `config` lives (key: the config's JSON)."""
  key = hashlib.sha256(config.to_json().encode()).hexdigest()[:12]
  return assets.derived_cache_dir() / 'meta_train' / f'{config.model}-{key}'


def _checkpoint_dirs(paths: Sequence[str],
                     backbones: Sequence[str]) -> Dict[str, str]:
  """backbone -> workdir, by the model each workdir stored; checked up front."""
  by_model = {}
  for p in paths:
    if not (pathlib.Path(p) / 'checkpoints').is_dir():
      raise ValueError(f'--config.meta_train.checkpoint: {p} is not a '
                       'meta-train workdir (no checkpoints/ inside)')
    mngr = checkpoint.manager(p)
    if mngr.latest_step() is None:
      raise ValueError(f'--config.meta_train.checkpoint: {p} holds no '
                       'checkpoint yet')
    model = checkpoint.read_config(mngr).get('model')
    if model in by_model:
      raise ValueError(f'--config.meta_train.checkpoint names two workdirs '
                       f'for {model}: {by_model[model]} and {p}')
    by_model[model] = p
  missing = [b for b in backbones if b not in by_model]
  if missing:
    raise ValueError(
        f'--config.meta_train.checkpoint has no workdir for {missing} (it has '
        f'{sorted(by_model) or "none"}); give one meta-train workdir per '
        'backbone, comma-separated, or leave it empty to meta-train here')
  return by_model


def meta_trained_starts(
    cfg, backbones: Sequence[str], resolution: int,
    progress: bool = True) -> Dict[str, Tuple[object, object, dict]]:
  """backbone -> (params, head, info) of its meta-trained start weights.

  `cfg` is an `eval.config.EvalConfig` (its meta_train, meta_train_checkpoints
  and seed); the weights are loaded at `resolution`.

  Meta-trains (or resumes) in the cache what is missing; checks every
  given checkpoint before any training starts.
  """
  out = {}
  if not backbones:
    return out
  if cfg.meta_train_checkpoints:
    dirs = _checkpoint_dirs(cfg.meta_train_checkpoints, backbones)
    for b in backbones:
      _, params, head = meta_lib.load_backbone(dirs[b], resolution)
      out[b] = (params, head, {
          'checkpoint': dirs[b],
          'best_step': meta_lib.best_step(dirs[b]),
          'val': meta_lib.val_log(dirs[b])
      })
    return out
  if cfg.meta_train is None:
    raise ValueError('meta-trained starts need --config.meta_train.steps > 0 '
                     'or --config.meta_train.checkpoint')
  configs = {
      b: metatrain_config(cfg.meta_train, b, cfg.seed, cfg.meta_train_lrs)
      for b in backbones
  }
  for b, mcfg in configs.items():
    wd = cache_dir(mcfg)
    wd.parent.mkdir(parents=True, exist_ok=True)
    # One writer per cache entry: a second process waits, then finds it done.
    with open(wd.parent / f'{wd.name}.lock', 'w') as lock:
      if progress:
        print(f'meta-training {b}: {wd}', file=sys.stderr, flush=True)
      fcntl.flock(lock, fcntl.LOCK_EX)
      meta_lib.run_meta_training(mcfg, wd, progress=progress)
    _, params, head = meta_lib.load_backbone(str(wd), resolution)
    out[b] = (params, head, {
        'cache': wd.name,
        'best_step': meta_lib.best_step(wd),
        'steps': mcfg.steps,
        'val': meta_lib.val_log(wd)
    })
  return out
