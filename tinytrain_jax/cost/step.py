"""Measured cost of a masked training step, derived from its traced jaxpr.

`analyze_training_step` builds the loss of one sparse fine-tune step the way
the real step trains: the very partition of `mask_partition` (frozen
parameters behind `jax.lax.stop_gradient`; fully trained kernels, biases and
the classifier differentiated; channel-sparse kernels trained through
deltas on the selected channels, so the backward needs only that slice and
computes only the selected slice of dW; docs/reference/cost_model.md); then
traces `jax.make_jaxpr(jax.value_and_grad(loss))` with impl='lax' (every
conv one `conv_general_dilated`) and walks it (`jaxpr_walk`). Only shapes are
traced: nothing is compiled or run, so 128 px is cheap.

The loss is linear in the head output (Σ y · t for a fixed t; y = logits with a
classifier, else the pooled features), so it saves nothing itself.

What the numbers mean:
  * MACs are per sample (batch total / batch_size). JAX computes exactly the
    gradients it needs, so for FullTrain the stem's input gradient is absent
    (2Σ − MACs_stem); with count_unneeded_input_grad the stem's forward MACs
    are added to the input-gradient count (TinyTrain's naive convention).
    Channel-sparse deltas add r · MACs_l forward MACs, and when a gradient
    must flow below such a layer also r · MACs_l input-gradient MACs (the
    delta branch's own input gradient): the price of the delta formulation.
  * saved_bytes: activations JAX keeps for the backward pass (`jax.vjp`
    residuals) minus parameters (weights kept for input gradients), at the
    given batch. ReLU6 as jnp.clip keeps full f32 arrays, not 1-bit masks, so
    this exceeds `analytic.backward_memory_bytes` (measured, not a budget).
  * peak_bytes: peak live bytes of the whole step's intermediates (forward and
    backward; arguments excluded) by an in-order live-buffer walk.
  * param_bytes: trainable arrays (kernels, deltas, biases, classifier);
    grad_bytes equal them; optimizer_bytes = optimizer_slots × param_bytes.
"""
from typing import Any, Dict, List, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax import mask_partition
from tinytrain_jax import masks as masks_lib
from tinytrain_jax.cost import jaxpr_walk
from tinytrain_jax.models import network
from tinytrain_jax.models.spec import ModelSpec

_CLS = masks_lib.CLASSIFIER


class StepCost(NamedTuple):
  """Per-sample MACs and batch bytes of one masked training step."""
  fwd_macs: int
  bwd_macs: int
  bwd_weight_grad_macs: int
  bwd_input_grad_macs: int
  saved_bytes: int
  saved_conv_input_bytes: int  # the part of saved_bytes that are conv inputs
  peak_bytes: int
  param_bytes: int
  grad_bytes: int
  optimizer_bytes: int
  batch_size: int
  layers: List[Dict[str, Any]]  # one dict per conv (+ classifier, 'other')


def _sds(x):
  return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))


def build_masked_loss(spec: ModelSpec, params, mask):
  """(loss_fn, trainable, info) for the masked step.

  The step trains the partition the fine-tune step trains
  (`mask_partition.make_plan` of the mask): loss_fn(trainable,
  frozen_params, state, images) -> f32[] differentiates only `trainable`:
  {'params': {'<conv name>/kernel': ..., '.../bias': ...}, 'deltas': {conv
  name: f32[ConvLayer.delta_shape(k)]}}, given here as ShapeDtypeStructs.
  info: {'kernels': {layer name: differentiated kernel shape}}.
  """
  view = masks_lib.layer_view(spec, mask)
  plan, index = mask_partition.make_plan(
      spec, params, masks_lib.mask_from_view(spec, params, view))
  trainable = jax.eval_shape(lambda p: mask_partition.split(p, plan),
                             jax.tree.map(_sds, params))
  kernels = {d.name: d.shape for d in plan.delta_layers}
  for path in plan.full_leaves:
    layer, leaf = path.rsplit('/', 1)
    if leaf == 'kernel':
      kernels[layer] = tuple(np.shape(trainable['params'][path]))
  dim = spec.num_classes or spec.feature_dim
  target = np.linspace(-1.0, 1.0, dim, dtype=np.float32)

  def loss_fn(trainable, frozen, state, images):
    p = mask_partition.effective_params(frozen, trainable)
    out = network.apply(spec, p, images, state=state, impl='lax',
                        deltas=mask_partition.delta_inputs(trainable, index))
    y = out.logits if out.logits is not None else out.features
    return jnp.sum(y * target)

  return loss_fn, trainable, {'kernels': kernels}


def step_args(spec: ModelSpec, params, trainable, batch_size: int, state=None):
  """Abstract (trainable, params, state, images) arguments of a
  `build_masked_loss` loss at `batch_size` (state: BN statistics, default
  from `network.init`'s shapes)."""
  if state is None:
    state = jax.eval_shape(lambda: network.init(spec, jax.random.PRNGKey(0)))[1]
  images = jax.ShapeDtypeStruct(
      (batch_size, spec.resolution, spec.resolution, 3), jnp.float32)
  return tuple(
      jax.tree.map(_sds, a) for a in (trainable, params, state)) + (images,)


def _div(x, n):
  return x // n if x % n == 0 else x / n


def analyze_training_step(spec: ModelSpec, params, mask, batch_size: int = 1,
                          count_unneeded_input_grad: bool = False, state=None,
                          optimizer_slots: int = 1) -> StepCost:
  """Traces the masked training step and counts its cost (module docstring).

  Args:
    spec: the model (any ModelSpec).
    params: parameter pytree (arrays or ShapeDtypeStructs).
    mask: params-shaped mask or layer view (`analytic.layer_view`).
    batch_size: images in the traced batch (> 0).
    count_unneeded_input_grad: add the lowest needed layer's input gradient.
    state: BN statistics for spec.batchnorm (default: shapes from `init`).
    optimizer_slots: optimizer tensors per trainable parameter.

  Returns:
    StepCost. Example:
      cost = analyze_training_step(spec, params, full_mask(params, True))
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  loss_fn, trainable, info = build_masked_loss(spec, params, mask)
  args = step_args(spec, params, trainable, batch_size, state)
  names = {c.name.replace('/', '.'): c.name for c in spec.convs}
  names[_CLS] = _CLS
  closed = jax.make_jaxpr(jax.value_and_grad(loss_fn))(*args)
  ops = jaxpr_walk.count_macs(closed, info['kernels'].values(), set(names))
  by_layer = jaxpr_walk.summarize_by_layer(ops)
  residuals = jaxpr_walk.saved_residuals(loss_fn, args, (0, 1, 2), set(names))
  saved, conv_in = {}, 0
  for r in residuals:
    if r.role != 'param':
      saved[r.layer] = saved.get(r.layer, 0) + r.nbytes
    if r.role == 'conv_input':
      conv_in += r.nbytes
  lowest = None
  if count_unneeded_input_grad:
    idx = [spec.conv(n).index for n in masks_lib.layer_view(spec, mask).layers]
    lowest = min(idx) if idx else None
  rows = [(c.name.replace('/', '.'), c.name, c) for c in spec.convs]
  if spec.num_classes:
    rows.append((_CLS, _CLS, None))
  extra = (set(by_layer) | set(saved)) - set(names)
  rows += [(s, s or 'other', None) for s in sorted(extra)]
  layers = []
  for scope, name, conv in rows:
    d = by_layer.get(scope, {})
    igrad = d.get('igrad', 0)
    if conv is not None and conv.index == lowest:
      igrad += conv.macs * batch_size
    layers.append({
        'index': conv.index if conv else None,
        'name': name,
        'fwd_macs': _div(d.get('fwd', 0), batch_size),
        'bwd_weight_grad_macs': _div(d.get('wgrad', 0), batch_size),
        'bwd_input_grad_macs': _div(igrad, batch_size),
        'n_weight_grad_ops': d.get('n_wgrad', 0),
        'n_input_grad_ops': d.get('n_igrad', 0),
        'saved_bytes': saved.get(scope, 0),
    })
  fwd = sum(l['fwd_macs'] for l in layers)
  wg = sum(l['bwd_weight_grad_macs'] for l in layers)
  ig = sum(l['bwd_input_grad_macs'] for l in layers)
  pbytes = sum(
      int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize
      for s in jax.tree.leaves(args[0]))
  return StepCost(fwd_macs=fwd, bwd_macs=wg + ig, bwd_weight_grad_macs=wg,
                  bwd_input_grad_macs=ig, saved_bytes=sum(saved.values()),
                  saved_conv_input_bytes=conv_in,
                  peak_bytes=jaxpr_walk.peak_live_bytes_of(closed.jaxpr),
                  param_bytes=pbytes, grad_bytes=pbytes,
                  optimizer_bytes=optimizer_slots * pbytes,
                  batch_size=batch_size, layers=layers)
