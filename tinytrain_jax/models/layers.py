"""Conv formulations, each numerically equal to `lax.conv_general_dilated`.

Chosen by measurement on a 2-core CPU (XLA's CPU grouped-conv path is slow,
its backward especially: mcunet-5fps-shaped net, 100 images at 128 px, fwd+bwd
3.35 s with lax depthwise convs vs about 1.0 s with shifted slices):

* depthwise k x k (any k, stride 1 or 2): `depthwise_shift`, a sum of k*k
  strided slices of the padded input scaled per channel (one fused loop), with
  a hand-written backward (`jax.custom_vjp`):
  - input gradient: the same shifted sum over the padded output gradient with
    the flipped kernel (stride 1) or, for stride 2, one shifted sum per output
    parity (polyphase) interleaved, instead of autodiff's k*k interior-padded
    pads evaluated at every input position (`depthwise_input_grad`);
  - kernel gradient: the k*k per-channel sums of slice * gradient as one
    variadic reduce, over chunks of the batch in a `lax.scan`, so XLA reads
    each chunk once with the slices fused in (`depthwise_kernel_grad`; k*k
    separate reduces each materialised their slice, 2-4x slower, and
    autodiff's grouped conv is slower still). It also compiles faster:
    mcunet-5fps's whole-net gradient, 25 images at 64 px, 15 s -> 7.5 s to
    compile and 155 -> 100 ms to run.
* depthwise on a small map (H*W <= (stride*k)^2: the 4x4 maps of the last
  stage, 7x7 stride 2 on 8x8): `depthwise_dense`, one matmul per channel
  against the H*W x Ho*Wo matrix of kernel taps; fewer multiply-adds than
  k*k taps and no zero-padded copy of the input (proxyless-w0.3's TinyTrain
  step at 128 px held a 10x10 padded copy of each 4x4 map). Its operands
  are transposed to channel-major explicitly (see the function).
* 1x1 stride 1: a matmul (`pointwise_matmul`).
* everything else (the 3x3 stride-2 stem): `conv_dense`, a
  `lax.conv_general_dilated` forward whose kernel gradient is a matmul over
  im2col `patches`, per batch chunk of 4 MB of patches (`dense_kernel_grad`).
  Inside the fine-tune `lax.scan`, XLA CPU leaves a convolution's kernel
  gradient on its generic conv path (it moves convs to its fast kernels only
  outside loops): 2 s per step for the stem at 100 images, 128 px, against
  82 ms as one matmul (FullTrain's scanned task at 128 px: 13.2 -> 8.2 s)
  and 23 ms per chunk.

These are `impl='cpu'`. `impl='lax'` uses `lax.conv_general_dilated`
everywhere; the cost model traces that variant so every conv is one
primitive. `impl='fast'` (the default everywhere) resolves per backend when a
function is traced (`resolve_impl`): 'cpu' on a CPU, 'lax' on a GPU or TPU,
where XLA hands convolutions to cuDNN or the TPU's own conv units and the
formulations above were never chosen by measurement
(`python -m benchmarks.model_speed` times both on any backend). Tests check
'cpu' against 'lax' in forward and gradient.
"""
import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

IMPLS = ('fast', 'cpu', 'lax')


def _check_impl(impl):
  if impl not in IMPLS:
    raise ValueError(f'conv impl must be one of {IMPLS}, got {impl!r}')


def resolve_impl(impl: str, backend: Optional[str] = None) -> str:
  """'fast' -> 'cpu' on the CPU backend, 'lax' on others; 'cpu' and 'lax'
  stay. backend defaults to `jax.default_backend()`."""
  _check_impl(impl)
  if impl != 'fast':
    return impl
  backend = jax.default_backend() if backend is None else backend
  return 'cpu' if backend == 'cpu' else 'lax'


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
  return lax.conv_general_dilated(x, kernel, (stride, stride), ((p, p), (p, p)),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  feature_group_count=groups)


# Batch chunk of the depthwise kernel gradient: the largest divisor of the
# batch whose output-gradient slice fits in this many bytes. Measured on the
# 2-core CPU with the variadic reduce (100 images, kernel gradient alone, min
# of 9, ms for 256 KB / 1 MB / 4 MB): 3x3 at 64 px x 16 ch 32 / 12 / 13,
# 3x3 at 32 px x 48 ch 27 / 15 / 13, 3x3 at 16 px x 120 ch 7.1 / 6.1 / 11,
# 7x7/s2 at 32 px x 48 ch 14 / 16 / 20, 7x7 at 8 px x 160 ch 9.4 / 11 / 17;
# whole-batch slices are 2-4x slower.
DW_GRAD_CHUNK_BYTES = 1 << 20


def _out_size(h: int, k: int, stride: int) -> int:
  return (h + 2 * (k // 2) - k) // stride + 1


def _tap(xp, i: int, j: int, stride: int, ho: int, wo: int):
  """xp[:, s*h + i, s*w + j, :] for h < ho, w < wo (xp already padded)."""
  n, c = xp.shape[0], xp.shape[3]
  return lax.slice(xp, (0, i, j, 0),
                   (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                   (1, stride, stride, 1))


def _shifted_sum(xp, kernel, stride: int, ho: int, wo: int):
  """sum_ij xp[:, s*h + i, s*w + j, :] * kernel[i, j, 0] (xp already padded)."""
  k = kernel.shape[0]
  y = None
  for i in range(k):
    for j in range(k):
      term = _tap(xp, i, j, stride, ho, wo) * kernel[i, j, 0]
      y = term if y is None else y + term
  return y


def _depthwise_forward(x, kernel, stride: int):
  k = kernel.shape[0]
  p = k // 2
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return _shifted_sum(xp, kernel, stride, _out_size(x.shape[1], k, stride),
                      _out_size(x.shape[2], k, stride))


def _phase(a: int, k: int, m: int, size_out: int):
  """Taps, offset and padding of output-gradient rows feeding input rows 2m+a.

  Input row u = 2h + i - p gets dy[h] * W[i]; for u = 2m + a the taps are
  i = 2t + r (r = (a + p) mod 2) and h = m + e - t, e = (a + p - r) / 2.
  """
  p = k // 2
  r = (a + p) % 2
  e = (a + p - r) // 2
  taps = tuple(range(r, k, 2))
  lo = max(0, len(taps) - 1 - e)
  hi = max(0, m - 1 + e - (size_out - 1))
  return taps, e, lo, hi


def depthwise_input_grad(dy, kernel, stride: int, h: int, w: int):
  """d(depthwise conv)/dx applied to dy: f32[N, Ho, Wo, C] -> f32[N, h, w, C].

  Stride 1: the conv of dy with the flipped kernel (same padding k//2).
  Stride 2: polyphase; each parity (a, b) of the input rows/columns gets a
  shifted sum over the taps of matching parity, then the four are
  interleaved. Both do k*k multiply-adds per output-gradient element.
  """
  k = kernel.shape[0]
  if stride == 1:
    p = k // 2
    dyp = jnp.pad(dy, ((0, 0), (p, p), (p, p), (0, 0)))
    return _shifted_sum(dyp, kernel[::-1, ::-1], 1, h, w)
  if stride != 2:
    raise ValueError(f'depthwise stride must be 1 or 2, got {stride}')
  n, ho, wo, c = dy.shape
  mh, mw = (h + 1) // 2, (w + 1) // 2
  rows = []
  for a in (0, 1):
    ti, ei, loi, hii = _phase(a, k, mh, ho)
    cols = []
    for b in (0, 1):
      tj, ej, loj, hij = _phase(b, k, mw, wo)
      dyp = jnp.pad(dy, ((0, 0), (loi, hii), (loj, hij), (0, 0)))
      acc = None
      for t, i in enumerate(ti):
        for u, j in enumerate(tj):
          si, sj = ei - t + loi, ej - u + loj
          term = lax.slice(dyp, (0, si, sj, 0),
                           (n, si + mh, sj + mw, c)) * kernel[i, j, 0]
          acc = term if acc is None else acc + term
      cols.append(acc)
    rows.append(jnp.stack(cols, axis=3))  # [N, mh, mw, 2, C]
  full = jnp.stack(rows, axis=2)  # [N, mh, 2, mw, 2, C]
  return full.reshape(n, 2 * mh, 2 * mw, c)[:, :h, :w, :]


def _batch_chunk(n: int, bytes_per_image: int, chunk_bytes: int) -> int:
  best = 1
  for d in range(1, n + 1):
    if n % d == 0 and d * bytes_per_image <= chunk_bytes:
      best = d
  return best


def _sum_over_chunks(fn, arrays, cb: int):
  """sum of fn(*chunk) over batch chunks of cb images of `arrays` (same
  leading size), in a `lax.scan`; fn(*arrays) when one chunk is the batch."""
  n = arrays[0].shape[0]
  if cb == n:
    return fn(*arrays)
  chunks = tuple(a.reshape((n // cb, cb) + a.shape[1:]) for a in arrays)
  out = jax.eval_shape(fn, *(a[0] for a in chunks))
  total, _ = lax.scan(lambda acc, t: (acc + fn(*t), None),
                      jnp.zeros(out.shape, out.dtype), chunks)
  return total


def _tap_sums(prods):
  """f32[k*k, C]: each product summed over N, H, W, as one variadic reduce.

  XLA fuses the strided slices into a single pass over the chunk; separate
  reduces each got their own materialised slice, all live at once (2-4x
  slower, measured).
  """
  zero = jnp.zeros((), prods[0].dtype)
  sums = lax.reduce(prods, (zero,) * len(prods),
                    lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 1, 2))
  return jnp.stack(sums)


def depthwise_kernel_grad(x, dy, k: int, stride: int,
                          chunk_bytes: Optional[int] = None):
  """d(depthwise conv)/dkernel applied to dy.

  Args:
    x: f32[N, H, W, C], the conv input.
    dy: f32[N, Ho, Wo, C], the output gradient.
    k: kernel size; stride: 1 or 2 (static).
    chunk_bytes: batch chunk size in bytes of dy; None = DW_GRAD_CHUNK_BYTES.

  Returns:
    f32[k, k, 1, C]: sum over n, h, w of xp[n, s*h+i, s*w+j, c] * dy[n,h,w,c]
    (xp: x zero-padded by k // 2).
  """
  p = k // 2
  n, h, w, c = x.shape
  _, ho, wo, _ = dy.shape
  pad = ((0, 0), (p, p), (p, p), (0, 0))
  if stride == 1:
    # sum_u x[u] * dy[u + p - i]: slices of the padded output gradient against
    # the unpadded input. With the input padded instead, XLA shares that pad
    # with the forward's and keeps the padded input live from the forward to
    # here, (h + k - 1)^2 / h^2 times the input's bytes; the padded dy is a
    # backward-only transient (mcunet's TinyTrain step at 128 px: 20.0 ->
    # 18.9 MB temp). Stride 2 keeps the padded input: spreading dy to the
    # input's grid costs 4x the products and, there, saved nothing (XLA
    # also reads the padded input to recompute the relu6 mask).
    def taps(sliced, other):
      dp = jnp.pad(sliced, pad)
      return _tap_sums(
          tuple(
              _tap(dp, 2 * p - i, 2 * p - j, 1, h, w) * other
              for i in range(k)
              for j in range(k)))

    sliced, other = dy, x
  else:

    def taps(sliced, other):
      return _tap_sums(
          tuple(
              _tap(sliced, i, j, stride, ho, wo) * other
              for i in range(k)
              for j in range(k)))

    sliced, other = jnp.pad(x, pad), dy

  cb = _batch_chunk(n, ho * wo * c * dy.dtype.itemsize, chunk_bytes or
                    DW_GRAD_CHUNK_BYTES)
  return _sum_over_chunks(taps, (sliced, other), cb).reshape(k, k, 1, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_shift(x, kernel, stride: int):
  """Depthwise conv as a sum of k*k strided slices times per-channel weights.

  Args:
    x: f32[N, H, W, C].
    kernel: f32[k, k, 1, C].
    stride: static int, 1 or 2.

  Returns:
    f32[N, Ho, Wo, C], equal to `conv_lax(x, kernel, stride, C)`; its VJP is
    `depthwise_input_grad` and `depthwise_kernel_grad` (unused halves are
    removed by XLA when x or the kernel is frozen).
  """
  return _depthwise_forward(x, kernel, stride)


def _depthwise_fwd(x, kernel, stride):
  return _depthwise_forward(x, kernel, stride), (x, kernel)


def _depthwise_bwd(stride, res, dy):
  x, kernel = res
  return (depthwise_input_grad(dy, kernel, stride, x.shape[1], x.shape[2]),
          depthwise_kernel_grad(x, dy, kernel.shape[0], stride))


depthwise_shift.defvjp(_depthwise_fwd, _depthwise_bwd)


def _tap_index(h: int, w: int, k: int, stride: int) -> np.ndarray:
  """i32[h*w, ho*wo]: the kernel tap (row-major, k*k = none) that links input
  position (u, v) to output position (uo, vo) of a k x k conv, padding k//2."""
  p = k // 2
  ho, wo = _out_size(h, k, stride), _out_size(w, k, stride)
  a = (np.arange(h)[:, None] - stride * np.arange(ho)[None, :] + p)  # [h, ho]
  b = (np.arange(w)[:, None] - stride * np.arange(wo)[None, :] + p)  # [w, wo]
  ok = (((a >= 0) & (a < k))[:, None, :, None] &
        ((b >= 0) & (b < k))[None, :, None, :])
  taps = a[:, None, :, None] * k + b[None, :, None, :]
  return np.where(ok, taps, k * k).reshape(h * w, ho * wo).astype(np.int32)


def depthwise_dense(x, kernel, stride: int):
  """Depthwise conv on a small map as one matmul per channel.

  Args:
    x: f32[N, H, W, C]; kernel: f32[k, k, 1, C]; stride: static 1 or 2.

  Returns:
    f32[N, Ho, Wo, C], equal to `conv_lax(x, kernel, stride, C)`:
    y[n, o, c] = sum_i x[n, i, c] * M[i, o, c] over the H*W input positions,
    M[i, o, c] = the kernel tap linking i to o (0 where none). H*W
    multiply-adds per output instead of k*k, no padded copy of x, and
    autodiff gives both gradients as matmuls (the kernel's through the
    transpose of the tap gather). Used where H*W <= (stride*k)^2 (`conv`).
  """
  n, h, w, c = x.shape
  k = kernel.shape[0]
  idx = _tap_index(h, w, k, stride)
  taps = jnp.concatenate([kernel.reshape(k * k, c),
                          jnp.zeros((1, c), kernel.dtype)])
  # Channel-major operands, transposed here rather than by XLA inside the
  # batched dot: its own transposes (channels minor, batch first) were
  # strided gathers fused with their producers, 2x the whole conv's time in
  # a TinyTrain step (25 images, 8x8 maps, 7x7 stride 2: 3.8 -> 1.9 ms).
  xc = jnp.transpose(x.reshape(n, h * w, c), (2, 0, 1))
  y = jnp.einsum('cni,cio->cno', xc, jnp.transpose(taps[idx], (2, 0, 1)))
  return jnp.transpose(y, (1, 2, 0)).reshape(n, _out_size(h, k, stride),
                                             _out_size(w, k, stride), c)


def dense_depthwise_wins(h: int, w: int, k: int, stride: int) -> bool:
  """Whether `conv` runs a depthwise conv as `depthwise_dense`: when the map
  has at most (stride*k)^2 positions. Measured (2-core CPU, ms forward /
  forward+both gradients, 25 images, shifted sum against dense): 4x4 maps
  7x7 384 ch 1.13 / 4.20 vs 0.74 / 1.19, 5x5 0.82 / 2.30 vs 0.54 / 0.86,
  3x3 576 ch 0.31 / 0.69 vs 1.25 / 1.89 (shifted sum wins); 8x8 maps 7x7
  stride 2 192 ch 0.72 / 2.16 vs 0.71 / 0.96, 7x7 stride 1 160 ch 1.48 /
  2.86 vs 1.96 / 2.82 (even), 3x3 0.29 / 0.83 vs 1.65 / 3.14. At 100 images
  the same order.
  """
  return h * w <= (stride * k)**2


def patches(x, k: int, stride: int):
  """im2col: f32[N, H, W, C] -> f32[N, Ho, Wo, k*k, C], the k x k windows
  (zero padding k // 2, taps in row-major kernel order) at each output."""
  p = k // 2
  n, h, w, c = x.shape
  ho, wo = _out_size(h, k, stride), _out_size(w, k, stride)
  if k == 1:
    return x[:, ::stride, ::stride, None, :]
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  return jnp.stack([_tap(xp, i, j, stride, ho, wo)
                    for i in range(k)
                    for j in range(k)], axis=3)


def conv_space_to_depth(x, kernel):
  """3x3 stride-2 conv (padding 1) of an even-sized map, as a 2x2 stride-1
  conv over the 2x2 space-to-depth blocks of the padded input.

  Args:
    x: f32[N, H, W, C] with H and W even; kernel: f32[3, 3, C, C_out].

  Returns:
    f32[N, H/2, W/2, C_out], equal to `conv_lax(x, kernel, 2)`. Block (R, S)
    holds padded rows 2R, 2R+1 and columns 2S, 2S+1, so output (h, w) reads
    blocks h..h+1 and w..w+1; the 2x2x4C kernel holds the 3x3 taps, zeros
    where a block's second row or column lies past the window. XLA CPU runs
    it 1.3-1.6x faster than the strided conv (the stem, 3 -> 16 channels:
    100 images at 128 px 14.3 -> 11.1 ms, 25 at 128 px 4.7 -> 3.0, 25 at
    64 px 1.3 -> 0.8).
  """
  n, h, w, c = x.shape
  co = kernel.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  blocks = xp.reshape(n, h // 2 + 1, 2, w // 2 + 1, 2, c).transpose(
      0, 1, 3, 2, 4, 5).reshape(n, h // 2 + 1, w // 2 + 1, 4 * c)
  # [3, 3] taps -> [block row, block col, row in block, col in block]
  k4 = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0))).reshape(
      2, 2, 2, 2, c, co).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, co)
  return lax.conv_general_dilated(blocks, k4, (1, 1), 'VALID',
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _dense_forward(x, kernel, stride: int):
  k = kernel.shape[0]
  if (k, stride) == (3, 2) and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
    return conv_space_to_depth(x, kernel)
  return conv_lax(x, kernel, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_dense(x, kernel, stride: int):
  """A dense k x k conv (the stem): `conv_lax` forward, kernel gradient as
  matmuls over `patches` (`dense_kernel_grad`).

  Inside the fine-tune `lax.scan` XLA CPU leaves a convolution's kernel
  gradient in its generic conv path (it rewrites it to its fast kernels only
  outside loops): the stem's took 2 s per step for 100 images at 128 px,
  the matmul 41 ms. The forward stays a convolution (2.5x faster than the
  matmul here). The input gradient is `conv_lax`'s (the stem's input is the
  images, so it is never needed in training). A 3x3 stride-2 forward on an
  even-sized map runs as `conv_space_to_depth`.
  """
  return _dense_forward(x, kernel, stride)


def _conv_dense_fwd(x, kernel, stride):
  return _dense_forward(x, kernel, stride), (x, kernel)


# Batch chunk of the dense kernel gradient: the largest divisor of the batch
# whose im2col patches fit in this many bytes. Measured on the 2-core CPU
# (the stem, 3x3 stride 2, 3 -> 16 channels; ms by images per chunk, patch
# MB in brackets): 100 images at 128 px 1 (0.4) 36, 2 (0.8) 22, 5 (2.1) 23,
# 10 (4.2) 28, 25 (10.5) 37, all 100 (42) 80; 25 images at 128 px 1 9.9,
# 5 6.8, 25 11.5; 100 at 64 px 10 (1.1) 6.2, 25 (2.6) 7.0, 100 10.1 (each
# chunk then a 4-D einsum, which XLA ran behind transposes). As a 2-D matmul
# the whole batch took 25.6 ms against 21.6 in chunks, and held the 42 MB of
# patches at once.
DENSE_GRAD_CHUNK_BYTES = 4 << 20


def dense_kernel_grad(x, dy, k: int, stride: int,
                      chunk_bytes: Optional[int] = None):
  """d(dense k x k conv)/dkernel applied to dy: f32[k, k, C_in, C_out].

  One matmul of the im2col `patches` against dy per batch chunk, summed in
  a `lax.scan` (chunk: DENSE_GRAD_CHUNK_BYTES of patches when None).
  """
  n, _, _, ci = x.shape
  _, ho, wo, co = dy.shape

  def grad(x, dy):  # 2-D, as in `pointwise_matmul`
    m = x.shape[0] * ho * wo
    return (patches(x, k, stride).reshape(m, k * k * ci).T @ dy.reshape(
        m, co)).reshape(k * k, ci, co)

  cb = _batch_chunk(n, ho * wo * k * k * ci * x.dtype.itemsize, chunk_bytes or
                    DENSE_GRAD_CHUNK_BYTES)
  return _sum_over_chunks(grad, (x, dy), cb).reshape(k, k, ci, co)


def _conv_dense_bwd(stride, res, dy):
  x, kernel = res
  dk = dense_kernel_grad(x, dy, kernel.shape[0], stride)
  # The conv is linear in x: transpose it, no primal recomputed.
  dx, = jax.linear_transpose(lambda x: conv_lax(x, kernel, stride), x)(dy)
  return dx, dk


conv_dense.defvjp(_conv_dense_fwd, _conv_dense_bwd)


def pointwise_matmul(x, kernel):
  """1x1 conv as a matmul: f32[N,H,W,C_in] x f32[1,1,C_in,C_out].

  x is flattened to [N*H*W, C_in] first (free in row-major order), so the
  kernel gradient is one 2-D matmul. Differentiated as a 4-D einsum it
  contracted N, H and W and XLA CPU transposed both operands first: 100
  images, 64x64 map, 8 -> 48 channels, 23.7 ms against 5.8 (and 14.1
  against 5.4 for 16 -> 16).
  """
  n, h, w, c = x.shape
  return (x.reshape(n * h * w, c) @ kernel[0, 0]).reshape(n, h, w, -1)


def conv(x, kernel, stride: int, depthwise: bool, impl: str = 'fast'):
  """Dispatches one bias-free conv to the chosen formulation."""
  impl = resolve_impl(impl)
  k = kernel.shape[0]
  if impl == 'lax':
    return conv_lax(x, kernel, stride, x.shape[-1] if depthwise else 1)
  if depthwise:
    if dense_depthwise_wins(x.shape[1], x.shape[2], k, stride):
      return depthwise_dense(x, kernel, stride)
    return depthwise_shift(x, kernel, stride)
  if k == 1 and stride == 1:
    return pointwise_matmul(x, kernel)
  return conv_dense(x, kernel, stride)


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
