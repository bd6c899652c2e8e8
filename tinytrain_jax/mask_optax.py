"""optax interop for parameter masks: the mask as data, or as leaf labels.

Two ways to train only what a mask (see `masks`) selects with any optax
optimizer:

* `dynamic_masked(tx)` takes the mask as an argument of `update`, so one
  jitted train step serves every task's mask without retracing. Pass the
  mask through `channel_flags(mask, params, spec)` first: its arrays have
  shapes that depend on the params only. Optimizer state stays full-size.
* `optax_labels(mask, params)` labels whole leaves for `optax.multi_transform`
  (frozen leaves then hold no optimizer state). The labels are trace-time
  constants, so the step compiles once per leaf pattern, and leaves with a
  channel vector are only 'trainable' as a whole: their channel part needs
  `dynamic_masked` on top.

Example:
  tx = dynamic_masked(optax.adam(1e-3))
  opt_state = tx.init(params)
  flags = channel_flags(load_mask('mask.json', params, spec), params, spec)
  updates, opt_state = tx.update(grads, opt_state, params, mask=flags)
"""
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinytrain_jax import masks
from tinytrain_jax import tree_paths
from tinytrain_jax.models.spec import ModelSpec

TRAINABLE, FROZEN = 'trainable', 'frozen'


def channel_flags(mask: masks.Mask, params, spec: ModelSpec) -> Any:
  """The mask in a shape-stable form, to pass as data into a jitted step.

  Every leaf becomes a bool array that broadcasts to its param: one flag per
  channel on the axis the conv's spec gives (`masks.channel_axes`: input
  channels of a conv kernel, e.g. bool[1, 1, C_in, 1]; channels of a
  depthwise kernel, bool[1, 1, 1, C]; entries of a bias, bool[C]), and size
  1 on every other axis. Whole-leaf bools are expanded, so every mask of the
  same params gives the same shapes and dtypes: a jitted step compiles once
  for all of them.

  Args:
    mask: a mask for `params` (bool or bool[C] leaves; see `masks`).
    params: the parameter pytree (only shapes are read).
    spec: the params' ModelSpec (decides each kernel's channel axis).

  Returns:
    numpy bool arrays with the params' treedef.

  Raises:
    ValueError: the mask does not fit the params (`masks.check_mask`).

  Example:
    flags = channel_flags(mask, params, spec)  # `mask=` of dynamic_masked
  """
  axes = masks.channel_axes(spec, params)
  shaped = masks.broadcastable(mask, params, spec)

  def stable(path, b, p):
    # A whole-leaf bool on a leaf that has a channel axis is expanded to
    # that axis, so the shapes never depend on the mask.
    ax = axes[path]
    shape = [1] * np.ndim(p)
    if ax is not None:
      shape[ax] = np.shape(p)[ax]
    return np.broadcast_to(b, shape).copy()

  return jax.tree.unflatten(
      jax.tree.structure(params), [
          stable(path, b, p) for path, b, p in zip(
              tree_paths.leaf_paths(params), jax.tree.leaves(shaped),
              jax.tree.leaves(params))
      ])


def _keep(path, m, shape) -> jax.Array:
  """Broadcasts one mask leaf to a bool array of `shape` (True = trained).

  Accepts `bool[]` (whole leaf), a `channel_flags` leaf (broadcastable:
  same rank, each axis 1 or the param's size), or a dense array of `shape`
  (any dtype; nonzero = trained, as `masks.to_dense` writes it). Shapes are
  static, so a wrong one raises here, at trace time.
  """
  m = jnp.asarray(m)
  if m.ndim == 0 or (m.ndim == len(shape) and
                     all(a in (1, b) for a, b in zip(m.shape, shape))):
    return jnp.broadcast_to(m != 0, shape)
  raise ValueError(f'mask leaf {jax.tree_util.keystr(path)} has shape '
                   f'{tuple(m.shape)} but its param has shape {tuple(shape)}; '
                   'accepted: (), a shape that broadcasts to it with the same '
                   'rank, or the shape itself. Pass channel_flags(mask, '
                   'params, spec) or masks.to_dense(mask, params, spec)')


def _zero_frozen(updates, mask):
  """Sets the frozen entries of `updates` to -0.0.

  -0.0 rather than +0.0: it is the additive identity of IEEE floats
  (p + -0.0 == p bit for bit, also for p = -0.0, which p + 0.0 turns into
  +0.0), so `optax.apply_updates` leaves frozen params bit-identical.
  `where`, not a product, so a NaN or inf gradient of a frozen entry cannot
  leak in.
  """
  if jax.tree.structure(mask) != jax.tree.structure(updates):
    raise ValueError('mask structure does not match the updates: mask has '
                     f'{jax.tree.structure(mask).num_leaves} leaves, updates '
                     f'{jax.tree.structure(updates).num_leaves}; pass '
                     'channel_flags(mask, params, spec)')
  return jax.tree_util.tree_map_with_path(
      lambda path, u, m: jnp.where(
          _keep(path, m, u.shape), u, -jnp.zeros_like(u)), updates, mask)


def dynamic_masked(
    tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Wraps `tx` so only masked entries move; the mask is an `update` argument.

  `update(updates, state, params=None, *, mask, **extra_args)` zeroes the
  frozen entries of the gradients before `tx` (so a NaN there cannot reach
  the state, and Adam's moments of entries frozen since `init` stay 0 unless
  `tx` itself adds a term before Adam, like a chained weight decay) and of
  its output after it (so weight decay or other additive terms cannot move
  them). Frozen entries get an update of exactly -0.0, hence stay
  bit-identical under `optax.apply_updates`. Their state is irrelevant: it
  never reaches the output. The mask is traced data: one jit-compiled step
  serves every mask whose leaves keep their shapes, which `channel_flags`
  guarantees. The state is `tx`'s own, for all entries: no memory saving
  (for that, label leaves with `optax_labels`). Re-`init` it per task; moments
  from an earlier mask never reach a frozen entry, but would carry over to
  entries the new mask trains.

  Args:
    tx: any optax transformation; `extra_args` other than `mask` reach it.

  Returns:
    A GradientTransformationExtraArgs. `update`'s `mask` is a pytree with
    the updates' treedef; each leaf is `bool[]` (whole leaf), a
    `channel_flags` leaf, or a dense array of the param's shape (nonzero =
    trained, e.g. `masks.to_dense`).

  Raises:
    ValueError (at trace time): a mask leaf of another shape, or a mask
      with another structure.

  Example:
    tx = dynamic_masked(optax.adam(1e-3)); state = tx.init(params)
    updates, state = tx.update(grads, state, params, mask=flags)  # in jit
  """
  tx = optax.with_extra_args_support(tx)

  def update(updates, state, params=None, *, mask, **extra_args):
    updates = _zero_frozen(updates, mask)
    updates, state = tx.update(updates, state, params, **extra_args)
    return _zero_frozen(updates, mask), state

  return optax.GradientTransformationExtraArgs(tx.init, update)


def optax_labels(mask: masks.Mask, params, spec: ModelSpec) -> Any:
  """Leaf labels, 'trainable' or 'frozen', for `optax.multi_transform`.

  A leaf is 'trainable' if the mask trains any of its entries, so a leaf
  with a channel vector is 'trainable' as a whole: the labels alone would
  also train its unselected channels. Wrap the multi_transform in
  `dynamic_masked` and pass `channel_flags` to keep those frozen (first
  example below). Choosing 'trainable' rather than raising keeps the labels
  usable for any mask `experiments.select` writes.

  Args:
    mask: a mask for `params` (see `masks`); host data, not traced.
    params: the parameter pytree (for the structure check).
    spec: the params' ModelSpec.

  Returns:
    A pytree of str with the params' treedef.

  Raises:
    ValueError: the mask does not fit the params (`masks.check_mask`).

  Example:
    tx = dynamic_masked(optax.multi_transform(
        {'trainable': optax.adam(1e-3), 'frozen': optax.set_to_zero()},
        optax_labels(mask, params, spec)))  # update(..., mask=channel_flags(..))
  """
  masks.check_mask(mask, params, spec)
  return jax.tree.map(lambda m: TRAINABLE if np.any(m) else FROZEN, mask)
