"""Episode statistics as text/JSON and contact sheets (for experiments/).

  specs = sampler.sample_episodes(src, cfg, seed=0, n=100)
  print(summarize(src, specs))
  save_contact_sheet(src, specs[0], '/tmp/episode.png')
"""
import json
import pathlib

import numpy as np
from PIL import Image

from tinytrain_jax.data import episodes
from tinytrain_jax.data.preprocess import preprocess
from tinytrain_jax.data import sampler


def episode_json(source, spec: sampler.EpisodeSpec, index: int) -> str:
  """One JSON line: index, ways, classes (names), per-class counts."""
  stats = episodes.episode_stats(spec, source)
  return json.dumps({
      'index': index,
      'source': source.name,
      'split': getattr(source, 'split', None),
      **stats
  })


def summarize(source, specs: list[sampler.EpisodeSpec]) -> str:
  """Multi-line summary: min / mean / max of ways, shots, query sizes."""
  stats = [episodes.episode_stats(s) for s in specs]
  rows = {
      'ways': [s['ways'] for s in stats],
      'support size': [s['support_size'] for s in stats],
      'shots per class': [k for s in stats for k in s['support_per_class']],
      'query per class': [q for s in stats for q in s['query_per_class']],
      'query size': [s['query_size'] for s in stats],
  }
  lines = [
      f'source {source.name} split {getattr(source, "split", "?")}: '
      f'{len(source.classes)} classes, {len(specs)} episodes'
  ]
  for key, values in rows.items():
    v = np.asarray(values)
    lines.append(f'  {key:16s} min {v.min():4d}  mean {v.mean():7.2f}  '
                 f'max {v.max():4d}')
  return '\n'.join(lines)


def save_contact_sheet(source, spec: sampler.EpisodeSpec, path, cell: int = 64,
                       max_per_row: int = 12) -> None:
  """Saves a PNG: one row per class, support images then (after a gap) queries.

  Args:
    source: the Source of the episode.
    spec: the episode.
    path: output .png path (parent folders are created).
    cell: side of each thumbnail in pixels.
    max_per_row: at most this many support and this many query images shown
      per class.
  """
  gap = cell // 2
  ways = spec.ways
  width = 2 * max_per_row * cell + gap
  sheet = np.full((ways * cell, width, 3), 128, np.uint8)
  for row, c in enumerate(spec.classes):
    for side, idx in enumerate(
        (spec.support_indices[row], spec.query_indices[row])):
      idx = list(idx[:max_per_row])
      if not idx:
        continue
      x = preprocess(source.images(c, idx), cell)
      thumbs = np.round((x + 1.0) * 127.5).astype(np.uint8)
      x0 = side * (max_per_row * cell + gap)
      for j, t in enumerate(thumbs):
        sheet[row * cell:(row + 1) * cell,
              x0 + j * cell:x0 + (j + 1) * cell] = t
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(sheet).save(path)
