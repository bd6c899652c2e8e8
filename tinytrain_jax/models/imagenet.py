"""ImageNet evaluation transform of the model zoo (for checking pretrained weights)."""
import math

import numpy as np
from PIL import Image


def eval_transform(image, resolution: int = 128, crop_ratio: float = 0.875):
  """uint8[H, W, 3] RGB photo -> f32[R, R, 3] in [-1, 1].

  Resize the shorter side to ceil(R / 0.875) (bilinear), centre-crop R, then
  x = pixel / 127.5 - 1 (the zoo's mean 0.5 / std 0.5 normalisation).
  """
  im = Image.fromarray(np.asarray(image, np.uint8)).convert('RGB')
  size = int(math.ceil(resolution / crop_ratio))
  w, h = im.size
  nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
  im = im.resize((nw, nh), Image.BILINEAR)
  top, left = int(round(
      (nh - resolution) / 2)), int(round((nw - resolution) / 2))
  im = im.crop((left, top, left + resolution, top + resolution))
  return np.asarray(im, np.float32) / 127.5 - 1.0
