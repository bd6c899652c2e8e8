"""`<workdir>/run_config.json`: the settings an evaluation's numbers depend on.

The first run writes every field of `EvalConfig.to_json_dict()` except the
row-selecting ones; a rerun in the same workdir must match it field by field
(only the lists of backbones, domains, methods, the episode counts and the
ablation may change), else it is refused with one line naming the field.

Files written before `EvalConfig` existed (no "format" key) held the
config file's values as written: comma strings, `meta_train.resolution` 0 for "the
evaluation's", and fewer fields. They are read in today's layout, so an
unchanged config resumes them.
"""
import json
import math
import pathlib
from typing import Any, Dict

# Config keys that only select which rows exist; every other key changes the
# numbers of a row and must match the workdir's run_config.json.
ROW_SELECTING_KEYS = ('backbones', 'domains', 'methods', 'episodes', 'ablation',
                      'extra_backbones', 'variable')
FORMAT = 2
# Fields that format-1 files lack, with the value the evaluation used for
# them then (they could not be set).
_FORMAT1_ADDED = {
    'finetune.weight_decay': 0.0,
    'finetune.impl': 'sparse',
    'finetune.train_head': False,
    'finetune.cache_prefix': True,
    'meta_train.init': 'pretrained',
    'meta_train.split': 'train',
    'meta_train.momentum': 0.9,
    'meta_train.weight_decay': 0.0,
    'meta_train.keep': 3,
    'meta_train.log_every': 50,
    'sampler.bilevel': None,
    'sampler.min_ways': 5,
    'sampler.max_ways_upper_bound': 50,
    'sampler.max_num_query': 10,
    'sampler.max_support_set_size': 500,
    'sampler.max_support_size_contrib_per_class': 100,
    'sampler.min_log_weight': math.log(0.5),
    'sampler.max_log_weight': math.log(2.0),
}
_FORMAT1_LISTS = ('in_domain', 'meta_train.val_sources',
                  'meta_train.checkpoint')
# Fields added after format 2, with the value every earlier run used: a pin
# without one was written with that value (any format).
_ADDED_LATER = {
    'meta_train.episodes_per_step': 1,
    'meta_train.train_from_block': 0,
    'meta_train.head_scale': 10.0,
    'finetune.lr_grid_extend': 0
}


def pinned(config_dict: Dict[str, Any]) -> Dict[str, Any]:
  """The number-affecting part of `EvalConfig.to_json_dict()`."""
  return {k: v for k, v in config_dict.items() if k not in ROW_SELECTING_KEYS}


def _flatten(d: Dict, prefix: str = '') -> Dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _items(text) -> list:
  return [t.strip() for t in str(text).split(',') if t.strip()]


def _from_format1(flat: Dict[str, Any]) -> Dict[str, Any]:
  """A format-1 file (flattened) in today's layout, as far as it parses."""
  out = dict(_FORMAT1_ADDED)
  out.update(flat)
  try:
    for k in _FORMAT1_LISTS:
      if isinstance(out.get(k), str):
        out[k] = _items(out[k])
    if isinstance(out.get('finetune.lr_grid'), str):
      out['finetune.lr_grid'] = [
          float(x) for x in _items(out['finetune.lr_grid'])
      ]
    if isinstance(out.get('finetune.lr_per_method'), str):
      for item in _items(out.pop('finetune.lr_per_method')):
        name, _, lr = item.partition('=')
        out[f'finetune.lr_per_method.{name.strip()}'] = float(lr)
  except ValueError:
    pass  # left as stored: it then differs, and the rerun is refused
  if out.get('meta_train.resolution') == 0:
    out['meta_train.resolution'] = out.get('resolution')
  if out.get('meta_train.steps') == 0:  # nothing was meta-trained
    out = {
        k: v
        for k, v in out.items()
        if not k.startswith('meta_train.') or k in ('meta_train.steps',
                                                    'meta_train.checkpoint')
    }
  return out


def check(workdir: pathlib.Path, config_dict: Dict[str, Any]) -> None:
  """Pins `pinned(config_dict)` in the workdir, or checks it against the pin.

  Raises:
    ValueError: one line: the first differing field with both values, or
      results in the workdir without a run_config.json.
  """
  now = pinned(config_dict)
  path = workdir / 'run_config.json'
  if path.exists():
    stored = json.loads(path.read_text())
    version = stored.pop('format', 1)
    stored = _flatten(stored)
    if version == 1:
      stored = _from_format1(stored)
    flat = _flatten(now)
    for k, v in _ADDED_LATER.items():
      if k in flat and k not in stored:
        stored[k] = v
    for k in sorted(set(stored) | set(flat)):
      if stored.get(k) != flat.get(k):
        raise ValueError(
            f'{workdir} holds results of another config ({k}: stored '
            f'{json.dumps(stored.get(k))[:80]}, now '
            f'{json.dumps(flat.get(k))[:80]}); use another --workdir')
  elif (workdir / 'episodes.jsonl').exists():
    raise ValueError(f'{workdir}/episodes.jsonl has no run_config.json beside '
                     'it, so its config is unknown; use another --workdir')
  else:
    path.write_text(
        json.dumps(dict(now, format=FORMAT), indent=1, sort_keys=True))
