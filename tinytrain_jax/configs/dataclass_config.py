"""ConfigDict -> frozen dataclass at the library edge (validates field names)."""
import dataclasses


def dataclass_from_config(cls, cfg):
  """cls(**cfg) from a ConfigDict or dict; unknown keys raise ValueError."""
  d = dict(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
  names = {f.name for f in dataclasses.fields(cls)}
  extra = sorted(set(d) - names)
  if extra:
    raise ValueError(f'unknown {cls.__name__} fields {extra}; accepted: '
                     f'{sorted(names)}')
  return cls(**d)
