"""Pure-function inverted-residual CNN: `init` and `apply` over plain pytrees.

Parameters are nested dicts keyed by layer path, kernels in HWIO so the output
channel is always the last axis:

  params['first_conv'] = {'kernel': f32[3,3,3,16], 'bias': f32[16]}
  params['blocks_3']['depthwise'] = {'kernel': f32[7,7,1,48], 'bias': f32[48]}
  params['feature_mix'] = {...}          # when spec.feature_mix
  params['classifier'] = {'kernel': f32[C,K], 'bias': f32[K]}  # when num_classes

BN variant (spec.batchnorm): each conv has {'kernel', 'scale', 'bias'} and
`state[path] = {'mean', 'var'}`; otherwise BN is folded into 'bias' and the state
is an empty dict.
"""
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax import tree_paths
from tinytrain_jax.models import batch_chunks
from tinytrain_jax.models import layers
from tinytrain_jax.models.spec import ConvLayer, ModelSpec

Params = Dict[str, Any]


class ModelOutput(NamedTuple):
  """Result of `apply`.

  features: f32[B, spec.feature_dim], globally average-pooled.
  logits: f32[B, num_classes] or None without a classifier.
  state: BN statistics (updated when train=True), {} for folded models.
  activations: {conv name: {'in': f32[B,H,W,C_in], 'out': f32[B,H',W',C_out]}}
    when capture=True ('out' is the pre-activation conv output incl. bias/BN),
    else None.
  """
  features: jax.Array
  logits: Optional[jax.Array]
  state: Params
  activations: Optional[Dict[str, Dict[str, jax.Array]]]


def _he_normal(key, shape, fan_out):
  return jax.random.normal(key, shape, jnp.float32) * np.sqrt(2.0 / fan_out)


def init_conv(key, spec: ModelSpec, conv: ConvLayer):
  """He-normal (fan-out, as torchvision MobileNetV2) kernel; zero bias."""
  fan_out = conv.kernel * conv.kernel * conv.c_out // conv.groups
  p = {
      'kernel': _he_normal(key, conv.kernel_shape, fan_out),
      'bias': jnp.zeros((conv.c_out,), jnp.float32)
  }
  s = {}
  if spec.batchnorm:
    p['scale'] = jnp.ones((conv.c_out,), jnp.float32)
    s = {
        'mean': jnp.zeros((conv.c_out,), jnp.float32),
        'var': jnp.ones((conv.c_out,), jnp.float32)
    }
  return p, s


def init(spec: ModelSpec, key: jax.Array):
  """Randomly initialised (params, state) for `spec`.

  Example:
    params, state = init(model_spec('mcunet-5fps'), jax.random.PRNGKey(0))
  """
  params, state = {}, {}
  keys = jax.random.split(key, len(spec.convs) + 1)
  for conv, k in zip(spec.convs, keys):
    p, s = init_conv(k, spec, conv)
    params = tree_paths.replace(params, conv.name, p)
    if s:
      state = tree_paths.replace(state, conv.name, s)
  if spec.num_classes:
    bound = 1.0 / np.sqrt(spec.feature_dim)
    params['classifier'] = {
        'kernel':
            jax.random.uniform(keys[-1], (spec.feature_dim, spec.num_classes),
                               jnp.float32, -bound, bound),
        'bias':
            jnp.zeros((spec.num_classes,), jnp.float32)
    }
  return params, state


def _apply_conv(spec, conv, p, x, *, state, train, impl, delta, in_probe,
                out_probe):
  """conv -> (+ channel-sparse delta) -> bias or BN -> (+probe). Pre-activation."""
  if in_probe is not None:
    x = x + in_probe
  y = layers.conv(x, p['kernel'], conv.stride, conv.depthwise, impl)
  if delta is not None:
    # Channel-sparse update: only the selected input channels (= channels of a
    # depthwise conv) are trained, through a small separate kernel, so the
    # backward only needs x[..., idx] and computes the selected slice of dW.
    idx, dk = delta['index'], delta['kernel']
    xs = jnp.take(x, idx, axis=-1)
    if conv.depthwise:
      y = y.at[..., idx].add(layers.conv(xs, dk, conv.stride, True, impl))
    else:
      y = y + layers.conv(xs, dk, conv.stride, False, impl)
  new_s = None
  if spec.batchnorm:
    s = tree_paths.get(state, conv.name)
    y, (m, v) = layers.batchnorm(y, p['scale'], p['bias'], s['mean'], s['var'],
                                 spec.bn_eps, train)
    new_s = {'mean': m, 'var': v}
  else:
    y = y + p['bias']
  if out_probe is not None:
    y = y + out_probe
  return x, y, new_s


def block_convs(spec: ModelSpec) -> Dict[int, List[ConvLayer]]:
  """{block index: its convs in order} (the stem and the mix conv excluded)."""
  by = {}
  for c in spec.convs:
    if c.block is not None:
      by.setdefault(c.block, []).append(c)
  return by


def folded_features(
    spec: ModelSpec, params: Params, images: jax.Array,
    after_block: Callable[[int, jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """Pooled features f32[B, D] of a BN-folded backbone with a per-block hook.

  after_block(b, block_input, block_output) -> the block's new output, e.g.
  output + a side branch of the input (TinyTL's lite residual) or an adapter
  on the output (AdapterDrop). The convs run with impl='fast'.
  """

  def run(conv, x):
    p = tree_paths.get(params, conv.name)
    y = layers.conv(x, p['kernel'], conv.stride, conv.depthwise) + p['bias']
    return layers.relu6(y) if conv.activation == 'relu6' else y

  by = block_convs(spec)
  x = run(spec.convs[0], images)
  for b, blk in enumerate(spec.blocks):
    inp = x
    for conv in by[b]:
      x = run(conv, x)
    if blk.residual:
      x = x + inp
    x = after_block(b, inp, x)
  if spec.feature_mix:
    x = run(spec.convs[-1], x)
  return jnp.mean(x, axis=(1, 2))


def block_of(spec: ModelSpec, conv_name: str) -> int:
  """Index of the block a conv runs in: 0 for the stem (it runs before block
  0), len(spec.blocks) for the feature-mix conv."""
  conv = spec.conv(conv_name)
  if conv.block is not None:
    return conv.block
  return 0 if conv.index == 0 else len(spec.blocks)


def prefix(spec: ModelSpec, params: Params, images: jax.Array, start_block: int,
           impl: str = 'fast', from_block: int = 0) -> jax.Array:
  """The activation entering block `start_block`, f32[B, H, W, C].

  `apply(spec, params, prefix(spec, params, x, b), start_block=b)` equals
  `apply(spec, params, x)`, so a frozen prefix is computed once per task and
  each fine-tune step runs only the blocks from `b` on.

  With from_block > 0, `images` is instead the activation entering block
  `from_block` (an earlier pass's, e.g. the Fisher pass's) and only blocks
  [from_block, start_block) run: `prefix(spec, params, prefix(spec, params,
  x, a), b, from_block=a)` equals `prefix(spec, params, x, b)`.
  """
  _check_start(spec, start_block)
  if not 0 <= from_block <= start_block:
    raise ValueError(f'from_block must be in [0, start_block={start_block}], '
                     f'got {from_block}')
  if from_block == 0:
    _check_images(spec, images)
  if start_block == from_block:  # no block to run (block 0's input: the images)
    return images
  # Forward only, so it runs over cache-sized chunks of the batch.
  chunk = batch_chunks.chunk_size(images.shape[0],
                                  batch_chunks.image_bytes(spec, from_block))
  return batch_chunks.over_chunks(
      lambda x: _trunk(spec, params, x, from_block, start_block, impl=impl,
                       feature_mix=False)[0], images, chunk)


def features(spec: ModelSpec, params: Params, images: jax.Array, *,
             state: Optional[Params] = None, start_block: int = 0,
             chunk_bytes: Optional[int] = None) -> jax.Array:
  """Pooled features f32[B, spec.feature_dim] of an inference pass.

  Equal to `apply(spec, params, images, state=state,
  start_block=start_block).features` (BN in eval mode), computed over chunks
  of the batch whose largest activation fits in `chunk_bytes` (default
  `batch_chunks.CHUNK_BYTES`, 12 MiB), one after the other, so that a call's
  buffers stay small enough for glibc to reuse and partly in cache (100
  images at 128 px: 1.2-1.5x faster on the development CPU, `batch_chunks`). Meant for forward-only
  passes (evaluation, prototypes); under `jax.grad` each chunk is
  rematerialised (one more forward, activations of one chunk held).
  """
  chunk = batch_chunks.chunk_size(images.shape[0],
                                  batch_chunks.image_bytes(spec, start_block),
                                  chunk_bytes)
  return batch_chunks.over_chunks(
      lambda x: apply(spec, params, x, state=state,
                      start_block=start_block).features, images, chunk)


def _check_start(spec, start_block):
  if not 0 <= start_block <= len(spec.blocks):
    raise ValueError(f'start_block must be in [0, {len(spec.blocks)}] for '
                     f'{spec.name}, got {start_block}')


def _check_images(spec, images):
  if images.ndim != 4 or images.shape[1:] != (spec.resolution, spec.resolution,
                                              3):
    raise ValueError(f'images must be f32[B, {spec.resolution}, '
                     f'{spec.resolution}, 3] for {spec.name} at resolution '
                     f'{spec.resolution}, got shape {tuple(images.shape)}')


def _trunk(spec, params, x, start_block, stop_block, *, state=None, train=False,
           impl='fast', deltas=None, in_probes=None, out_probes=None,
           capture=False, feature_mix=True):
  """Runs the stem (when start_block == 0), blocks [start, stop) and, with
  `feature_mix`, the feature-mix conv (spec.feature_mix only).

  Returns (x, new BN state, captured activations or None).
  """
  state = state or {}
  deltas, in_probes, out_probes = deltas or {}, in_probes or {}, out_probes or {}
  new_state, acts = {}, {} if capture else None

  def run(conv, x):
    with layers.scope(conv.name):
      x_in, y, s = _apply_conv(spec, conv, tree_paths.get(params, conv.name), x,
                               state=state, train=train, impl=impl,
                               delta=deltas.get(conv.name),
                               in_probe=in_probes.get(conv.name),
                               out_probe=out_probes.get(conv.name))
      if s is not None:
        new_state.update(tree_paths.replace(new_state, conv.name, s))
      if capture:
        acts[conv.name] = {'in': x_in, 'out': y}
      return layers.relu6(y) if conv.activation == 'relu6' else y

  by_block = {}
  for conv in spec.convs:
    by_block.setdefault(conv.block, []).append(conv)
  if start_block == 0:
    x = run(spec.convs[0], x)
  for b in range(start_block, stop_block):
    shortcut = x
    for conv in by_block[b]:
      x = run(conv, x)
    if spec.blocks[b].residual:
      x = x + shortcut
  if spec.feature_mix and feature_mix:
    x = run(spec.convs[-1], x)
  return x, new_state, acts


def apply(spec: ModelSpec, params: Params, images: jax.Array, *,
          state: Optional[Params] = None, train: bool = False,
          impl: str = 'fast', deltas: Optional[Dict[str, Any]] = None,
          in_probes: Optional[Dict[str, jax.Array]] = None,
          out_probes: Optional[Dict[str, jax.Array]] = None,
          capture: bool = False, start_block: int = 0) -> ModelOutput:
  """Forward pass (from the images, or from a cached block input).

  Args:
    spec: static model description.
    params: parameter pytree (see module docstring).
    images: f32[B, R, R, 3] in [-1, 1], R = spec.resolution; with
      start_block > 0 the activation entering block `start_block` instead
      (`prefix`'s output), and the stem and earlier blocks are skipped.
    state: BN statistics (BN variant only).
    train: BN uses batch statistics and returns updated running statistics.
    impl: 'fast' (per backend: 'cpu' formulations on a CPU, 'lax' on a GPU
      or TPU), 'cpu' (shifted-slice depthwise, matmul 1x1) or 'lax'; static.
    deltas: {conv name: {'index': i32[k], 'kernel': f32[kh,kw,k,C_out]
      (depthwise: f32[kh,kw,1,k])}}: channel-sparse trainable additions to
      the selected input channels of those convs.
    in_probes / out_probes: {conv name: zeros shaped like that conv's input /
      pre-activation output}; added in place, so d loss / d probe is the
      activation gradient (Fisher potential, one backward pass).
    capture: also return every conv's input and pre-activation output.
    start_block: first block to run (static); 0 runs the whole network,
      len(spec.blocks) only the feature-mix conv and the pooling.

  Returns:
    ModelOutput(features, logits, state, activations).
  """
  _check_start(spec, start_block)
  if start_block == 0:  # else `images` is a block's input activation
    _check_images(spec, images)
  x, new_state, acts = _trunk(spec, params, images, start_block,
                              len(spec.blocks), state=state, train=train,
                              impl=impl, deltas=deltas, in_probes=in_probes,
                              out_probes=out_probes, capture=capture)
  features = jnp.mean(x, axis=(1, 2))
  logits = None
  if spec.num_classes:
    with layers.scope('classifier'):
      cls = params['classifier']
      logits = features @ cls['kernel'] + cls['bias']
  return ModelOutput(features, logits, new_state if train else (state or {}),
                     acts)
