"""The partition a sparse step differentiates: a mask split into what trains.

A mask (`masks`) becomes a static `SparsePlan` and dynamic channel indices:
  * fully trained leaves (kernels, biases, the classifier) form a small
    `trainable` pytree, the only thing differentiated; every other param
    enters through `stop_gradient` (`effective_params`), so XLA drops the
    backward below the lowest trained layer;
  * a kernel trained on k of its channels along `ConvLayer.mask_axis` trains
    a delta of `ConvLayer.delta_shape(k)` through `network.apply(deltas=...)`:
    the backward needs only those channels' activations and computes only
    that slice of dW. k is static (part of the plan: one compile per
    channel-count signature); the indices i32[k] are data.
`fold` scatters the deltas back into the kernels. The fine-tune step
(`train.sparse_step`) and the measured step cost (`cost.step`) both train
exactly this partition.

Example:
  plan, indices = make_plan(spec, params, mask)
  trainable = split(params, plan)
  ... train `trainable` ...
  params = fold(params, trainable, indices)
"""
from typing import Any, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax import masks as masks_lib
from tinytrain_jax import tree_paths
from tinytrain_jax.models.spec import ModelSpec


class DeltaLayer(NamedTuple):
  """One channel-sparse kernel of a plan.

  name: conv name, e.g. 'blocks_3/depthwise'.
  k: number of trained channels.
  shape: the delta's kernel shape, `ConvLayer.delta_shape(k)`.
  axis: kernel axis the channels index (`ConvLayer.mask_axis`, negative).
  """
  name: str
  k: int
  shape: Tuple[int, ...]
  axis: int


class SparsePlan(NamedTuple):
  """Static (hashable) structure of a sparse update.

  full_leaves: param paths trained in full, e.g. 'blocks_3/depthwise/kernel'.
  delta_layers: one `DeltaLayer` per channel-sparse kernel.
  """
  full_leaves: Tuple[str, ...]
  delta_layers: Tuple[DeltaLayer, ...]

  @property
  def empty(self) -> bool:
    return not self.full_leaves and not self.delta_layers


def make_plan(spec: ModelSpec, params,
              mask) -> Tuple[SparsePlan, Dict[str, np.ndarray]]:
  """Splits a mask into a static plan and the dynamic channel indices.

  Args:
    spec: the ModelSpec (decides each kernel's channel axis).
    params: parameter pytree (arrays or shapes).
    mask: params-shaped mask (`masks`).

  Returns:
    (plan, indices) with indices = {conv name: i32[k]} sorted channel ids.

  Raises:
    ValueError: the mask does not fit, or a channel vector sits on a leaf
      that is not a conv kernel (a bias vector must be all-or-nothing here).
  """
  masks_lib.check_mask(mask, params, spec)
  convs = {f'{c.name}/kernel': c for c in spec.convs}
  full, deltas, index = [], [], {}
  for path, m in zip(tree_paths.leaf_paths(params), jax.tree.leaves(mask)):
    if isinstance(m, np.ndarray) and m.ndim == 1:
      conv = convs.get(path)
      chans = np.flatnonzero(m).astype(np.int32)
      if conv is None and 0 < chans.size < m.shape[0]:
        raise ValueError(f'channel vector on {path}: only conv kernels can be '
                         'channel-sparse; use a bool for this leaf')
      if chans.size == 0:
        continue
      if chans.size == m.shape[0]:
        full.append(path)
        continue
      k = int(chans.size)
      deltas.append(
          DeltaLayer(conv.name, k, conv.delta_shape(k), conv.mask_axis))
      index[conv.name] = chans
    elif bool(m):
      full.append(path)
  return SparsePlan(tuple(full), tuple(deltas)), index


def split(params, plan: SparsePlan, head=None):
  """Initial trainable pytree: copies of the full leaves, zero deltas (+head).

  {'params': {leaf path: array}, 'deltas': {conv name: f32[delta shape]}}
  (+ 'head' when given).
  """
  tr = {
      'params': {
          p: jnp.array(tree_paths.get(params, p), copy=True)
          for p in plan.full_leaves
      },
      'deltas': {
          d.name: jnp.zeros(d.shape, jnp.float32) for d in plan.delta_layers
      }
  }
  if head is not None:
    tr['head'] = jax.tree.map(lambda x: jnp.array(x, copy=True), head)
  return tr


def combine(params, trained_leaves: Dict[str, Any]):
  """params with `trained_leaves` ({leaf path: array}) substituted."""
  for path, value in trained_leaves.items():
    params = tree_paths.replace(params, path, value)
  return params


def _channel_slice(ndim: int, axis: int, idx):
  ix = [slice(None)] * ndim
  ix[axis] = idx
  return tuple(ix)


def fold(params, plan: SparsePlan, trainable, indices):
  """A normal params pytree: full leaves replaced, deltas scatter-added.

  Untouched leaves are the very same arrays as in `params` (bit-identical).
  """
  out = combine(params, trainable['params'])
  for d in plan.delta_layers:
    path = f'{d.name}/kernel'
    w = jnp.asarray(tree_paths.get(out, path))
    ix = _channel_slice(w.ndim, d.axis, jnp.asarray(indices[d.name]))
    out = tree_paths.replace(out, path,
                             w.at[ix].add(trainable['deltas'][d.name]))
  return out


def effective_params(params, trainable):
  """Params the sparse forward sees (frozen ones stop_gradient'ed)."""
  frozen = jax.tree.map(jax.lax.stop_gradient, params)
  return combine(frozen, trainable['params'])


def delta_inputs(trainable, indices):
  """The `deltas` argument of `network.apply`, or None without deltas."""
  ds = {
      n: {
          'index': indices[n],
          'kernel': d
      } for n, d in trainable['deltas'].items()
  }
  return ds or None


def weight_decay_grads(grads, plan: SparsePlan, trainable, params, indices,
                       wd: float):
  """Adds wd * (effective weight) to the grads of the trained entries.

  For a delta the effective weight is W[channels] + delta, so the sparse
  step decays exactly what the dense reference decays on those entries.
  """
  if not wd:
    return grads
  g = dict(grads)
  g['params'] = {
      p: v + wd * trainable['params'][p] for p, v in grads['params'].items()
  }
  dg = {}
  for d in plan.delta_layers:
    w = jax.lax.stop_gradient(tree_paths.get(params, f'{d.name}/kernel'))
    base = w[_channel_slice(w.ndim, d.axis, indices[d.name])]
    dg[d.name] = grads['deltas'][d.name] + wd * (
        base + trainable['deltas'][d.name])
  g['deltas'] = dg
  if 'head' in grads:
    g['head'] = jax.tree.map(lambda a, b: a + wd * b, grads['head'],
                             trainable['head'])
  return g
