"""TinyTL baseline: lite-residual branches + all biases (protocol.md §7).

One branch per inverted-residual block, from the block input x to its output:
  avg-pool 2x2/2 (skipped when the map is already 1x1)
  -> grouped conv (groups 2, stride = the block's stride, kernel 5 reduced by
     2 while larger than the pooled map; 1x1 on a 1x1 map), C_in -> C_mid =
     make_divisible(C_in, 8)
  -> affine norm (scale 1, shift 0) -> ReLU
  -> 1x1 conv C_mid -> C_out -> affine norm with scale 0 (the branch starts as
     an exact no-op) -> bilinear resize to the block output size
  -> added to the block output (after the shortcut).
Simplifications (documented): the norms are per-channel affine maps (no
GroupNorm / weight standardisation, no statistics); the branches start from
this init on every task (no ImageNet pre-training of the branches); the
original conv kernels stay frozen (fp32, not 8-bit); trained: every conv bias
and every branch parameter, with the common protocol (§5: SGD momentum,
ProtoNet support loss), not TinyTL's Adam / label smoothing recipe.
Costs: the backbone part is `cost` on the all-biases mask; the branches add
2 x their forward MACs (weight + input gradients) and keep their pooled
input and hidden activations (fp32) plus 3 copies of their parameters.
"""
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinytrain_jax import masks as masks_lib
from tinytrain_jax.models import layers
from tinytrain_jax.models import network
from tinytrain_jax.models import protonet
from tinytrain_jax.train import finetune as ft


def _make_divisible(v, d=8):
  return max(d, int(v + d / 2) // d * d)


def _block_convs(spec):
  by = {}
  for c in spec.convs:
    if c.block is not None:
      by.setdefault(c.block, []).append(c)
  return by


def _branch_shape(spec, b):
  """(C_in, C_mid, C_out, kernel, stride, pooled size, h_out) of block b."""
  blk, convs = spec.blocks[b], _block_convs(spec)[b]
  h_in, h_out = convs[0].h_in, convs[-1].h_out
  hp = -(-h_in // 2) if h_in >= 2 else 1
  k = 5
  while k > hp and k > 1:
    k -= 2
  c_mid = _make_divisible(blk.c_in)
  return blk.c_in, c_mid, blk.c_out, k, blk.stride, hp, h_out


def init_lite_residual(spec, key) -> Dict[str, Any]:
  """{'blocks_b': {'conv1', 'norm1', 'conv2', 'norm2'}}; norm2 scale = 0."""
  if spec.batchnorm:
    raise ValueError('tinytl supports BN-folded specs only (batchnorm=False)')
  out = {}
  keys = jax.random.split(key, 2 * len(spec.blocks))
  for b in range(len(spec.blocks)):
    c_in, c_mid, c_out, k, _, _, _ = _branch_shape(spec, b)
    w1 = jax.random.normal(keys[2 * b], (k, k, c_in // 2, c_mid)) * np.sqrt(
        2.0 / (k * k * c_mid // 2))
    w2 = jax.random.normal(keys[2 * b + 1], (1, 1, c_mid, c_out)) * np.sqrt(
        2.0 / c_out)
    out[f'blocks_{b}'] = {
        'conv1': w1, 'conv2': w2,
        'norm1': {'scale': jnp.ones((c_mid,)), 'bias': jnp.zeros((c_mid,))},
        'norm2': {'scale': jnp.zeros((c_out,)), 'bias': jnp.zeros((c_out,))}}
  return out


def _branch(spec, b, lp, x):
  _, _, _, k, stride, _, h_out = _branch_shape(spec, b)
  if x.shape[1] >= 2:
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1),
                              'SAME')
    n = jax.lax.reduce_window(jnp.ones_like(x[:1, ..., :1]), 0.0, jax.lax.add,
                              (1, 2, 2, 1), (1, 2, 2, 1), 'SAME')
    x = s / n
  p = k // 2
  y = jax.lax.conv_general_dilated(
      x, lp['conv1'], (stride, stride), ((p, p), (p, p)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=2)
  y = jax.nn.relu(y * lp['norm1']['scale'] + lp['norm1']['bias'])
  y = jnp.einsum('nhwc,co->nhwo', y, lp['conv2'][0, 0])
  y = y * lp['norm2']['scale'] + lp['norm2']['bias']
  return jax.image.resize(y, (y.shape[0], h_out, h_out, y.shape[3]),
                          'bilinear')


def features(spec, params, lite, images):
  """Pooled features f32[B, D] of the backbone with lite-residual branches."""
  def run(conv, x):
    p = network.get_layer(params, conv.name)
    y = layers.conv(x, p['kernel'], conv.stride, conv.depthwise) + p['bias']
    return layers.relu6(y) if conv.activation == 'relu6' else y
  by = _block_convs(spec)
  x = run(spec.convs[0], images)
  for b, blk in enumerate(spec.blocks):
    inp = x
    for conv in by[b]:
      x = run(conv, x)
    if blk.residual:
      x = x + inp
    x = x + _branch(spec, b, lite[f'blocks_{b}'], inp)
  if spec.feature_mix:
    x = run(spec.convs[-1], x)
  return jnp.mean(x, axis=(1, 2))


def _biases(spec, params):
  return {c.name: network.get_layer(params, c.name)['bias'] for c in spec.convs}


def _with_biases(params, biases):
  for name, b in biases.items():
    layer = dict(network.get_layer(params, name))
    layer['bias'] = b
    params = network.set_layer(params, name, layer)
  return params


def _step_impl(spec, cfg, tr, opt_state, params, head, batch, step):
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), step)
  frozen = jax.tree.map(jax.lax.stop_gradient, params)

  def loss_fn(t):
    p = _with_biases(frozen, t['biases'])
    return ft.support_loss(lambda x: features(spec, p, t['lite'], x),
                           jax.lax.stop_gradient(head), batch, key,
                           cfg.augment)
  loss, grads = jax.value_and_grad(loss_fn)(tr)
  if cfg.weight_decay:
    grads = jax.tree.map(lambda g, w: g + cfg.weight_decay * w, grads, tr)
  tx = optax.sgd(cfg.lr, momentum=cfg.momentum or None)
  updates, opt_state = tx.update(grads, opt_state, tr)
  return jax.tree.map(jnp.add, tr, updates), opt_state, loss


tinytl_step = jax.jit(_step_impl, static_argnums=(0, 1), donate_argnums=(2, 3))


def _eval_impl(spec, params, lite, head, batch):
  sf = features(spec, params, lite, batch['support_x'])
  qf = features(spec, params, lite, batch['query_x'])
  return protonet.episode_loss(head, sf, batch['support_y'],
                               batch['support_mask'], qf, batch['query_y'],
                               batch['query_mask'], batch['way_mask'])


tinytl_eval = jax.jit(_eval_impl, static_argnums=0)


def lite_costs(spec, batch_size: int) -> Dict[str, int]:
  """Per-sample forward MACs of all branches, their fp32 saved bytes at
  `batch_size` and parameter count."""
  macs = saved = n = 0
  for b in range(len(spec.blocks)):
    c_in, c_mid, c_out, k, stride, hp, _ = _branch_shape(spec, b)
    ho = -(-hp // stride)
    m1 = ho * ho * k * k * (c_in // 2) * c_mid
    m2 = ho * ho * c_mid * c_out
    macs += m1 + m2
    saved += (hp * hp * c_in + 2 * ho * ho * c_mid + ho * ho * c_out) * 4
    n += k * k * (c_in // 2) * c_mid + c_mid * c_out + 2 * (c_mid + c_out)
  return {'fwd_macs': macs, 'saved_bytes': saved * batch_size, 'params': n}


def finetune_tinytl(spec, params, head, episode,
                    config: ft.FinetuneConfig = ft.FinetuneConfig()
                    ) -> ft.FinetuneResult:
  """TinyTL fine-tuning of one task; the result's params carry the trained
  biases and costs['lite'] the trained branches."""
  batch = ft.episode_arrays(spec, episode)
  n_support = int(np.asarray(batch['support_mask']).sum())
  bias_mask = masks_lib.mask_from_layers(spec, params,
                                         {c.name: 'bias' for c in spec.convs})
  costs = ft.mask_costs(spec, bias_mask, n_support)
  lc = lite_costs(spec, 1)
  costs['bwd_macs'] += 2 * lc['fwd_macs']
  costs['bwd_bytes'] += lc['saved_bytes'] + 3 * 4 * lc['params']
  costs['n_trained'] = lc['params'] + sum(c.c_out for c in spec.convs)
  tr = {'biases': jax.tree.map(lambda x: jnp.array(x, copy=True),
                               _biases(spec, params)),
        'lite': init_lite_residual(spec, jax.random.PRNGKey(config.seed))}
  opt_state = optax.sgd(config.lr, momentum=config.momentum or None).init(tr)
  losses = []
  for i in range(config.steps):
    tr, opt_state, loss = tinytl_step(spec, config, tr, opt_state, params, head,
                                      batch, jnp.int32(i))
    losses.append(loss)
  curve = np.asarray(jax.device_get(losses), np.float32)
  ft._check_finite(curve, config.steps)  # pylint: disable=protected-access
  new_params = _with_biases(params, tr['biases'])
  loss, acc = tinytl_eval(spec, new_params, tr['lite'], head, batch)
  costs['lite'] = tr['lite']
  return ft.FinetuneResult(float(acc), curve, new_params, costs, float(loss),
                           head)
