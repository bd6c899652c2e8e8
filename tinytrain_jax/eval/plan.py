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

  @property
  def padding(self):
    """`make_episode` / `bucket_shape` keywords of its episodes
    (`data.episode_padding`)."""
    return data.episode_padding(self.sampler)


def start_map(methods: Sequence[str],
              overrides: Mapping[str, str]) -> Dict[str, str]:
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
  """The studies of an `eval.config.EvalConfig` (validated on construction)."""
  main = variants(cfg.methods, dict(cfg.starts), cfg.ablation)
  plain = variants(cfg.methods, dict(cfg.starts), False)
  sampler = (
      cfg.fixed_sampler
      if cfg.sampler.mode == 'fixed' else cfg.variable_sampler)
  out = [
      Study(b, d, d, sampler, cfg.episodes, main)
      for b in cfg.backbones
      for d in cfg.domains
  ]
  ex = cfg.extra_backbones
  if ex.backbones and ex.domains:
    out += [
        Study(b, d, d, cfg.fixed_sampler, ex.episodes or cfg.episodes, plain)
        for b in ex.backbones
        for d in ex.domains
    ]
  va = cfg.variable
  if va.domains:
    vv = variants(va.methods or cfg.methods, dict(cfg.starts), False)
    out += [
        Study(cfg.backbones[0], f'{d} (MD)', d, cfg.variable_sampler,
              va.episodes or cfg.episodes, vv) for d in va.domains
    ]
  return out


def needs_metatrained(all_studies: Iterable[Study]) -> Dict[str, bool]:
  """backbone -> whether any of its variants starts from meta-trained."""
  out = {}
  for s in all_studies:
    out[s.backbone] = out.get(s.backbone, False) or any(
        v.start == 'metatrained' for v in s.variants)
  return out
