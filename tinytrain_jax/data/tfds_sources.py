"""TFDS datasets as few-shot sources, with Meta-Dataset's class splits.

Name: 'tfds:<builder>' (see sources.get_source), e.g. 'tfds:dtd'. All TFDS
splits of the builder are read once (images kept encoded in memory, decoded
on demand) and regrouped by class; the class split is then applied:

* Catalog datasets of MD domains: MD's converters split the class list with
  `np.random.seed(22)` then (train+valid vs test, then train vs valid)
  `np.random.choice` without replacement (`gen_rand_split_inds`). We re-run
  that rule on the TFDS label order (MD_COUNTS). For `dtd` (sorted names)
  this reproduces MD's published test classes exactly (banded, bumpy,
  crosshatched, knitted, sprinkled, stratified, woven; tested). For
  `caltech_birds2011` (classes.txt order), `oxford_flowers102` (label order)
  and `quickdraw_bitmap` it is exact if TFDS's label order equals the order
  MD's converter read (we believe so; not verified offline).
* `omniglot`: TFDS 'train' = background alphabets, 'test' = evaluation;
  valid = the 5 background alphabets with the fewest characters, MD's rule
  (the same 5 as embedded.VALID_ALPHABETS); class_groups = alphabets.
* Any other builder: the same seeded rule with MD's 70 / 15 / 15 % counts
  (int(0.7 K), int(0.85 K) - int(0.7 K), the rest).
* `meta_dataset/<source>` (MD's own TFDS builder, if the `meta_dataset`
  package is installed): split 'all_classes', whose class ids are ordered
  train, valid, test (MD convention), cut with MD_COUNTS.
  imagenet2012 needs TFDS's manual_dir; pass `data_dir` / a prepared builder.
"""
import collections
import io
import os
import socket
from typing import Sequence

import numpy as np
from PIL import Image

from tinytrain_jax import assets
from tinytrain_jax.data import sources

# Where prepared TFDS datasets are read from (see `tfds_data_dir`).
DATA_DIR_ENV = 'TINYTRAIN_TFDS_DATA_DIR'


def tfds_data_dir(data_dir=None):
  """The TFDS data_dir to use: the argument, else $TINYTRAIN_TFDS_DATA_DIR,
  else `$TINYTRAIN_ASSETS/tfds` when that folder exists, else None (TFDS's
  own default, ~/tensorflow_datasets or $TFDS_DATA_DIR)."""
  if data_dir:
    return str(data_dir)
  if os.environ.get(DATA_DIR_ENV):
    return os.environ[DATA_DIR_ENV]
  cached = assets.assets_root() / 'tfds'
  return str(cached) if cached.is_dir() else None


# Hosts TFDS downloads from (its GCS mirror, then the originals' sites); one
# must answer before a download is tried, so an offline machine gets the
# one-line error at once instead of minutes of urllib retries.
PROBE_HOSTS = ('storage.googleapis.com', 'github.com')


def network_reachable(hosts: Sequence[str] = PROBE_HOSTS,
                      timeout_s: float = 3.0) -> bool:
  """Whether any of `hosts` accepts a TCP connection on port 443."""
  for host in hosts:
    try:
      socket.create_connection((host, 443), timeout=timeout_s).close()
      return True
    except OSError:
      continue
  return False


def not_prepared_message(dataset: str, data_dir=None) -> str:
  """One line: where TFDS `dataset` was looked for and how to prepare it."""
  where = tfds_data_dir(data_dir) or '~/tensorflow_datasets (TFDS default)'
  return (f'TFDS dataset {dataset!r} is not prepared in {where}; prepare it '
          f'once with internet access (tfds build {dataset} --data_dir=DIR) '
          f'and set ${DATA_DIR_ENV}=DIR, or put it under '
          f'${assets.ENV_VAR}/tfds')


MD_SEED = 22
# MD's converters read these datasets' classes sorted by name.
SORT_BY_NAME = ('dtd', 'quickdraw_bitmap')
# Builder -> (train, valid, test) class counts of Meta-Dataset.
MD_COUNTS = {
    'dtd': (33, 7, 7),
    'caltech_birds2011': (140, 30, 30),
    'oxford_flowers102': (71, 15, 16),
    'quickdraw_bitmap': (241, 52, 52),
    # MD's own builder configs (class ids already ordered train/valid/test).
    'meta_dataset/aircraft': (70, 15, 15),
    'meta_dataset/cu_birds': (140, 30, 30),
    'meta_dataset/dtd': (33, 7, 7),
    'meta_dataset/fungi': (994, 200, 200),
    'meta_dataset/ilsvrc_2012': (712, 158, 130),
    'meta_dataset/mscoco': (0, 40, 40),
    'meta_dataset/omniglot': (883, 81, 659),
    'meta_dataset/quickdraw': (241, 52, 52),
    'meta_dataset/traffic_sign': (0, 0, 43),
    'meta_dataset/vgg_flower': (71, 15, 16),
}


def md_split_indices(num_classes: int, counts=None,
                     seed: int = MD_SEED) -> dict[str, np.ndarray]:
  """Meta-Dataset's seeded class split (`gen_rand_split_inds`).

  Args:
    num_classes: K.
    counts: (train, valid, test) class counts summing to K; default MD's
      70 / 15 / 15 % rule.
    seed: MD's seed (22).

  Returns:
    {'train': i64[...], 'valid': i64[...], 'test': i64[...]} class indices.
  """
  if counts is None:
    n_train, n_trainval = int(0.7 * num_classes), int(0.85 * num_classes)
    counts = (n_train, n_trainval - n_train, num_classes - n_trainval)
  if sum(counts) != num_classes:
    raise ValueError(f'class split counts {counts} must sum to the '
                     f'{num_classes} classes of the dataset; fix MD_COUNTS or '
                     'pass counts')
  rng = np.random.RandomState(seed)  # Same stream as np.random.seed(22).
  trainval = rng.choice(num_classes, counts[0] + counts[1], replace=False)
  test = np.setdiff1d(np.arange(num_classes), trainval)
  train = rng.choice(trainval, counts[0], replace=False)
  valid = np.setdiff1d(trainval, train)
  return {'train': train, 'valid': valid, 'test': test}


def _label_names(builder, labels) -> dict[int, str]:
  """ClassLabel names when the builder has them, else the label ids."""
  try:
    names = builder.info.features['label'].names
  except (KeyError, AttributeError):
    names = None
  out = {}
  for c in labels:
    c = int(c)
    out[c] = str(names[c]) if names and c < len(names) else str(c)
  return out


def _decode(value, image_size: int | None) -> np.ndarray:
  if isinstance(value, bytes):
    img = Image.open(io.BytesIO(value))
    img = img.convert('L' if img.mode in ('L', '1') else 'RGB')
  else:
    arr = np.asarray(value, np.uint8)
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
  if image_size is not None and img.size != (image_size, image_size):
    img = img.resize((image_size, image_size), Image.BILINEAR)
  arr = np.asarray(img, np.uint8)
  return arr[..., None] if arr.ndim == 2 else arr


def _open_builder(dataset: str, data_dir):
  """Returns the TFDS builder, or raises a one-line ValueError."""
  # Imported on use: it loads TensorFlow (seconds, ~1 GB), which only a
  # TFDS source needs.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if dataset.startswith('meta_dataset'):
    try:
      # pylint: disable-next=g-import-not-at-top,unused-import
      import meta_dataset.data.tfds
    except ImportError:
      raise ValueError(f'source tfds:{dataset} needs the meta_dataset package'
                       '; install it (github.com/google-research/meta-dataset)'
                       ' or use a catalog name such as tfds:dtd') from None
  try:
    builder = tfds.builder(dataset, data_dir=tfds_data_dir(data_dir))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'unknown TFDS dataset {dataset!r} ({type(e).__name__});'
                     ' pass --source=tfds:<name> with a TFDS catalog name '
                     'such as dtd or omniglot') from None
  return builder


def _read_builder(builder, dataset, splits, image_key, keys):
  """Yields (split, dict of numpy values) from all `splits`, not decoded."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  splits = splits or list(builder.info.splits.keys()) or ['train']
  decoders = {image_key: tfds.decode.SkipDecoding()}
  for split in splits:
    try:
      ds = builder.as_dataset(split=split, decoders=decoders)
    except Exception:  # pylint: disable=broad-except
      try:
        if not network_reachable():
          raise ConnectionError('offline: no TFDS download host answers')
        builder.download_and_prepare()
        ds = builder.as_dataset(split=split, decoders=decoders)
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f'cannot load TFDS split {split!r} of {dataset!r} '
                         f'({type(e).__name__}); ' + not_prepared_message(
                             dataset,
                             builder.data_dir.split(os.sep +
                                                    dataset.split(':')[0] +
                                                    os.sep)[0])) from None
    for ex in tfds.as_numpy(ds):
      yield split, {k: ex[k] for k in keys}


class TfdsSource:
  """A TFDS dataset split by classes (see module docstring).

  Example:
    src = TfdsSource('dtd', 'test')    # MD's 7 DTD test textures

  Args:
    dataset: TFDS builder name (optionally 'name:version').
    split: 'train', 'valid' or 'test'.
    image_size: side images are resized to on read; None keeps the native
      size (only for datasets with one image size, e.g. omniglot).
    data_dir: TFDS data_dir (default: `tfds_data_dir()`).
    max_images_per_class: keep only the first N images of each class (e.g.
      for quickdraw_bitmap's ~100k per class); None keeps all.
    name: source name reported in errors and stream ids.
  """

  def __init__(self, dataset: str, split: str, image_size: int | None = 128,
               data_dir=None, max_images_per_class: int | None = None,
               name: str | None = None):
    self.name = name or f'tfds:{dataset}'
    sources.check_split(self.name, split)
    self.split = split
    self.image_size = image_size
    base = dataset.split(':')[0]
    is_omniglot = base == 'omniglot'
    keys = ('image', 'label') + (('alphabet',) if is_omniglot else ())
    tfds_splits = None
    if is_omniglot:
      tfds_splits = ['train', 'test']
    elif base.startswith('meta_dataset'):
      tfds_splits = ['all_classes']
    per_class = collections.defaultdict(list)
    group_of, tfds_split_of = {}, {}
    builder = _open_builder(dataset, data_dir)
    for tsplit, ex in _read_builder(builder, dataset, tfds_splits, 'image',
                                    keys):
      label = int(ex['label'])
      if max_images_per_class is None or len(
          per_class[label]) < max_images_per_class:
        per_class[label].append(ex['image'])
      if is_omniglot:
        group_of[label] = int(ex['alphabet'])
        tfds_split_of[label] = tsplit
    labels = np.array(sorted(per_class), np.int64)
    if is_omniglot:
      chosen = self._omniglot_split(labels, group_of, tfds_split_of, split)
      self.class_groups = [f'alphabet_{group_of[c]:02d}' for c in chosen]
    else:
      if base in SORT_BY_NAME:
        label_names = _label_names(builder, labels)
        labels = labels[np.argsort([label_names[c] for c in labels],
                                   kind='stable')]
      chosen = self._md_split(base, labels, split)
      self.class_groups = None
    label_names = _label_names(builder, labels)
    self.classes = [label_names[c] for c in chosen]
    self._images = [per_class[c] for c in chosen]
    if not self.classes:
      raise ValueError(f'source {self.name!r} has no classes in split '
                       f'{split!r}; use another --split')

  @staticmethod
  def _md_split(base: str, labels: np.ndarray, split: str) -> list[int]:
    counts = MD_COUNTS.get(base)
    if base.startswith('meta_dataset'):
      cuts = np.cumsum((0,) + counts)
      idx = {
          'train': slice(cuts[0], cuts[1]),
          'valid': slice(cuts[1], cuts[2]),
          'test': slice(cuts[2], cuts[3])
      }[split]
      return [int(c) for c in labels[idx]]
    if counts is not None and sum(counts) != labels.size:
      counts = None  # Some classes absent (e.g. mock data): use the % rule.
    return [
        int(labels[i]) for i in md_split_indices(labels.size, counts)[split]
    ]

  @staticmethod
  def _omniglot_split(labels, group_of, tfds_split_of, split) -> list[int]:
    if split == 'test':
      return [int(c) for c in labels if tfds_split_of[c] == 'test']
    background = [int(c) for c in labels if tfds_split_of[c] == 'train']
    sizes = collections.Counter(group_of[c] for c in background)
    valid = set(sorted(sizes, key=lambda g: (sizes[g], g))[:5])
    return [
        c for c in background if (group_of[c] in valid) == (split == 'valid')
    ]

  def num_images(self, class_index: int) -> int:
    return len(self._images[class_index])

  def images(self, class_index: int, indices: Sequence[int]) -> np.ndarray:
    stored = self._images[class_index]
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    sources.check_indices(self.name, self.classes[class_index], len(stored),
                          idx)
    try:
      arrays = [_decode(stored[i], self.image_size) for i in idx]
    except (OSError, ValueError) as e:
      raise ValueError(f'cannot decode an image of class '
                       f'{self.classes[class_index]!r} of source '
                       f'{self.name!r}: {e}; re-prepare the dataset') from None
    if len({a.shape for a in arrays}) > 1:
      raise ValueError(f'images of source {self.name!r} differ in size; '
                       'pass image_size=128 to resize them on read')
    return np.stack(arrays) if arrays else np.zeros((0, 1, 1, 3), np.uint8)
