"""What an evaluation runs: method variants (method x start weights), studies.

A *variant* is a method run from given start weights. The paper's Table 1
starts the baselines from the pretrained weights and TinyTrain from the
meta-trained ones (each method's `Method.start`); its meta-training ablation
swaps them. A variant's label is the method's name when it starts where
Table 1 starts it, else `method@start` (e.g. `tinytrain@pretrained`,
`fulltrain@metatrained`), so one results table holds both without ambiguity.

A *study* is one (backbone, domain, sampler) cell with its variants; every
variant of a study sees exactly the same tasks.

  vs = variants(('none', 'tinytrain'), starts={}, ablation=True)
  [v.label for v in vs]  # ['none', 'tinytrain', 'none@metatrained',
                         #  'tinytrain@pretrained']
"""
import dataclasses
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

from tinytrain_jax import data
from tinytrain_jax.models.registry import canonical_name
from tinytrain_jax.train import methods as methods_lib

STARTS = ('pretrained', 'metatrained')
# Backbones that TinyTrain uses with their added mix conv (protocol §2).
MIX_BACKBONES = ('mbv2-w0.35', 'proxyless-w0.3')


@dataclasses.dataclass(frozen=True)
class Variant:
  """method: a METHODS name; start: 'pretrained' | 'metatrained'."""
  method: str
  start: str

  @property
  def label(self) -> str:
    table1 = methods_lib.get_method(self.method).start
    return self.method if self.start == table1 else f'{self.method}@{self.start}'


@dataclasses.dataclass(frozen=True)
class Study:
  """One (backbone, domain, sampler) cell of the evaluation.

  domain: the row label ('omniglot', or 'omniglot (MD)' for the variable
  sampler); source: the source name; episodes: tasks drawn.
  """
  backbone: str
  domain: str
  source: str
  sampler: data.SamplerConfig
  episodes: int
  variants: Tuple[Variant, ...]


def split_list(value, flag: str, accepted=None) -> List[str]:
  """'a,b' (or a tuple) -> ['a', 'b'], checking names; errors name the flag."""
  if isinstance(value, (list, tuple)):
    items = [str(v).strip() for v in value if str(v).strip()]
  else:
    items = [v.strip() for v in str(value or '').split(',') if v.strip()]
  if not items:
    raise ValueError(f'--config.{flag} is empty; give a comma list')
  if accepted is not None:
    bad = [v for v in items if v not in accepted]
    if bad:
      raise ValueError(f'--config.{flag}: unknown {bad}; accepted: '
                       f'{", ".join(accepted)}')
  return items


def start_map(methods: Sequence[str], overrides: Mapping[str, str]
              ) -> Dict[str, str]:
  """Each method's start: `overrides[m]` when set, else Table 1's.

  Raises:
    ValueError: an override names an unknown method or start.
  """
  out = {}
  for m, s in dict(overrides).items():
    if m not in methods_lib.METHODS:
      raise ValueError(f'--config.starts.{m}: unknown method; accepted: '
                       f'{", ".join(methods_lib.METHODS)}')
    if s and s not in STARTS:
      raise ValueError(f'--config.starts.{m}={s!r}: accepted starts are '
                       f'{", ".join(STARTS)} (empty = Table 1\'s)')
  for m in methods:
    out[m] = dict(overrides).get(m) or methods_lib.get_method(m).start
  return out


def variants(methods: Sequence[str], starts: Mapping[str, str],
             ablation: bool) -> Tuple[Variant, ...]:
  """Variants of `methods` from their starts, plus (ablation) the other
  start of every method, after them."""
  sm = start_map(methods, starts)
  out = [Variant(m, sm[m]) for m in methods]
  if ablation:
    out += [Variant(m, STARTS[1 - STARTS.index(sm[m])]) for m in methods]
  return tuple(out)


def studies(cfg) -> List[Study]:
  """The studies of an evaluation config (configs/default.py)."""
  methods = split_list(cfg.methods, 'methods', list(methods_lib.METHODS))
  main = variants(methods, cfg.starts, bool(cfg.ablation))
  plain = variants(methods, cfg.starts, False)
  fixed = data.SamplerConfig(mode='fixed', ways=cfg.sampler.ways,
                             shots=cfg.sampler.shots,
                             queries=cfg.sampler.queries)
  if cfg.sampler.mode not in data.sampler.MODES:
    raise ValueError(f'--config.sampler.mode must be one of '
                     f'{data.sampler.MODES}, got {cfg.sampler.mode!r}')
  sampler = (fixed if cfg.sampler.mode == 'fixed'
             else data.SamplerConfig(mode='variable'))
  if cfg.episodes < 1:
    raise ValueError(f'--config.episodes must be >= 1, got {cfg.episodes}')
  backbones = [canonical_name(b) for b in split_list(cfg.backbones,
                                                     'backbones')]
  out = [Study(b, d, d, sampler, cfg.episodes, main) for b in backbones
         for d in split_list(cfg.domains, 'domains')]
  ex = cfg.extra_backbones
  if ex.backbones and ex.domains:
    out += [Study(canonical_name(b), d, d, fixed, ex.episodes or cfg.episodes,
                  plain)
            for b in split_list(ex.backbones, 'extra_backbones.backbones')
            for d in split_list(ex.domains, 'extra_backbones.domains')]
  va = cfg.variable
  if va.domains:
    vm = split_list(va.methods, 'variable.methods',
                    list(methods_lib.METHODS)) if va.methods else methods
    vv = variants(vm, cfg.starts, False)
    out += [Study(backbones[0], f'{d} (MD)', d,
                  data.SamplerConfig(mode='variable'),
                  va.episodes or cfg.episodes, vv)
            for d in split_list(va.domains, 'variable.domains')]
  return out


def needs_metatrained(all_studies: Iterable[Study]) -> Dict[str, bool]:
  """backbone -> whether any of its variants starts from meta-trained."""
  out = {}
  for s in all_studies:
    out[s.backbone] = out.get(s.backbone, False) or any(
        v.start == 'metatrained' for v in s.variants)
  return out
