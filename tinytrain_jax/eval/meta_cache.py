"""Meta-trained start weights: trained once per config, cached, reused.

A meta-trained backbone is kept under a key of its full `MetaTrainConfig`
(`$TINYTRAIN_CACHE/meta_train/<model>-<sha256[:12]>/`), so every evaluation
and every sweep point with the same meta-training config reuses it, and an
interrupted meta-training resumes there. The weights returned are the
validated best step (`meta_train.best_step`), or the last step without
validation. `--config.meta_train.checkpoint` instead names existing
meta-train workdirs (a comma list, one per backbone, matched by the model
stored in each).
"""
import fcntl
import hashlib
import pathlib
import sys
from typing import Dict, Sequence, Tuple

from tinytrain_jax import assets
from tinytrain_jax import checkpoint
from tinytrain_jax.eval import plan as plan_lib
from tinytrain_jax.train import meta_train as meta_lib

# Keys of the evaluation's meta_train block that are not MetaTrainConfig
# fields.
_EVAL_ONLY = ('checkpoint',)


def metatrain_config(mt_cfg, backbone: str, resolution: int,
                     seed: int) -> meta_lib.MetaTrainConfig:
  """The MetaTrainConfig of `backbone` from the evaluation's meta_train block
  (its resolution 0 = the evaluation's)."""
  d = {k: v for k, v in mt_cfg.to_dict().items() if k not in _EVAL_ONLY}
  d['resolution'] = d.get('resolution') or resolution
  d.update(model=backbone, feature_mix=backbone in plan_lib.MIX_BACKBONES,
           seed=seed)
  return meta_lib.MetaTrainConfig.from_config(d)


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


def meta_trained_starts(cfg, backbones: Sequence[str], resolution: int,
                        progress: bool = True
                        ) -> Dict[str, Tuple[object, object, dict]]:
  """backbone -> (params, head, info) of its meta-trained start weights.

  Meta-trains (or resumes) in the cache what is missing; checks every
  given checkpoint before any training starts.
  """
  out = {}
  if not backbones:
    return out
  ck = str(cfg.meta_train.checkpoint or '').strip()
  if ck:
    dirs = _checkpoint_dirs(plan_lib.split_list(ck, 'meta_train.checkpoint'),
                            backbones)
    for b in backbones:
      _, params, head = meta_lib.load_backbone(dirs[b], resolution)
      out[b] = (params, head, {'checkpoint': dirs[b],
                               'best_step': meta_lib.best_step(dirs[b]),
                               'val': meta_lib.val_log(dirs[b])})
    return out
  configs = {b: metatrain_config(cfg.meta_train, b, resolution, cfg.seed)
             for b in backbones}
  for b, mcfg in configs.items():
    wd = cache_dir(mcfg)
    wd.parent.mkdir(parents=True, exist_ok=True)
    # One writer per cache entry: a second process waits, then finds it done.
    with open(wd.parent / f'{wd.name}.lock', 'w') as lock:
      if progress:
        print(f'meta-training {b}: {wd}', file=sys.stderr, flush=True)
      fcntl.flock(lock, fcntl.LOCK_EX)
      meta_lib.meta_train(mcfg, wd, progress=progress)
    _, params, head = meta_lib.load_backbone(str(wd), resolution)
    out[b] = (params, head, {'cache': wd.name, 'best_step':
                             meta_lib.best_step(wd), 'steps': mcfg.steps,
                             'val': meta_lib.val_log(wd)})
  return out
