"""A folder of images as a few-shot source: `root/<class>/*.jpg|png`.

Name: 'dir:<path>' (see sources.get_source). Every sub-folder with at least
one image is a class (class names = folder names, sorted). Splits:
  * `root/train/`, `root/valid/` and `root/test/` (any of them) present: each
    split reads its own folder, `root/<split>/<class>/*.jpg` (a split whose
    folder is missing raises, naming it);
  * otherwise every class of `root` serves whichever split is asked for, so
    one folder can feed meta-training, dev episodes and evaluation. Say so
    when you report results: such runs share classes across splits.
Images are decoded lazily with PIL, converted to RGB and resized (bilinear)
to `image_size` x `image_size` on read, so `images()` always returns
uint8[n, image_size, image_size, 3].
"""
import pathlib
from typing import Sequence
import warnings

import numpy as np
from PIL import Image

from tinytrain_jax.data import sources

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.ppm')


def read_image(path: pathlib.Path, image_size: int) -> np.ndarray:
  """Decodes one file to uint8[image_size, image_size, 3].

  Raises:
    ValueError: the file is not a readable image, or larger than PIL's
      decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`; PIL only warns
      between 1x and 2x of it, we refuse): one line naming the file.
  """
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      with Image.open(path) as img:
        img = img.convert('RGB').resize((image_size, image_size),
                                        Image.BILINEAR)
        return np.asarray(img, np.uint8)
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ValueError(f'cannot read image {path}: {" ".join(str(e).split())}; '
                     'downscale or remove the file') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise ValueError(f'cannot read image {path}: {type(e).__name__}: {e}; '
                     'delete or replace the file') from None


class FolderSource:
  """Classes = sub-folders of `root`, images read lazily (see module doc).

  Example:
    src = FolderSource('/data/my_task', 'test', image_size=128)
  """

  def __init__(self, root: str, split: str = 'test', image_size: int = 128):
    sources.check_split(f'dir:{root}', split)
    self.name = f'dir:{root}'
    self.split = split
    self.class_groups = None
    self.image_size = image_size
    path = pathlib.Path(root).expanduser()
    if not path.is_dir():
      raise ValueError(f'source {self.name!r}: {path} is not a directory; '
                       'pass --source=dir:PATH with PATH/<class>/*.jpg|png')
    if any((path / s).is_dir() for s in sources.SPLITS):
      path = path / split
      if not path.is_dir():
        raise ValueError(f'source {self.name!r} has per-split folders but no '
                         f'{path}; add it or remove the split folders')
    self.split_root = path
    self._files = []
    self.classes = []
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
      files = sorted(f for f in sub.iterdir()
                     if f.is_file() and f.suffix.lower() in EXTENSIONS)
      if files:
        self.classes.append(sub.name)
        self._files.append(files)
    if not self.classes:
      raise ValueError(f'source {self.name!r} has no class folders with '
                       f'images ({", ".join(EXTENSIONS)}); lay it out as '
                       f'{path}/<class>/<image>.jpg')

  def num_images(self, class_index: int) -> int:
    return len(self._files[class_index])

  def images(self, class_index: int, indices: Sequence[int]) -> np.ndarray:
    files = self._files[class_index]
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    sources.check_indices(self.name, self.classes[class_index], len(files), idx)
    out = np.empty((idx.size, self.image_size, self.image_size, 3), np.uint8)
    for j, i in enumerate(idx):
      out[j] = read_image(files[i], self.image_size)
    return out
