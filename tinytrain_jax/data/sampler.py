"""Meta-Dataset episode sampler (variable-way variable-shot) and fixed episodes.

A port of Meta-Dataset's `sampling.py` in plain numpy (see
Triantafillou et al. 2020, Meta-Dataset). For one episode of one source:

1. Ways: W ~ UniformInt[min_ways, min(max_ways_upper_bound, K)] over the K
   classes of the split, W distinct classes uniformly. Bilevel sources
   (Omniglot): first one group (alphabet) uniformly among the groups with at
   least min_ways classes, then W from that group's classes.
2. Queries per class: q = min(max_num_query, min_c floor(n_c / 2)).
3. Support size: beta ~ U[0, 1), S = min(max_support_set_size,
   sum_c floor(beta * min(max_support_size_contrib_per_class, n_c - q) + 1)).
4. Shots: w_c = n_c * exp(u_c), u_c ~ U[min_log_weight, max_log_weight],
   k_c = min(floor(w_c / sum(w) * (S - W)) + 1, n_c - q).
   Note: max_support_size_contrib_per_class (100) caps each class's
   contribution to S, not k_c itself: with few, large classes a class can
   get more than 100 shots (e.g. W = 5, n_c = 1000: up to ~250). k_c <= 100
   holds whenever n_c - q <= 100 (e.g. Omniglot, n_c = 20).
5. Images: a random permutation of the class; the first k_c are support, the
   next q query. Images are therefore always drawn shuffled within a class,
   which Meta-Dataset requires for Traffic Sign (30-frame sequences).

Setting `ways`, `shots` or `queries` fixes that quantity (MD's num_ways,
num_support, num_query); mode='fixed' fixes all three (default 5-way 5-shot
15-query). Episode i is a pure function of (seed, source name, split, i):
its generator is `np.random.default_rng([seed, stream_id, i])` with
stream_id = crc32('<name>/<split>'), so different sources and splits get
independent streams.

Example:
  spec = sample_episode(src, SamplerConfig(), seed=0, index=7)
  spec.classes, [len(s) for s in spec.support_indices]
"""
import dataclasses
import math
import zlib

import numpy as np

MODES = ('variable', 'fixed')


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Episode sampler settings (hashable, frozen).

  Attributes:
    mode: 'variable' (Meta-Dataset) or 'fixed' (N-way K-shot Q-query).
    ways: fixed number of classes; None = sampled ('variable') or 5 ('fixed').
    shots: fixed support images per class; None = sampled / 5.
    queries: fixed query images per class; None = computed / 15.
    bilevel: draw the ways of an episode from one class group (alphabet);
      None = automatic (when the source has class_groups).
    min_ways, max_ways_upper_bound, max_num_query, max_support_set_size,
    max_support_size_contrib_per_class, min_log_weight, max_log_weight:
      Meta-Dataset's defaults.
  """
  mode: str = 'variable'
  ways: int | None = None
  shots: int | None = None
  queries: int | None = None
  bilevel: bool | None = None
  min_ways: int = 5
  max_ways_upper_bound: int = 50
  max_num_query: int = 10
  max_support_set_size: int = 500
  max_support_size_contrib_per_class: int = 100
  min_log_weight: float = math.log(0.5)
  max_log_weight: float = math.log(2.0)

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'SamplerConfig.mode must be one of {MODES}, got '
                       f'{self.mode!r}; pass --mode=variable or --mode=fixed')
    for field in ('ways', 'shots', 'queries'):
      value = getattr(self, field)
      if value is not None and value < 1:
        raise ValueError(f'SamplerConfig.{field} must be >= 1 or None, got '
                         f'{value}; pass --{field}=N with N >= 1')
    if self.min_ways < 1 or self.max_ways_upper_bound < self.min_ways:
      raise ValueError(
          'SamplerConfig needs 1 <= min_ways <= max_ways_upper_bound, got '
          f'{self.min_ways} and {self.max_ways_upper_bound}; fix the config')

  def resolved(self) -> 'SamplerConfig':
    """Fills the 5-way 5-shot 15-query defaults of mode 'fixed'."""
    if self.mode != 'fixed':
      return self
    return dataclasses.replace(self, ways=self.ways or 5, shots=self.shots or 5,
                               queries=self.queries or 15)


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """What an episode contains, without pixels (small, hashable, storable).

  Attributes:
    classes: class indices into the source's split; label j of the episode
      is classes[j].
    support_indices: per class, image indices within that class.
    query_indices: per class, image indices within that class.
  """
  classes: tuple[int, ...]
  support_indices: tuple[tuple[int, ...], ...]
  query_indices: tuple[tuple[int, ...], ...]

  @property
  def ways(self) -> int:
    return len(self.classes)


def stream_id(source) -> int:
  """32-bit id of (source name, split), so sources get independent streams."""
  key = f"{source.name}/{getattr(source, 'split', '')}"
  return zlib.crc32(key.encode())


def _too_few_classes(source, k: int, need: int, what: str) -> ValueError:
  return ValueError(
      f'source {source.name!r} split {getattr(source, "split", "?")!r} has '
      f'{k} {what}, fewer than the {need} ways an episode needs; use a split '
      'with more classes or lower --ways / min_ways')


def _sample_classes(source, cfg: SamplerConfig, rng) -> np.ndarray:
  """Step 1: the episode's classes (indices into source.classes)."""
  k = len(source.classes)
  need = cfg.ways or cfg.min_ways
  groups = source.class_groups
  bilevel = groups is not None if cfg.bilevel is None else cfg.bilevel
  if bilevel:
    if groups is None:
      raise ValueError(f'SamplerConfig.bilevel=True but source '
                       f'{source.name!r} has no class_groups; set bilevel=None')
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(names))
    usable = np.flatnonzero(sizes >= need)
    if usable.size == 0:
      raise _too_few_classes(source, int(sizes.max(initial=0)), need,
                             'classes in its largest group')
    group = usable[rng.integers(usable.size)]
    pool = np.flatnonzero(inverse == group)
  else:
    if k < need:
      raise _too_few_classes(source, k, need, 'classes')
    pool = np.arange(k)
  ways = cfg.ways or int(
      rng.integers(cfg.min_ways,
                   min(cfg.max_ways_upper_bound, pool.size) + 1))
  return pool[rng.choice(pool.size, ways, replace=False)]


def _check_class_sizes(source, classes, sizes, need: int, why: str):
  for c, n in zip(classes, sizes):
    if n < need:
      raise ValueError(
          f'class {source.classes[c]!r} of source {source.name!r} has {n} '
          f'images, fewer than the {need} needed ({why}); add images or drop '
          'the class')


def sample_episode(source, config: SamplerConfig, seed: int,
                   index: int) -> EpisodeSpec:
  """Samples episode `index` of the stream `seed` (a pure function of both).

  Args:
    source: a Source (see sources.py).
    config: sampler settings.
    seed: stream seed, a non-negative int.
    index: episode number, a non-negative int.

  Returns:
    The EpisodeSpec.

  Raises:
    ValueError: too few classes, or a class with too few images.
  """
  cfg = config.resolved()
  rng = np.random.default_rng([int(seed), stream_id(source), int(index)])
  classes = _sample_classes(source, cfg, rng)
  n = np.array([source.num_images(int(c)) for c in classes], np.int64)
  ways = classes.size
  if cfg.queries is not None:
    q = cfg.queries
    _check_class_sizes(source, classes, n, q + (cfg.shots or 1),
                       f'{cfg.shots or 1} support + {q} query')
  else:
    _check_class_sizes(source, classes, n, 2, 'at least 1 support + 1 query')
    q = int(min(cfg.max_num_query, (n // 2).min()))
  if cfg.shots is not None:
    _check_class_sizes(source, classes, n, cfg.shots + q,
                       f'{cfg.shots} support + {q} query')
    shots = np.full(ways, cfg.shots, np.int64)
  else:
    beta = rng.uniform()
    contrib = np.minimum(cfg.max_support_size_contrib_per_class, n - q)
    size = min(cfg.max_support_set_size,
               int(np.floor(beta * contrib + 1).sum()))
    u = rng.uniform(cfg.min_log_weight, cfg.max_log_weight, size=ways)
    w = n * np.exp(u)
    shots = np.minimum(
        np.floor(w / w.sum() * (size - ways)).astype(np.int64) + 1, n - q)
  support, query = [], []
  for c_n, k in zip(n, shots):
    perm = rng.permutation(int(c_n))[:k + q]
    support.append(tuple(int(i) for i in perm[:k]))
    query.append(tuple(int(i) for i in perm[k:]))
  return EpisodeSpec(
      classes=tuple(int(c) for c in classes), support_indices=tuple(support),
      query_indices=tuple(query))


def sample_episodes(source, config: SamplerConfig, seed: int, n: int,
                    start: int = 0) -> list[EpisodeSpec]:
  """Episodes start..start+n-1 of the stream `seed` (see sample_episode).

  Raises:
    ValueError: n < 1 or start < 0 (names the value and the accepted range).
  """
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f'sample_episodes: n (the number of episodes) must be an '
                     f'integer >= 1, got {n!r}')
  if isinstance(
      start, bool) or not isinstance(start, (int, np.integer)) or (start < 0):
    raise ValueError(f'sample_episodes: start (the first episode index) must '
                     f'be an integer >= 0, got {start!r}')
  return [
      sample_episode(source, config, seed, i) for i in range(start, start + n)
  ]
