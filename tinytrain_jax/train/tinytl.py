"""TinyTL baseline: lite-residual branches + all biases (Cai et al. 2020).

  res = finetune_tinytl(spec, params, head, episode, FinetuneConfig())
  tinytl_costs(spec, batch_size=25)   # {'bwd_macs', 'bwd_bytes', ...}

One branch per inverted-residual block, from the block input x, added to the
block output (after the shortcut; TinyTL wraps the block's conv path, which is
the same sum):
  pooling: 2x2 average pool, stride 2 (floor), when the pooled map
    h_in // 2 is > 1; otherwise global average pooling and no upsampling
  -> grouped conv (2 groups, stride = the block's stride, kernel 5 reduced by
     2 while larger than the pooled map; 1 after global pooling),
     C_in -> C_mid = make_divisible(C_in, 8), weight-standardised, no bias
  -> GroupNorm (8 channels per group) -> ReLU
  -> 1x1 conv C_mid -> C_out (weight-standardised, no bias)
  -> GroupNorm with scale initialised to 0 (the branch starts as an exact
     no-op)
  -> bilinear upsampling to the block's output size (two matmuls with
     constant weights, `bilinear_upsample`).
Trained: every conv bias of the backbone (BN-folded, so the BN shifts) and
every branch parameter; the backbone kernels stay frozen.

Follows TinyTL (mit-han-lab/tinyml `LiteResidualModule`): the placement, the
pooling / kernel-size rule, the grouped conv + 1x1 conv, make_divisible,
ReLU, GroupNorm + weight standardisation in the branch, the zero-initialised
final norm scale, bilinear upsampling, all biases trained. Ours: the branch
geometry uses the block's real input size (TinyTL hard-codes 128 px above the
stem); the backbone keeps its BN-folded pretrained weights (TinyTL pre-trains
the whole network, branches included, on ImageNet with GroupNorm + weight
standardisation; here the branches start from the init above on every task);
kernels stay fp32 (TinyTL keeps them 8 bit); the common protocol trains it
(momentum SGD, ProtoNet support loss), not TinyTL's Adam / label smoothing.

Costs (`tinytl_costs`, one batch size for everything): the backbone is the
all-biases mask under `cost.backward_macs` / `cost.backward_memory_bytes`;
each branch adds 2 x its forward MACs (weight and input gradients) and keeps,
in fp32 at the same batch, its pooled input, both GroupNorm inputs and the
ReLU output, plus 3 copies of its parameters (weight, gradient, momentum).
"""
from typing import Any, Dict, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax import cost
from tinytrain_jax import tree_paths
from tinytrain_jax.models import layers
from tinytrain_jax.models import network
from tinytrain_jax.train import finetune as ft

GN_CHANNELS_PER_GROUP = 8
WS_EPS = 1e-5
GN_EPS = 1e-5


class BranchShape(NamedTuple):
  """Geometry of one lite-residual branch (sizes are square maps)."""
  c_in: int
  c_mid: int
  c_out: int
  kernel: int
  stride: int
  pooled: int  # map size after pooling (1 = global pooling)
  global_pool: bool
  h_conv: int  # grouped-conv output size
  h_out: int  # block output size


def make_divisible(v, d=8):
  return max(d, int(v + d / 2) // d * d)


def branch_shape(spec, b) -> BranchShape:
  """TinyTL's branch geometry for block `b` of `spec`."""
  blk, convs = spec.blocks[b], network.block_convs(spec)[b]
  h_in, h_out = convs[0].h_in, convs[-1].h_out
  pooled = max(1, h_in // 2)
  glob = pooled == 1
  k = 1
  if not glob:
    k = 5
    while pooled < k:
      k -= 2
  h_conv = 1 if glob else -(-pooled // blk.stride)
  return BranchShape(blk.c_in, make_divisible(blk.c_in), blk.c_out, k,
                     blk.stride, pooled, glob, h_conv, h_out)


def _gn_groups(c):
  g = max(1, c // GN_CHANNELS_PER_GROUP)
  while c % g:
    g -= 1
  return g


def init_lite_residual(spec, seed: int) -> Dict[str, Any]:
  """{'blocks_b': {'conv1', 'norm1', 'conv2', 'norm2'}} as f32 numpy arrays
  (He-normal convs, drawn from `np.random.default_rng([seed, b])`; norm2
  scale = 0). Drawn on the host: with jax.random every branch's draw was
  its own small compile, 61 of them (9.5 s) per backbone on a 2-core CPU."""
  if spec.batchnorm:
    raise ValueError('tinytl supports BN-folded specs only (batchnorm=False)')
  out = {}
  for b in range(len(spec.blocks)):
    s = branch_shape(spec, b)
    rng = np.random.default_rng([int(seed), b])
    w1 = rng.standard_normal((s.kernel, s.kernel, s.c_in // 2, s.c_mid)) * (
        np.sqrt(2.0 / (s.kernel**2 * s.c_mid // 2)))
    w2 = rng.standard_normal((1, 1, s.c_mid, s.c_out)) * np.sqrt(2.0 / s.c_out)
    f32 = lambda a: np.asarray(a, np.float32)
    out[f'blocks_{b}'] = {
        'conv1': f32(w1),
        'conv2': f32(w2),
        'norm1': {
            'scale': f32(np.ones(s.c_mid)),
            'bias': f32(np.zeros(s.c_mid))
        },
        'norm2': {
            'scale': f32(np.zeros(s.c_out)),
            'bias': f32(np.zeros(s.c_out))
        }
    }
  return out


def weight_standardize(w):
  """(w - mean) / (std + eps) per output channel (last axis) of HWIO w."""
  mean = jnp.mean(w, axis=(0, 1, 2), keepdims=True)
  std = jnp.std(w, axis=(0, 1, 2), keepdims=True)
  return (w - mean) / (std + WS_EPS)


def group_norm(x, scale, bias, groups):
  """GroupNorm over (H, W, C / groups) of f32[B, H, W, C]."""
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
  var = jnp.var(g, axis=(1, 2, 4), keepdims=True)
  g = (g - mean) * jax.lax.rsqrt(var + GN_EPS)
  return g.reshape(b, h, w, c) * scale + bias


def _two_group_conv(x, w, stride: int):
  """The branch's 2-group conv (k x k, padding k // 2) as one batched matmul
  over im2col patches, equal to `feature_group_count=2` up to float
  reassociation.

  Its gradients are matmuls and slices too. As convolutions (grouped, or two
  dense ones on the channel halves) the kernel and input gradients inside
  the fine-tune `lax.scan` stayed in XLA CPU's generic conv path, which the
  compiler rewrites into its fast kernels only outside loops: the scanned
  TinyTL task ran 1.6x slower than the same jitted step in a Python loop.
  """
  k = w.shape[0]
  ci, co = w.shape[2], w.shape[3] // 2
  pt = layers.patches(x, k, stride)  # [N, Ho, Wo, k*k, C]
  n, ho, wo = pt.shape[:3]
  pt = pt.reshape(n, ho, wo, k * k, 2, ci)
  # HWIO with O = [group 0 | group 1] -> [k*k, ci, 2, co]
  wg = w.reshape(k * k, ci, 2, co)
  y = jnp.einsum('nhwtgc,tcgo->nhwgo', pt, wg)
  return y.reshape(n, ho, wo, 2 * co)


def upsample_weights(p: int, h: int) -> np.ndarray:
  """f32[h, p]: 1-D bilinear upsampling p -> h (h >= p) as a matrix, equal
  to `jax.image.resize(..., 'bilinear')` along one axis (half-pixel
  centres, triangle kernel, weights normalised per output)."""
  inv = np.float32(p) / np.float32(h)
  f = (np.arange(h, dtype=np.float32) + np.float32(0.5)) * inv - np.float32(0.5)
  dist = np.abs(f[None] - np.arange(p, dtype=np.float32)[:, None])  # [p, h]
  w = np.maximum(np.float32(0), np.float32(1) - dist)
  return (w / w.sum(0, keepdims=True)).T.astype(np.float32)


def bilinear_upsample(y, h: int):
  """f32[N, p, p, C] -> f32[N, h, h, C] as two matmuls with constant
  weights: the same numbers as `jax.image.resize` (to 1 ulp), whose weight
  computation made up a fifth of the branches' compile and step time."""
  m = upsample_weights(y.shape[1], h)
  y = jnp.einsum('oh,nhwc->nowc', m, y)
  return jnp.einsum('pw,nowc->nopc', m, y)


def _branch(spec, b, lp, x):
  s = branch_shape(spec, b)
  if s.global_pool:
    x = jnp.mean(x, axis=(1, 2), keepdims=True)
  else:
    n = 2 * s.pooled
    x = x[:, :n, :n, :]
    x = x.reshape(x.shape[0], s.pooled, 2, s.pooled, 2,
                  x.shape[3]).mean(axis=(2, 4))
  y = _two_group_conv(x, weight_standardize(lp['conv1']),
                      1 if s.global_pool else s.stride)
  y = jax.nn.relu(
      group_norm(y, lp['norm1']['scale'], lp['norm1']['bias'],
                 _gn_groups(s.c_mid)))
  y = jnp.einsum('nhwc,co->nhwo', y, weight_standardize(lp['conv2'])[0, 0])
  y = group_norm(y, lp['norm2']['scale'], lp['norm2']['bias'],
                 _gn_groups(s.c_out))
  if s.global_pool:
    return y  # broadcast over the block output
  return bilinear_upsample(y, s.h_out)


def features(spec, params, lite, images):
  """Pooled features f32[B, D] of the backbone with lite-residual branches."""
  return network.folded_features(
      spec, params, images,
      lambda b, inp, x: x + _branch(spec, b, lite[f'blocks_{b}'], inp))


def _biases(spec, params):
  return {c.name: tree_paths.get(params, f'{c.name}/bias') for c in spec.convs}


def _with_biases(params, biases):
  for name, b in biases.items():
    params = tree_paths.replace(params, f'{name}/bias', b)
  return params


def _tinytl_features(spec, p, t, x):
  return features(spec, _with_biases(p, t['biases']), t['lite'], x)


def _init(spec, params, config):
  # Host copies: no per-shape copy programs to compile.
  return {
      'biases': jax.tree.map(np.array, _biases(spec, params)),
      'lite': init_lite_residual(spec, config.seed)
  }


def _evaluate(spec, params, tr, head, batch):
  return _eval_fn(spec, _with_biases(params, tr['biases']), tr['lite'], head,
                  batch)


_eval_fn = ft.module_eval_fn(features)
# All biases and the lite-residual branches train; the kernels stay frozen.
TRAINER = ft.ModuleTrainer(_init, ft.module_step_fn(_tinytl_features),
                           _evaluate,
                           lambda params, tr: _with_biases(params, tr['biases']))
tinytl_step = jax.jit(TRAINER.step, static_argnums=(0, 1),
                      donate_argnums=(2, 3))
tinytl_eval = jax.jit(_eval_fn, static_argnums=0)


def lite_costs(spec, batch_size: int) -> Dict[str, int]:
  """All branches: per-sample forward MACs, fp32 saved bytes at `batch_size`
  (pooled input, both GroupNorm inputs, ReLU output) and parameter count."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  macs = saved = n = 0
  for b in range(len(spec.blocks)):
    s = branch_shape(spec, b)
    hw = s.h_conv * s.h_conv
    m1 = hw * s.kernel * s.kernel * (s.c_in // 2) * s.c_mid
    m2 = hw * s.c_mid * s.c_out
    macs += m1 + m2
    saved += (s.pooled * s.pooled * s.c_in + 2 * hw * s.c_mid +
              hw * s.c_out) * 4
    n += (
        s.kernel * s.kernel * (s.c_in // 2) * s.c_mid + s.c_mid * s.c_out + 2 *
        (s.c_mid + s.c_out))
  return {'fwd_macs': macs, 'saved_bytes': saved * batch_size, 'params': n}


def tinytl_costs(spec, batch_size: int) -> Dict[str, int]:
  """Backward MACs per sample and fp32 bytes at `batch_size` of TinyTL.

  Backbone: the all-biases mask (`cost` models); branches: `lite_costs` at
  the same batch, 2 x forward MACs, parameters x 3 (weight, grad, momentum).
  """
  view = cost.as_layer_view(spec, {c.index: 'bias' for c in spec.convs})
  macs = cost.backward_macs(spec, view)
  mem = cost.backward_memory_bytes(spec, view, batch_size=batch_size)
  lc = lite_costs(spec, batch_size)
  return {
      'bwd_macs':
          int(macs.total_macs + 2 * lc['fwd_macs']),
      'bwd_bytes':
          int(mem.total_bytes + lc['saved_bytes'] + 3 * 4 * lc['params']),
      'n_trained':
          int(lc['params'] + sum(c.c_out for c in spec.convs))
  }


def finetune_tinytl(spec, params, head, episode,
                    config: ft.FinetuneConfig = ft.FinetuneConfig(),
                    task: int = 0) -> ft.FinetuneResult:
  """TinyTL fine-tuning of one task; the result's params carry the trained
  biases and costs['lite'] the trained branches (costs at the support batch).
  """
  batch = ft.episode_arrays(spec, episode)
  n_support = int(np.asarray(batch['support_mask']).sum())
  costs = tinytl_costs(spec, n_support)
  tr = _init(spec, params, config)
  tr, curve = ft.train_module(tinytl_step, spec, config, tr,
                              (params, head, batch), task)
  new_params = _with_biases(params, tr['biases'])
  loss, acc = tinytl_eval(spec, new_params, tr['lite'], head, batch)
  costs['lite'] = tr['lite']
  return ft.FinetuneResult(
      float(acc), curve, new_params, costs, float(loss), head)
