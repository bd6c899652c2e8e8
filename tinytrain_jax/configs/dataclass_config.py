"""ConfigDict -> frozen dataclass, at the launcher edge.

The library takes frozen, validated dataclasses and never reads a
ConfigDict. Launchers build them here from their config file and flags, so
that a wrong key or value fails before any work with one line naming the
`--config.<key>` flag:

  cfg = meta_train_config(_CONFIG.value)   # a train.MetaTrainConfig

Lists stay comma strings in the config files, because that is how a flag
spells them (`--config.val_sources=mini-imagenet,omniglot`); they become
tuples here. (ml_collections' own tuple flags parse `tfds:dtd` or `a,b` in
an empty tuple wrongly.)
"""
import dataclasses
import re
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from tinytrain_jax.configs import cli
from tinytrain_jax.eval import config as eval_config_lib
from tinytrain_jax.train import meta_train as meta_lib


def as_dict(cfg) -> Dict[str, Any]:
  """A ConfigDict (or a mapping) as a plain dict of plain dicts."""
  return dict(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)


def field_names(cls) -> Tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(cls))


def check_keys(d: Dict[str, Any], accepted: Iterable[str],
               prefix: str = '') -> None:
  """Raises a one-line ValueError for a key of `d` not in `accepted`."""
  accepted = tuple(accepted)
  extra = sorted(set(d) - set(accepted))
  if extra:
    where = f'--config.{prefix}*' if prefix else '--config'
    raise ValueError(f'unknown config key --config.{prefix}{extra[0]}; '
                     f'accepted in {where}: {", ".join(sorted(accepted))}')


def name_flag(message: str, cls_name: str, prefix: str = '') -> str:
  """A dataclass's error text, naming the flag `--config.<prefix><field>`.

  Flags a library message already names are put under `prefix`; a message
  naming only `<cls_name>.<field>` gets `; set --config.<prefix><field>`
  (and loses a hint for another launcher's flag, e.g. `pass --ways=N`).
  """
  if '--config.' in message:
    if not prefix:
      return message
    return re.sub(r'--config\.(?!' + re.escape(prefix) + ')',
                  f'--config.{prefix}', message)
  m = re.search(rf'\b{re.escape(cls_name)}\.(\w+)', message)
  if not m:
    return message
  message = re.sub(r';\s*pass --.*$', '', message)
  return f'{message}; set --config.{prefix}{m.group(1)}'


def build(cls, values: Dict[str, Any], prefix: str = ''):
  """cls(**values); its ValueError, as one line naming the flag."""
  try:
    return cls(**values)
  except ValueError as e:
    raise ValueError(cli.one_line(name_flag(str(e), cls.__name__,
                                            prefix))) from None


def dataclass_from_config(cls, cfg, prefix: str = ''):
  """cls(**cfg) from a ConfigDict or dict; unknown keys raise ValueError."""
  d = as_dict(cfg)
  check_keys(d, field_names(cls), prefix)
  return build(cls, d, prefix)


def split_list(value, flag: str, accepted: Optional[Sequence[str]] = None,
               empty_ok: bool = False) -> Tuple[str, ...]:
  """'a,b' (or a sequence) -> ('a', 'b'), checking names; errors name the
  flag `--config.<flag>`."""
  if isinstance(value, (list, tuple)):
    items = tuple(str(v).strip() for v in value if str(v).strip())
  else:
    items = tuple(v.strip() for v in str(value or '').split(',') if v.strip())
  return eval_config_lib.check_names(items, flag, accepted, empty_ok)


def split_floats(value, flag: str) -> Tuple[float, ...]:
  """'3e-4,1e-3' (or a sequence) -> (0.0003, 0.001); '' -> ()."""
  out = []
  for item in split_list(value, flag, empty_ok=True):
    try:
      out.append(float(item))
    except ValueError:
      raise ValueError(f'--config.{flag}: {item!r} is not a number; give a '
                       'comma list such as 3e-4,1e-3') from None
  return tuple(out)


def split_pairs(value, flag: str,
                form: str = 'method=lr') -> Tuple[Tuple[str, float], ...]:
  """'lastlayer=1e-2,tinytrain=3e-3' (or a mapping) -> ((name, value), ...)."""
  if isinstance(value, dict):
    return tuple((str(k), float(v)) for k, v in value.items())
  out = {}
  for item in split_list(value, flag, empty_ok=True):
    name, _, number = item.partition('=')
    try:
      out[name.strip()] = float(number)
    except ValueError:
      raise ValueError(f'--config.{flag}: bad item {item!r}; use '
                       f'{form},{form}') from None
  return tuple(out.items())


def meta_train_config(cfg) -> meta_lib.MetaTrainConfig:
  """The MetaTrainConfig of configs/meta_train.py (every field a flag)."""
  d = as_dict(cfg)
  check_keys(d, field_names(meta_lib.MetaTrainConfig))
  if 'resolution' in d:
    cli.check_resolution(d['resolution'], '--config.resolution')
  if 'val_sources' in d:
    d['val_sources'] = split_list(d['val_sources'], 'val_sources',
                                  empty_ok=True)
  return build(meta_lib.MetaTrainConfig, d)
