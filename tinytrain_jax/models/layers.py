"""Conv formulations, each numerically equal to `lax.conv_general_dilated`.

XLA's CPU grouped-conv path is slow, especially its backward (measured on 2 cores,
mcunet-5fps-shaped net, 100 images at 128 px: fwd+bwd 3.35 s with lax depthwise
convs vs about 1.0 s with shifted slices). So `impl='fast'` writes depthwise convs
as a sum of k*k strided slices scaled per channel and 1x1 convs as matmuls; the
stem stays a lax conv. `impl='lax'` uses `lax.conv_general_dilated` everywhere;
the cost model traces that variant so every conv is one primitive.
"""
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('fast', 'lax')


def _check_impl(impl):
  if impl not in IMPLS:
    raise ValueError(f'conv impl must be one of {IMPLS}, got {impl!r}')


def conv_lax(x, kernel, stride: int, groups: int = 1):
  """NHWC x HWIO conv with symmetric k//2 padding (also for stride 2).

  Args:
    x: f32[N, H, W, C_in].
    kernel: f32[k, k, C_in / groups, C_out].
    stride: static int.
    groups: static int (C_in for depthwise).

  Returns:
    f32[N, H_out, W_out, C_out].
  """
  k = kernel.shape[0]
  p = k // 2
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), ((p, p), (p, p)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups)


def depthwise_shift(x, kernel, stride: int):
  """Depthwise conv as a sum of k*k strided slices times per-channel weights.

  Args:
    x: f32[N, H, W, C].
    kernel: f32[k, k, 1, C].
    stride: static int.
  """
  k = kernel.shape[0]
  p = k // 2
  n, h, w, c = x.shape
  ho = (h + 2 * p - k) // stride + 1
  wo = (w + 2 * p - k) // stride + 1
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  y = None
  for i in range(k):
    for j in range(k):
      patch = lax.slice(xp, (0, i, j, 0),
                        (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1,
                         c), (1, stride, stride, 1))
      term = patch * kernel[i, j, 0]
      y = term if y is None else y + term
  return y


def pointwise_matmul(x, kernel):
  """1x1 conv as a matmul: f32[N,H,W,C_in] x f32[1,1,C_in,C_out]."""
  return jnp.einsum('nhwc,co->nhwo', x, kernel[0, 0])


def conv(x, kernel, stride: int, depthwise: bool, impl: str = 'fast'):
  """Dispatches one bias-free conv to the chosen formulation."""
  _check_impl(impl)
  k = kernel.shape[0]
  if impl == 'lax':
    return conv_lax(x, kernel, stride, x.shape[-1] if depthwise else 1)
  if depthwise:
    return depthwise_shift(x, kernel, stride)
  if k == 1 and stride == 1:
    return pointwise_matmul(x, kernel)
  return conv_lax(x, kernel, stride)


def relu6(x):
  return jnp.clip(x, 0.0, 6.0)


def batchnorm(x, scale, bias, mean, var, eps: float, train: bool,
              momentum: float = 0.9):
  """BatchNorm over N, H, W. Returns (y, (new_mean, new_var)).

  momentum 0.9 = PyTorch's 0.1 (the zoo models' setting).
  """
  if train:
    batch_mean = jnp.mean(x, axis=(0, 1, 2))
    batch_var = jnp.var(x, axis=(0, 1, 2))
    new_mean = momentum * mean + (1 - momentum) * lax.stop_gradient(batch_mean)
    new_var = momentum * var + (1 - momentum) * lax.stop_gradient(batch_var)
    mean, var = batch_mean, batch_var
  else:
    new_mean, new_var = mean, var
  y = (x - mean) * (scale * lax.rsqrt(var + eps)) + bias
  return y, (new_mean, new_var)


def scope(name):
  """Named scope so jaxpr equations carry the layer name (used by the cost
  walker to attribute primitives, forward and backward, to layers)."""
  return jax.named_scope(name.replace('/', '.'))
