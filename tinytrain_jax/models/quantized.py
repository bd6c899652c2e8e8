"""Integer simulation of tiny-training's int8 model (per-channel weight scales,
per-tensor activation scales and zero points, rounding and int8 clipping).

It mirrors tiny-training's QuantizedConv2d / QuantizedElementwise ops on float64
host arrays: it exists to check the dequantised float network, not to train.
"""
import numpy as np

from tinytrain_jax.models.pretrained import npz_prefix
from tinytrain_jax.models.spec import ModelSpec


def _conv_np(x, w, stride, groups):
  """NHWC x OIHW conv, symmetric k//2 padding (float64 numpy)."""
  n, h, wd, c = x.shape
  o, _, k, _ = w.shape
  p = k // 2
  ho, wo = (h + 2 * p - k) // stride + 1, (wd + 2 * p - k) // stride + 1
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  y = np.zeros((n, ho, wo, o))
  for i in range(k):
    for j in range(k):
      patch = xp[:, i:i + stride * (ho - 1) + 1:stride,
                 j:j + stride * (wo - 1) + 1:stride, :]
      y += patch @ w[:, :, i, j].T if groups == 1 else patch * w[:, 0, i, j]
  return y


def apply_int8(spec: ModelSpec, arrays, images) -> np.ndarray:
  """Real-valued ImageNet logits of the int8 model.

  Args:
    spec: a BN-folded spec with num_classes=1000 and no feature mix.
    arrays: raw npz arrays (`pretrained.load_arrays`).
    images: f32[B, R, R, 3] in [-1, 1] (int8 input = round(x * 127.5)).

  Returns:
    f64[B, 1000] logits before output rounding.
  """
  if spec.feature_mix or spec.num_classes != 1000:
    raise ValueError('apply_int8 needs the original int8 model: '
                     'feature_mix=False, num_classes=1000')

  def qconv(prefix, q, stride, groups, final=False):
    a = {
        k: arrays[f'{prefix}/{k}']
        for k in ('weight', 'bias', 'w_scales', 'x_scale', 'x_zero', 'y_scale',
                  'y_zero')
    }
    ws = a['w_scales'].astype(np.float64)
    xs, xz = float(a['x_scale']), float(a['x_zero'])
    acc = _conv_np(q - xz, a['weight'].astype(np.float64), stride, groups)
    acc += a['bias'].astype(np.float64)
    if final:
      return acc * ws * xs
    return np.clip(
        np.round(acc * (xs * ws / float(a['y_scale']))) + float(a['y_zero']),
        -128, 127)

  q = np.round(np.asarray(images, np.float64) * 127.5)
  convs = spec.convs
  q = qconv('first_conv', q, convs[0].stride, 1)
  for b, blk in enumerate(spec.blocks):
    inp = q
    for conv in (c for c in convs if c.block == b):
      q = qconv(npz_prefix(conv.name), q, conv.stride, conv.groups)
    if blk.residual:
      r = {
          k: float(arrays[f'blocks/{b}/residual/{k}'])
          for k in ('x_scale', 'x_zero', 'y_scale', 'y_zero')
      }
      pw2 = f'blocks/{b}/pointwise2/'
      s = ((inp - r['x_zero']) * r['x_scale'] +
           (q - float(arrays[pw2 + 'y_zero'])) * float(arrays[pw2 + 'y_scale']))
      q = np.clip(np.round(s / r['y_scale']) + r['y_zero'], -128, 127)
  pooled = np.round(q.mean(axis=(1, 2), keepdims=True))
  return qconv('classifier', pooled, 1, 1, final=True)[:, 0, 0, :]
