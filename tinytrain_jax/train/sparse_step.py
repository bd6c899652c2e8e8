"""Sparse fine-tune steps: real savings (partition + deltas) and the dense reference.

Three levels of masks (STYLE.md §4):
  * `impl='dense'` (`finetune.make_dense_step`): grads of *all* params times
    the 0/1 mask passed in as data (so XLA cannot prune it), then SGD, then
    the mask again. Correct, saves nothing; the reference.
  * leaf level: fully trained leaves form a small `trainable` pytree that is
    the only thing differentiated; every other param enters through
    `stop_gradient`, so XLA drops the backward below the lowest trained layer.
  * channel level: a kernel trained on k of its input channels (depthwise:
    channels) trains a delta f32[kh, kw, k, C_out] (depthwise f32[kh, kw, 1,
    k]) through `network.apply(deltas=...)`; the backward only needs x[..., idx]
    and computes only that slice of dW. k is static (part of the `SparsePlan`,
    one compile per channel-count signature); idx i32[k] is dynamic.
`fold` scatters the deltas back into W[:, :, idx, :] (depthwise W[..., idx]).

Weight decay (default 0) is applied to the *effective* weight W + delta in the
sparse step, which equals the dense reference's decay on the selected entries.
"""
from typing import Any, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinytrain_jax import masks as masks_lib
from tinytrain_jax.models import network


class SparsePlan(NamedTuple):
  """Static (hashable) structure of a sparse update.

  full_leaves: param paths trained in full, e.g. 'blocks_3/depthwise/kernel'.
  delta_layers: (conv name, k, delta shape) per channel-sparse kernel.
  """
  full_leaves: Tuple[str, ...]
  delta_layers: Tuple[Tuple[str, int, Tuple[int, ...]], ...]

  @property
  def empty(self) -> bool:
    return not self.full_leaves and not self.delta_layers


def _leaf_paths(tree):
  return ['/'.join(str(getattr(k, 'key', k)) for k in kp)
          for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _get(tree, path):
  for p in path.split('/'):
    tree = tree[p]
  return tree


def make_plan(spec, params, mask) -> Tuple[SparsePlan, Dict[str, np.ndarray]]:
  """Splits a mask into a static plan and the dynamic channel indices.

  Args:
    spec: the ModelSpec.
    params: parameter pytree (arrays or shapes).
    mask: params-shaped mask (`masks`); channel vectors only on conv kernels.

  Returns:
    (plan, indices) with indices = {conv name: i32[k]} sorted channel ids.
  """
  del spec  # the params' shapes are enough; kept for a uniform signature
  masks_lib.check_mask(mask, params)
  full, deltas, index = [], [], {}
  for path, m, p in zip(_leaf_paths(params), jax.tree.leaves(mask),
                        jax.tree.leaves(params)):
    if isinstance(m, np.ndarray) and m.ndim == 1:
      layer, leaf = path.rsplit('/', 1)
      if leaf != 'kernel' or np.ndim(p) != 4:
        raise ValueError(f'channel vector on {path}: only conv kernels can be '
                         'channel-sparse; use a bool for this leaf')
      chans = np.flatnonzero(m).astype(np.int32)
      if chans.size == 0:
        continue
      if chans.size == m.shape[0]:
        full.append(path)
        continue
      kh, kw, ci, co = np.shape(p)
      dw = ci == 1
      shape = (kh, kw, 1, int(chans.size)) if dw else (kh, kw,
                                                        int(chans.size), co)
      deltas.append((layer, int(chans.size), shape))
      index[layer] = chans
    elif bool(m):
      full.append(path)
  return SparsePlan(tuple(full), tuple(deltas)), index


def split(params, plan: SparsePlan, head=None):
  """Initial trainable pytree: copies of the full leaves, zero deltas (+head)."""
  tr = {'params': {p: jnp.array(_get(params, p), copy=True)
                   for p in plan.full_leaves},
        'deltas': {n: jnp.zeros(s, jnp.float32)
                   for n, _, s in plan.delta_layers}}
  if head is not None:
    tr['head'] = jax.tree.map(lambda x: jnp.array(x, copy=True), head)
  return tr


def combine(params, trained_leaves: Dict[str, Any]):
  """params with `trained_leaves` ({path: array}) substituted."""
  for path, value in trained_leaves.items():
    layer, leaf = path.rsplit('/', 1)
    new = dict(_get(params, layer))
    new[leaf] = value
    params = network.set_layer(params, layer, new)
  return params


def fold(params, trainable, indices):
  """A normal params pytree: full leaves replaced, deltas scatter-added.

  Untouched leaves are the very same arrays as in `params` (bit-identical).
  """
  out = combine(params, trainable['params'])
  for name, d in trainable['deltas'].items():
    layer = dict(network.get_layer(out, name))
    w, idx = jnp.asarray(layer['kernel']), jnp.asarray(indices[name])
    if w.shape[2] == 1:  # depthwise: channels on the last axis
      layer['kernel'] = w.at[..., idx].add(d)
    else:
      layer['kernel'] = w.at[:, :, idx, :].add(d)
    out = network.set_layer(out, name, layer)
  return out


def effective_params(params, trainable):
  """Params the sparse forward sees (frozen ones stop_gradient'ed)."""
  frozen = jax.tree.map(jax.lax.stop_gradient, params)
  return combine(frozen, trainable['params'])


def _weight_decay_grads(grads, trainable, params, indices, wd):
  """Adds wd * (effective weight) to the grads of the trained entries."""
  if not wd:
    return grads
  g = dict(grads)
  g['params'] = {p: v + wd * trainable['params'][p]
                 for p, v in grads['params'].items()}
  dg = {}
  for name, v in grads['deltas'].items():
    w = jax.lax.stop_gradient(network.get_layer(params, name)['kernel'])
    idx = indices[name]
    base = w[..., idx] if w.shape[2] == 1 else w[:, :, idx, :]
    dg[name] = v + wd * (base + trainable['deltas'][name])
  g['deltas'] = dg
  if 'head' in grads:
    g['head'] = jax.tree.map(lambda a, b: a + wd * b, grads['head'],
                             trainable['head'])
  return g


def sparse_optimizer(lr: float, momentum: float) -> optax.GradientTransformation:
  return optax.sgd(lr, momentum=momentum or None)


def sparse_value_and_grad(loss_fn, trainable, params, head, indices, *args):
  """(loss, grads) of `loss_fn(params_eff, head, deltas, *args)` w.r.t. the
  trainable partition only.

  loss_fn receives the effective params (frozen leaves stop_gradient'ed),
  the head and the `deltas` dict for `network.apply`.
  """
  def f(tr):
    p = effective_params(params, tr)
    h = tr['head'] if 'head' in tr else jax.lax.stop_gradient(head)
    ds = {n: {'index': indices[n], 'kernel': d}
          for n, d in tr['deltas'].items()}
    return loss_fn(p, h, ds or None, *args)
  return jax.value_and_grad(f)(trainable)


def dense_value_and_grad(loss_fn, params, head, *args):
  """(loss, grads) of loss_fn(params, head, None, *args) w.r.t. both."""
  def f(tr):
    return loss_fn(tr['params'], tr['head'], None, *args)
  return jax.value_and_grad(f)({'params': params, 'head': head})
