"""Few-shot data sources: one small interface and a registry of names.

A *source* is one split ('train' / 'valid' / 'test') of one dataset, seen as a
list of classes whose images can be read by index:

  src = sources.get_source('omniglot', 'test')
  src.classes[3], src.num_images(3)          # 'Angelic/character04', 20
  x = src.images(3, [0, 5])                  # uint8[2, 105, 105, 1]

Accepted names (`get_source`):
  omniglot            real Omniglot from the asset cache (data/embedded.py);
                      falls back to TFDS 'omniglot' when the cache is empty.
  cifar10_subset      10 CIFAR-10 classes x 600, 32 px (smoke tests).
  mini-imagenet       mini-ImageNet (Ravi & Larochelle split: train 64 /
                      valid 16 / test 20 classes) from the asset cache;
  mini-imagenet:PATH  the same from a user's copy (data/minimagenet.py).
  tfds:<name>         a TFDS catalog dataset with Meta-Dataset's class splits
                      (data/tfds_sources.py), e.g. tfds:dtd.
  dir:<path>          a folder of images root/<class>/*.jpg|png
                      (data/folder.py): all classes serve every split, or
                      root/{train,valid,test}/<class>/ give one per split.
"""
import dataclasses
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

SPLITS = ('train', 'valid', 'test')
SOURCE_NAMES = ('omniglot', 'cifar10_subset', 'mini-imagenet',
                'mini-imagenet:<path>', 'tfds:<name>', 'dir:<path>')


@runtime_checkable
class Source(Protocol):
  """One split of a dataset, seen as classes of images.

  The sources of this package also carry `split: str` ('train' / 'valid' /
  'test'); it is optional for other implementations (the sampler uses it,
  when present, to give each split its own random stream).

  Attributes:
    name: source name as given to `get_source` (e.g. 'omniglot', 'tfds:dtd').
    classes: class names of this split; class index i means classes[i].
    class_groups: per-class group (e.g. Omniglot alphabet) for bilevel
      sampling, aligned with `classes`; None when the source is flat.
  """
  name: str
  classes: list[str]
  class_groups: list[str] | None

  def num_images(self, class_index: int) -> int:
    """Number of images of class `class_index`."""

  def images(self, class_index: int, indices: Sequence[int]) -> np.ndarray:
    """Returns uint8[n, H, W, C] (C = 1 or 3), images `indices` of a class."""


def check_split(name: str, split: str) -> None:
  """Raises ValueError unless split is one of SPLITS."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r} for '
                     f'source {name!r}; pass --split=train|valid|test')


def check_indices(name: str, cls: str, n: int, indices: np.ndarray) -> None:
  """Raises ValueError if an image index is outside [0, n)."""
  if indices.size and (indices.min() < 0 or indices.max() >= n):
    raise ValueError(
        f'image indices of class {cls!r} of source {name!r} must be in '
        f'[0, {n}), got {indices.tolist()}; sample episodes from this source')


@dataclasses.dataclass
class ArraySource:
  """A source backed by one in-memory uint8 array (embedded datasets).

  Attributes:
    name: source name.
    split: split name.
    classes: class names of the split.
    class_groups: per-class groups, or None.
    pixels: uint8[N, H, W, C], all images of the dataset (shared, not copied).
    positions: per class of the split, i64[n_c] rows of `pixels`.
  """
  name: str
  split: str
  classes: list[str]
  class_groups: list[str] | None
  pixels: np.ndarray
  positions: list[np.ndarray]

  def num_images(self, class_index: int) -> int:
    return int(self.positions[class_index].size)

  def images(self, class_index: int, indices: Sequence[int]) -> np.ndarray:
    rows = self.positions[class_index]
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    check_indices(self.name, self.classes[class_index], rows.size, idx)
    return self.pixels[rows[idx]]


def get_source(name: str, split: str = 'test', **kwargs) -> Source:
  """Returns the source `name`, split `split`.

  Example:
    src = get_source('omniglot', 'train')
    src = get_source('dir:/data/my_images', 'test')

  Args:
    name: one of SOURCE_NAMES (see the module docstring).
    split: 'train', 'valid' or 'test'.
    **kwargs: passed to the source constructor (e.g. `image_size` for tfds:
      and dir: sources, `data_dir` for tfds:).

  Raises:
    ValueError: unknown name or split, or unreadable data (one-line message).
  """
  # Imports here: the modules below import this one for the shared types.
  # pylint: disable=g-import-not-at-top
  from tinytrain_jax.data import embedded
  from tinytrain_jax.data import folder
  from tinytrain_jax.data import minimagenet
  from tinytrain_jax.data import tfds_sources
  # pylint: enable=g-import-not-at-top
  check_split(name, split)
  if name == 'omniglot':
    return embedded.omniglot_source(split, **kwargs)
  if name == 'cifar10_subset':
    return embedded.cifar10_subset_source(split, **kwargs)
  if name == minimagenet.NAME:
    return minimagenet.minimagenet_source(split, **kwargs)
  if name.startswith(minimagenet.NAME + ':') and len(name) > 14:
    return minimagenet.minimagenet_source(split, path=name[14:], **kwargs)
  if name.startswith('tfds:') and len(name) > 5:
    return tfds_sources.TfdsSource(name[5:], split, **kwargs)
  if name.startswith('dir:') and len(name) > 4:
    return folder.FolderSource(name[4:], split, **kwargs)
  raise ValueError(f'unknown source {name!r}; accepted names are '
                   f'{", ".join(SOURCE_NAMES)} (e.g. --source=omniglot)')
