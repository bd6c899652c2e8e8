"""mini-ImageNet (Ravi & Larochelle split) as a few-shot source.

Names (see `sources.get_source`):
  mini-imagenet         the asset cache's `data/mini-imagenet/` folder;
  mini-imagenet:PATH    a user's own copy in the same layout.

Layout (the one the common distribution uses; a full copy has 600 images per
class, the asset cache a subsample):
  PATH/images/<file>.jpg                 84x84 RGB JPEGs
  PATH/train.csv, val.csv, test.csv      header 'filename,label' (label =
                                         ImageNet WordNet id)
Splits: 'train' = train.csv (64 classes), 'valid' = val.csv (16 classes),
'test' = test.csv (20 classes). Classes are the CSV's labels in order of first
appearance; images of a class keep the CSV's order.

Decoding 25,600 JPEGs takes tens of seconds, so each split is decoded once into
`uint8[N, 84, 84, 3]` and kept as a `.npy` in the writable derived cache
(`assets.derived_cache_dir()`, never the read-only asset folder), under a key
of the folder's path and the CSV's sha256. A second load memory-maps it (well
under a second). Images that are not 84x84 are resized (bilinear) on decode.
"""
import hashlib
import pathlib

import numpy as np

from tinytrain_jax import assets
from tinytrain_jax.data import folder
from tinytrain_jax.data import sources

NAME = 'mini-imagenet'
IMAGE_SIZE = 84
CSV_FOR_SPLIT = {'train': 'train.csv', 'valid': 'val.csv', 'test': 'test.csv'}


def _read_csv(path: pathlib.Path):
  """(filenames, labels) of one split CSV; one-line errors name the file."""
  if not path.is_file():
    raise ValueError(f'mini-ImageNet split file {path} is missing; the folder '
                     'needs images/ and train.csv, val.csv, test.csv '
                     '(header "filename,label")')
  lines = path.read_text().splitlines()
  if not lines or lines[0].strip().replace(' ', '') != 'filename,label':
    raise ValueError(f'{path}: first line must be "filename,label", got '
                     f'{lines[0][:60] if lines else "an empty file"!r}')
  names, labels = [], []
  for n, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    parts = line.strip().split(',')
    if len(parts) != 2 or not parts[0] or not parts[1]:
      raise ValueError(f'{path}:{n}: expected "filename,label", got '
                       f'{line[:60]!r}')
    names.append(parts[0])
    labels.append(parts[1])
  if not names:
    raise ValueError(f'{path} lists no images')
  return names, labels


def _decode_split(root: pathlib.Path, names, out_path: pathlib.Path):
  """Decodes `names` under root/images into out_path (atomic rename)."""
  arr = np.empty((len(names), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  for i, n in enumerate(names):
    f = root / 'images' / n
    if not f.is_file():
      raise ValueError(f'mini-ImageNet image {f} is listed in the split CSV '
                       'but missing; restore it or use a complete copy')
    arr[i] = folder.read_image(f, IMAGE_SIZE)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  tmp = out_path.with_suffix(f'.tmp{np.random.randint(1 << 30)}.npy')
  np.save(tmp, arr)
  tmp.replace(out_path)


def default_root() -> pathlib.Path:
  return assets.asset_path('data', NAME)


def minimagenet_source(split: str, path=None) -> sources.ArraySource:
  """mini-ImageNet split `split` as an ArraySource (decoded once, cached).

  Example:
    src = minimagenet_source('valid')        # 16 classes
    src.images(0, [0, 1]).shape              # (2, 84, 84, 3)

  Args:
    split: 'train', 'valid' or 'test'.
    path: the dataset folder; default the asset cache's data/mini-imagenet.

  Returns:
    ArraySource with class_groups None and pixels uint8[N, 84, 84, 3].

  Raises:
    ValueError: a missing folder, CSV or image, or a malformed CSV line (the
      message names the file).
  """
  name = NAME if path is None else f'{NAME}:{path}'
  sources.check_split(name, split)
  root = pathlib.Path(path).expanduser() if path else default_root()
  if not root.is_dir():
    if path is None:
      raise ValueError(assets.missing_asset_message(root, 'mini-ImageNet'))
    raise ValueError(f'source {name!r}: {root} is not a directory; pass '
                     'mini-imagenet:PATH with PATH/images and PATH/*.csv')
  csv = root / CSV_FOR_SPLIT[split]
  names, labels = _read_csv(csv)
  key = hashlib.sha256(str(root.resolve()).encode() + b'\0' +
                       csv.read_bytes()).hexdigest()[:16]
  cached = assets.derived_cache_dir() / NAME / f'{split}-{key}.npy'
  if not cached.exists():
    _decode_split(root, names, cached)
  try:
    pixels = np.load(cached, mmap_mode='r')
  except (OSError, ValueError):  # a damaged cache entry: decode again
    _decode_split(root, names, cached)
    pixels = np.load(cached, mmap_mode='r')
  if pixels.shape != (len(names), IMAGE_SIZE, IMAGE_SIZE, 3):
    _decode_split(root, names, cached)
    pixels = np.load(cached, mmap_mode='r')
  classes = list(dict.fromkeys(labels))
  index = {c: i for i, c in enumerate(classes)}
  lab = np.array([index[l] for l in labels])
  positions = [np.flatnonzero(lab == c) for c in range(len(classes))]
  return sources.ArraySource(name=name, split=split, classes=classes,
                             class_groups=None, pixels=pixels,
                             positions=positions)
