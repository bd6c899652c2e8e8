"""Episodes as padded numpy arrays with static (bucketed) shapes for jit.

Bucket policy. A variable episode has W ways, S support and Q query images.
Arrays are padded to
  S_max = bucket_size(S, buckets), Q_max = bucket_size(Q, buckets),
  W_max = bucket_size(W, way_buckets),
the smallest bucket >= the size, with the defaults
  DEFAULT_BUCKETS     = (8, 16, 32, 64, 128, 256, 512)   support / query rows
  DEFAULT_WAY_BUCKETS = (5, 10, 20, 50)                  class slots.
Meta-Dataset's limits (S <= 500, Q <= 50 ways x 10 = 500, W <= 50) always
fit, so at most 7 x 7 x 4 = 196 shapes exist and in practice a handful: one
jitted step is compiled per (S_max, Q_max, W_max). `query_rows` pads every query side
to one fixed row count instead: the evaluation does this (and gives every
episode the sampler's largest way count), so its programs key on S_max
alone. The query only runs forward, once per task, so its padding costs
little next to a compile (5-15 s each on a 2-core CPU). `buckets=None` (or
`way_buckets=None`) means exact shapes, no padding: a fixed 5-way 5-shot
15-query episode is then [25, ...] / [75, ...] / W_max = 5.

Padding rows are zero images with label 0 and mask False; `way_mask` marks
the W real class slots. Rows are ordered class by class (labels 0..W-1 in
the order of `spec.classes`), support images of a class in `spec` order.
"""
import dataclasses
from typing import Sequence

import numpy as np

from tinytrain_jax.data import sampler
# Function imports: the package re-exports `preprocess`, which shadows the
# module name `tinytrain_jax.data.preprocess` as a package attribute.
from tinytrain_jax.data.preprocess import augment as augment_images
from tinytrain_jax.data.preprocess import preprocess

DEFAULT_BUCKETS = (8, 16, 32, 64, 128, 256, 512)
DEFAULT_WAY_BUCKETS = (5, 10, 20, 50)


@dataclasses.dataclass
class Episode:
  """One few-shot task as padded numpy arrays.

  Attributes:
    support_x: f32[S_max, R, R, 3] in [-1, 1]; padding rows are 0.
    support_y: i32[S_max], labels 0..W-1; padding rows 0.
    support_mask: bool[S_max], True for real rows.
    query_x: f32[Q_max, R, R, 3].
    query_y: i32[Q_max].
    query_mask: bool[Q_max].
    way_mask: bool[W_max], True for the first `ways` slots.
    ways: W, the number of real classes.
    class_names: the W class names, aligned with labels.
  """
  support_x: np.ndarray
  support_y: np.ndarray
  support_mask: np.ndarray
  query_x: np.ndarray
  query_y: np.ndarray
  query_mask: np.ndarray
  way_mask: np.ndarray
  ways: int
  class_names: tuple[str, ...]


def bucket_size(n: int, buckets: Sequence[int] | None) -> int:
  """Smallest bucket >= n; n itself when buckets is None.

  Raises:
    ValueError: n is larger than every bucket.
  """
  if buckets is None:
    return int(n)
  for b in sorted(buckets):
    if b >= n:
      return int(b)
  raise ValueError(f'size {n} exceeds the largest bucket of {tuple(buckets)};'
                   ' add a larger bucket or pass buckets=None (exact shapes)')


def episode_padding(sampler_config: sampler.SamplerConfig) -> dict:
  """The evaluation's padding of a sampler's episodes, as `make_episode` /
  `bucket_shape` keywords: fixed N-way K-shot episodes keep exact sizes;
  variable ones pad the support to `DEFAULT_BUCKETS`, the query to the
  sampler's largest query set (max_num_query x max_ways_upper_bound rows)
  and the class slots to its largest way count, so that their programs key
  on the support bucket alone."""
  c = sampler_config
  if c.mode != 'variable':
    return dict(buckets=None, way_buckets=None, query_rows=None)
  return dict(buckets=DEFAULT_BUCKETS, way_buckets=(c.max_ways_upper_bound,),
              query_rows=c.max_num_query * c.max_ways_upper_bound)


def episode_stats(spec: sampler.EpisodeSpec, source=None) -> dict:
  """Summary of an episode: ways, classes, support/query counts per class.

  Args:
    spec: the episode.
    source: optional; when given, `classes` holds class names, else indices.

  Returns:
    dict(ways, classes, support_per_class, query_per_class, support_size,
    query_size) with lists aligned with `classes`.
  """
  classes = list(spec.classes)
  if source is not None:
    classes = [source.classes[c] for c in classes]
  support = [len(s) for s in spec.support_indices]
  query = [len(q) for q in spec.query_indices]
  return {
      'ways': spec.ways,
      'classes': classes,
      'support_per_class': support,
      'query_per_class': query,
      'support_size': sum(support),
      'query_size': sum(query)
  }


def bucket_shape(spec: sampler.EpisodeSpec,
                 buckets: Sequence[int] | None = DEFAULT_BUCKETS,
                 way_buckets: Sequence[int] | None = DEFAULT_WAY_BUCKETS,
                 query_rows: int | None = None) -> tuple[int, int, int]:
  """(S_max, Q_max, W_max): the padded sizes `make_episode` gives `spec`,
  known without reading a pixel (episodes of equal shape share programs)."""
  s_size = sum(len(s) for s in spec.support_indices)
  q_size = sum(len(q) for q in spec.query_indices)
  if query_rows is None:
    q_rows = bucket_size(q_size, buckets)
  elif q_size > query_rows:
    raise ValueError(f'episode has {q_size} query images, more than '
                     f'query_rows={query_rows}; raise query_rows or pass None')
  else:
    q_rows = int(query_rows)
  return (bucket_size(s_size, buckets), q_rows,
          bucket_size(spec.ways, way_buckets))


def _pack(source, spec, per_class, rows: int, resolution: int):
  """Reads, preprocesses and pads one side (support or query)."""
  x = np.zeros((rows, resolution, resolution, 3), np.float32)
  y = np.zeros((rows,), np.int32)
  mask = np.zeros((rows,), bool)
  pos = 0
  for label, (c, idx) in enumerate(zip(spec.classes, per_class)):
    if not idx:
      continue
    imgs = preprocess(source.images(c, list(idx)), resolution)
    x[pos:pos + len(idx)] = imgs
    y[pos:pos + len(idx)] = label
    mask[pos:pos + len(idx)] = True
    pos += len(idx)
  return x, y, mask


def make_episode(source, spec: sampler.EpisodeSpec, resolution: int = 128,
                 buckets: Sequence[int] | None = DEFAULT_BUCKETS,
                 way_buckets: Sequence[int] | None = DEFAULT_WAY_BUCKETS,
                 augment: bool = False, seed: int = 0,
                 query_rows: int | None = None) -> Episode:
  """Reads the pixels of an episode and pads it to bucketed shapes.

  Example:
    spec = sampler.sample_episode(src, sampler.SamplerConfig(), 0, 3)
    ep = make_episode(src, spec, resolution=128)

  Args:
    source: the Source the spec was sampled from.
    spec: the episode.
    resolution: image side R in pixels.
    buckets: support/query row buckets; None = exact sizes.
    way_buckets: class-slot buckets; None = exactly `ways` slots.
    query_rows: pad every episode's query side to this many rows (one shape
      whatever the episode); None = bucket it as the support.
    augment: apply P>M>F augmentation (preprocess.augment) to the real
      support and query images (train-time only).
    seed: augmentation seed; the generator is default_rng([seed, 0|1]) for
      the support / query sides, so the result is deterministic.

  Returns:
    The Episode.
  """
  s_size = sum(len(s) for s in spec.support_indices)
  q_size = sum(len(q) for q in spec.query_indices)
  s_rows, q_rows, w_slots = bucket_shape(spec, buckets, way_buckets,
                                         query_rows)
  sx, sy, sm = _pack(source, spec, spec.support_indices, s_rows, resolution)
  qx, qy, qm = _pack(source, spec, spec.query_indices, q_rows, resolution)
  if augment:
    sx[:s_size] = augment_images(sx[:s_size], np.random.default_rng([seed, 0]))
    if q_size:
      qx[:q_size] = augment_images(qx[:q_size], np.random.default_rng([seed,
                                                                       1]))
  way_mask = np.zeros((w_slots,), bool)
  way_mask[:spec.ways] = True
  return Episode(support_x=sx, support_y=sy, support_mask=sm, query_x=qx,
                 query_y=qy, query_mask=qm, way_mask=way_mask, ways=spec.ways,
                 class_names=tuple(source.classes[c] for c in spec.classes))
