"""Embedded datasets from the asset cache: Omniglot (default) and CIFAR subset.

Files live in `<$TINYTRAIN_ASSETS>/data/` (see tinytrain_jax/assets.py) in the
uniform npz format of the shared data folder (`images` uint8[N, H, W, C],
`labels` i32[N], `class_names` str[K], extra `class_*` arrays per class).
Each file is read once per process and per path (`load_npz` is cached);
reading omniglot.npz (358 MB of pixels, zip-deflated to 5.8 MB) takes about
0.9 s (inflate, no copy; np.load takes 1.3 s), later calls are free. The
arrays are read-only.

Splits:
  omniglot  train = the 25 background alphabets not in VALID_ALPHABETS
            (883 characters), valid = VALID_ALPHABETS (5 background
            alphabets, 81 characters), test = the 20 evaluation alphabets
            (659 characters). This is Meta-Dataset's split exactly: MD holds
            out the 5 smallest background alphabets (14, 14, 16, 17 and 20
            characters) as validation. class_groups = alphabet per class, so
            the sampler draws the ways of an episode from one alphabet.
            Pixels are kept as stored: 255 = white paper, 0 = ink (the
            polarity of the original PNGs).
  cifar10_subset  train = classes 0-4 (airplane, automobile, bird, cat, deer),
            valid = none (error), test = classes 5-9 (dog, frog, horse, ship,
            truck); 600 images per class, 32x32x3.
"""
import functools
import io
import pathlib
import zipfile

import numpy as np

from tinytrain_jax import assets
from tinytrain_jax.data import sources
from tinytrain_jax.data import tfds_sources

VALID_ALPHABETS = (
    'Alphabet_of_the_Magi',
    'Blackfoot_(Canadian_Aboriginal_Syllabics)',
    'Inuktitut_(Canadian_Aboriginal_Syllabics)',
    'Ojibwe_(Canadian_Aboriginal_Syllabics)',
    'Tagalog',
)
CIFAR_SPLITS = {'train': (0, 1, 2, 3, 4), 'valid': (), 'test': (5, 6, 7, 8, 9)}


def _read_npy(blob: bytes) -> np.ndarray:
  """Parses .npy bytes without copying the data (read-only result)."""
  stream = io.BytesIO(blob)
  version = np.lib.format.read_magic(stream)
  read_header = (
      np.lib.format.read_array_header_1_0
      if version == (1, 0) else np.lib.format.read_array_header_2_0)
  shape, fortran, dtype = read_header(stream)
  if dtype.hasobject:
    raise ValueError('object arrays are not supported')
  arr = np.frombuffer(blob, dtype, int(np.prod(shape)), stream.tell())
  return arr.reshape(shape, order='F' if fortran else 'C')


@functools.lru_cache(maxsize=8)
def _load_npz_cached(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
  del mtime_ns  # Only part of the cache key: a rewritten file is re-read.
  try:
    # One inflate per member and no copy (np.load would copy the 358 MB).
    with zipfile.ZipFile(path) as z:
      return {
          name[:-4]: _read_npy(z.read(name))
          for name in z.namelist()
          if name.endswith('.npy')
      }
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise ValueError(f'cannot read dataset file {path}: {e}; replace it with '
                     'a fresh copy of the shared data folder') from None


def load_npz(path: pathlib.Path | str) -> dict[str, np.ndarray]:
  """Loads an npz file once per process (cached per path and mtime).

  Args:
    path: file path.

  Returns:
    Dict of array name -> array. Treat the arrays as read-only: they are
    shared by every caller.
  """
  path = pathlib.Path(path).expanduser().resolve()
  return _load_npz_cached(str(path), path.stat().st_mtime_ns)


def _positions(labels: np.ndarray, class_ids) -> list[np.ndarray]:
  order = np.argsort(labels, kind='stable')
  starts = np.searchsorted(labels[order], np.arange(labels.max() + 2))
  return [order[starts[c]:starts[c + 1]] for c in class_ids]


def omniglot_source(split: str, path=None) -> sources.Source:
  """Omniglot characters of one split (see the module docstring).

  Example:
    src = omniglot_source('test')   # 659 characters, 20 alphabets

  Args:
    split: 'train', 'valid' or 'test'.
    path: npz file; default `assets.asset_path('data', 'omniglot.npz')`.
      When that default is missing, TFDS 'omniglot' is used instead
      (`tfds_sources.tfds_data_dir`; downloaded and prepared there when not
      yet prepared and the network answers).

  Raises:
    ValueError: neither is there (one line naming $TINYTRAIN_ASSETS, what is
      missing and how to fill it).

  Returns:
    An ArraySource with class_groups = alphabets, images uint8[n,105,105,1].
  """
  sources.check_split('omniglot', split)
  if path is None:
    path = assets.asset_path('data', 'omniglot.npz')
    if not path.exists():
      try:
        # TFDS downloads and prepares it when a network is there.
        return tfds_sources.TfdsSource('omniglot', split, image_size=None,
                                       name='omniglot')
      except ValueError:
        raise ValueError(
            f'Omniglot not found: ${assets.ENV_VAR}={assets.assets_root()} '
            f'has no data/omniglot.npz (copy it there, e.g. export '
            f'{assets.ENV_VAR}=../shared), and the fallback ' +
            tfds_sources.not_prepared_message('omniglot')) from None
  elif not pathlib.Path(path).exists():
    raise ValueError(
        assets.missing_asset_message(pathlib.Path(path), 'Omniglot'))
  d = load_npz(path)
  alphabet, kind = d['class_alphabet'], d['class_split']
  is_valid = np.isin(alphabet, VALID_ALPHABETS)
  keep = {
      'train': (kind == 'background') & ~is_valid,
      'valid': (kind == 'background') & is_valid,
      'test': kind == 'evaluation'
  }[split]
  ids = np.flatnonzero(keep)
  return sources.ArraySource(name='omniglot', split=split,
                             classes=[str(s) for s in d['class_names'][ids]],
                             class_groups=[str(s) for s in alphabet[ids]],
                             pixels=d['images'],
                             positions=_positions(d['labels'], ids))


def cifar10_subset_source(split: str, path=None) -> sources.Source:
  """CIFAR-10 subset: train classes 0-4, test classes 5-9, no valid split.

  Args:
    split: 'train' or 'test' ('valid' raises: it has no classes).
    path: npz file; default `assets.asset_path('data', 'cifar10_subset.npz')`.

  Returns:
    An ArraySource with images uint8[n, 32, 32, 3] (600 per class).
  """
  sources.check_split('cifar10_subset', split)
  if not CIFAR_SPLITS[split]:
    raise ValueError("source 'cifar10_subset' has no 'valid' classes (train "
                     "= classes 0-4, test = 5-9); use --split=train or test")
  path = pathlib.Path(path or assets.asset_path('data', 'cifar10_subset.npz'))
  if not path.exists():
    raise ValueError(assets.missing_asset_message(path, 'CIFAR-10 subset'))
  d = load_npz(path)
  ids = np.array(CIFAR_SPLITS[split])
  return sources.ArraySource(name='cifar10_subset', split=split,
                             classes=[str(s) for s in d['class_names'][ids]],
                             class_groups=None, pixels=d['images'],
                             positions=_positions(d['labels'], ids))
