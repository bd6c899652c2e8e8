"""Forward passes over chunks of the batch, one chunk after the other.

XLA:CPU allocates a compiled program's whole temporary arena at each call;
glibc serves an allocation past its mmap threshold (at most 32 MB) with a
fresh `mmap`, so a whole-batch forward page-faults its large activations in
again at every call (docs/devices.md, "Host memory"). Run as a `lax.map` over
chunks whose largest activation is about `CHUNK_BYTES`, the program's arena
is a chunk's, glibc reuses it from its heap, and more of each layer's input
is still in the CPU's cache. Measured on the 2-core development CPU (L2 1 MB
per core, L3 32 MB), glibc's default settings, median ms of the features of
25 / 100 images at 128 px, by chunk budget (MB of the largest activation):

  backbone          4 MB      8 MB      12 MB     16 MB    whole batch
  mcunet-5fps     27 / 114  21 / 106  21 /  94  21 /  95   20 / 141
  mbv2-w0.35      26 /  93  23 /  74  21 /  88  20 /  76   32 / 120
  proxyless-w0.3  27 / 134  23 / 154  20 /  99  21 / 124   21 / 144

(one run each, repeats spread 10-20 %). With glibc told to keep freed memory
(MALLOC_MMAP_MAX_=0 and friends, as the peer benchmark runs) the whole batch
took 102 / 88 / 96 ms at 100 images and the best chunking 91 / 88 / 82 ms:
most of the gain is the allocator's, a little the cache's. Each image's
features come from the same ops either way; only the matmuls' row blocking
differs, so results agree to float rounding (1e-6 relative).

Inside a gradient each chunk is rematerialised (`jax.checkpoint`): the
backward runs the chunk's forward again instead of holding the whole batch's
activations (stacked residuals of an un-rematerialised `lax.map` made
mcunet's whole-net gradient 1.3-1.5x slower than the plain batch). The
fine-tune and meta-train steps therefore do not use it (it would change
their FLOPs and memory); forward-only passes (evaluation features, the
frozen prefix) do.

Only on the CPU backend: a GPU or TPU program keeps its arena on the device
between calls, and a chunked batch there only runs less in parallel
(`chunk_size` returns the whole batch).
"""
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from tinytrain_jax.models.spec import ModelSpec

# Activation bytes of one chunk's largest layer input or output (see the
# module docstring for the measurements that chose it).
CHUNK_BYTES = 12 << 20


def image_bytes(spec: ModelSpec, start_block: int = 0) -> int:
  """fp32 bytes of the largest conv input or output per image, over the
  convs that run from block `start_block` on."""
  convs = [c for c in spec.convs if _runs(spec, c, start_block)]
  return 4 * max(max(c.input_elements, c.output_elements) for c in convs)


def _runs(spec, conv, start_block):
  if conv.block is not None:
    return conv.block >= start_block
  if conv.index == 0:  # the stem runs with block 0
    return start_block == 0
  return True  # the feature-mix conv


def chunk_size(n: int, bytes_per_image: int,
               chunk_bytes: Optional[int] = None) -> int:
  """Images per chunk for a batch of n: the fewest chunks whose largest
  activation fits in `chunk_bytes` (default CHUNK_BYTES), spread evenly (the
  last chunk is zero-padded to the same size). Off the CPU backend, n."""
  budget = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
  if n <= 0:
    return 1
  if jax.default_backend() != 'cpu':
    return n
  chunks = max(1, math.ceil(n * bytes_per_image / budget))
  return math.ceil(n / min(chunks, n))


def over_chunks(fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                chunk: int) -> jax.Array:
  """fn over chunks of x's leading axis, in sequence: f32[B, ...] -> [B, ...].

  fn must treat each leading-axis row independently (a BN-folded or
  eval-mode network does). The batch is zero-padded to a multiple of
  `chunk` and the padded rows dropped; a padded row's output gets no
  gradient. Under `jax.grad` each chunk is rematerialised.
  """
  n = x.shape[0]
  if chunk >= n:
    return fn(x)
  k = -(-n // chunk)
  xp = jnp.pad(x, ((0, k * chunk - n),) + ((0, 0),) * (x.ndim - 1))
  ys = jax.lax.map(jax.checkpoint(fn), xp.reshape((k, chunk) + x.shape[1:]))
  return ys.reshape((k * chunk,) + ys.shape[2:])[:n]
