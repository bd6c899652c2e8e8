"""AdapterDrop baseline: bottleneck adapters, the lowest x % dropped.

  res = finetune_adapters(spec, params, head, episode, cfg, drop_percent=50)
  adapter_costs(spec, drop_percent=50, batch_size=25)

Adapters (Houlsby et al. 2019, as AdapterDrop uses them) after every
inverted-residual block of the frozen backbone: on the block output x,

  y = x + up(relu(down(x)))      down: 1x1 conv C -> m (+ bias),
                                 up:   1x1 conv m -> C (+ bias), zero init,

so every adapter starts as the identity. AdapterDrop (Rücklé et al. 2021)
drops the adapters of the lowest layers: here the lowest
floor(n_blocks · x / 100) blocks get none (`dropped_blocks`), so the backward
pass stops at the lowest kept adapter. Trained: the kept adapters only (the
backbone, its biases and the ProtoNet head are frozen).

Ours (the originals are for transformers): the adapter is a 1x1-conv
bottleneck on the block output, after the shortcut, with
m = make_divisible(C / 4, 8) (16 -> 8, 96 -> 24, 160 -> 40); down is
He-normal (fixed seed per run), up and both biases start at zero; the mix
conv of MBV2 / Proxyless gets no adapter; the common fine-tuning protocol
(momentum SGD, ProtoNet support loss) trains it.

Costs (`adapter_costs`, one batch size): input gradients of every conv above
the lowest kept adapter (the gradient reaches it through them), plus per
adapter its weight-gradient MACs (down + up) and the input gradients of up
and (except the lowest adapter) of down; memory in the fp32_saved model: the
1-bit ReLU6 masks of the convs the gradient passes, each adapter's input and
hidden activation (fp32), its ReLU mask (1 bit), and 3 copies of its
parameters (weight, gradient, momentum).
"""
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax.models import network
from tinytrain_jax.train import finetune as ft

DROP_PERCENTS = (25, 50, 75)


def make_divisible(v, d=8):
  return max(d, int(v + d / 2) // d * d)


def dropped_blocks(spec, drop_percent: int) -> int:
  """How many of the lowest blocks get no adapter: floor(n · x / 100)."""
  if not 0 <= drop_percent < 100:
    raise ValueError(f'drop_percent must be in [0, 100), got {drop_percent}')
  return len(spec.blocks) * int(drop_percent) // 100


def adapter_blocks(spec, drop_percent: int) -> List[int]:
  """Indices of the blocks that keep an adapter (the upper ones)."""
  return list(range(dropped_blocks(spec, drop_percent), len(spec.blocks)))


def _dims(spec, b):
  """(C, m, H) of block b's adapter: channels, bottleneck, map size."""
  c = spec.blocks[b].c_out
  return c, make_divisible(c / 4), network.block_convs(spec)[b][-1].h_out


def init_adapters(spec, drop_percent: int, key) -> Dict[str, Any]:
  """{'blocks_b': {'down': {kernel, bias}, 'up': {kernel, bias}}} per kept
  block; up is zero, so the network's output is unchanged."""
  out = {}
  for b in adapter_blocks(spec, drop_percent):
    c, m, _ = _dims(spec, b)
    k = jax.random.fold_in(key, b)
    out[f'blocks_{b}'] = {
        'down': {
            'kernel': jax.random.normal(k, (c, m)) * np.sqrt(2.0 / m),
            'bias': jnp.zeros((m,))
        },
        'up': {
            'kernel': jnp.zeros((m, c)),
            'bias': jnp.zeros((c,))
        }
    }
  return out


def _adapter(ap, x):
  h = jax.nn.relu(
      jnp.einsum('nhwc,cm->nhwm', x, ap['down']['kernel']) + ap['down']['bias'])
  return x + jnp.einsum('nhwm,mc->nhwc', h,
                        ap['up']['kernel']) + ap['up']['bias']


def features(spec, params, adapters, images):
  """Pooled features f32[B, D] of the backbone with the given adapters."""

  def after_block(b, inp, x):
    del inp
    key = f'blocks_{b}'
    return _adapter(adapters[key], x) if key in adapters else x

  return network.folded_features(spec, params, images, after_block)


adapter_step = ft.module_step(features)
adapter_eval = ft.module_eval(features)


def _trainer(drop_percent):
  return ft.ModuleTrainer(
      lambda spec, params, config: init_adapters(
          spec, drop_percent, jax.random.PRNGKey(config.seed)),
      ft.module_step_fn(features), ft.module_eval_fn(features),
      lambda params, tr: params)


# Only the adapters train. One constant per variant: jit static arguments.
TRAINERS = {p: _trainer(p) for p in (25, 50, 75)}


def adapter_costs(spec, drop_percent: int, batch_size: int) -> Dict[str, int]:
  """Backward MACs per sample and fp32_saved bytes at `batch_size` (module
  docstring), and the number of trained parameters."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  kept = adapter_blocks(spec, drop_percent)
  if not kept:
    return {'bwd_macs': 0, 'bwd_bytes': 0, 'n_trained': 0}
  lowest = kept[0]
  by = network.block_convs(spec)
  above = [
      c for c in spec.convs if (c.block is not None and c.block > lowest) or
      (c.block is None and c.index > by[lowest][-1].index)
  ]
  macs = sum(c.macs for c in above)
  mask_bits = sum(c.output_elements for c in above if c.activation == 'relu6')
  saved_bytes = n_params = 0
  for b in kept:
    c, m, h = _dims(spec, b)
    down, up = h * h * c * m, h * h * m * c
    macs += down + up + up + (down if b != lowest else 0)
    saved_bytes += 4 * h * h * (c + m)  # inputs of down and up
    mask_bits += h * h * m  # ReLU mask of the hidden layer
    n_params += c * m + m + m * c + c
  act = saved_bytes * batch_size + -(-mask_bits * batch_size // 8)
  return {
      'bwd_macs': int(macs),
      'bwd_bytes': int(act + 3 * 4 * n_params),
      'n_trained': int(n_params)
  }


def finetune_adapters(spec, params, head, episode,
                      config: ft.FinetuneConfig = ft.FinetuneConfig(),
                      drop_percent: int = 50,
                      task: int = 0) -> ft.FinetuneResult:
  """AdapterDrop-`drop_percent` fine-tuning of one task (costs at the
  support batch; costs['adapters'] holds the trained adapters)."""
  batch = ft.episode_arrays(spec, episode)
  n_support = int(np.asarray(batch['support_mask']).sum())
  costs = adapter_costs(spec, drop_percent, n_support)
  tr = init_adapters(spec, drop_percent, jax.random.PRNGKey(config.seed))
  tr, curve = ft.train_module(adapter_step, spec, config, tr,
                              (params, head, batch), task)
  loss, acc = adapter_eval(spec, params, tr, head, batch)
  costs['adapters'] = tr
  return ft.FinetuneResult(float(acc), curve, params, costs, float(loss), head)
