"""Parameter masks: which conv weights, channels and biases a fine-tune updates.

The one module that owns the representation. A mask is a pytree with exactly
the params' treedef. Each leaf is either
  * a Python/NumPy bool: the whole tensor trains (True) or is frozen (False), or
  * a bool vector of channel flags, for channel-sparse kernels.

Channel convention: the conv's spec decides which kernel axis a vector flags
(`ConvLayer.mask_axis`): input channels (axis -2) of a dense conv kernel
f32[kh, kw, C_in, C_out], because only those input channels' activations
need to be kept for the weight gradient, which is where the memory saving
comes from (docs/reference/methods.md); the channels (axis -1) of a
depthwise kernel f32[kh, kw, 1, C]. A vector on a 1-D leaf (a bias) is
elementwise. No other leaf takes a vector. Functions that need the axis take
the `ModelSpec`. Masks are host-side (numpy), never traced.

The same choice per conv, without a params tree, is a `LayerView`
({conv name: LayerUpdate} + whether the classifier trains), which the cost
model and the selection use. `as_layer_view` and `mask_from_layers` read the
same per-conv choices ('full', 'bias', channel indices or a LayerUpdate)
through `layer_choice`. For optax (the mask as data in a jitted step, or leaf
labels): `mask_optax`; for the partition a sparse step trains:
`mask_partition`.
"""
import json
import pathlib
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import jax
import numpy as np

from tinytrain_jax import tree_paths
from tinytrain_jax.models.spec import ConvLayer, ModelSpec

Mask = Any
CLASSIFIER = 'classifier'


def _is_vector(m) -> bool:
  return isinstance(m, np.ndarray) and m.ndim == 1


def _shape(p) -> Tuple[int, ...]:
  return tuple(getattr(p, 'shape', np.shape(p)))


def channel_axes(spec: ModelSpec, params) -> Dict[str, Optional[int]]:
  """{leaf path: the axis a channel vector flags, or None} for every leaf.

  Conv kernels: `spec.conv(name).mask_axis` (as a non-negative axis); 1-D
  leaves (biases, BN scales): 0; anything else (the classifier kernel, a
  scalar): None, i.e. only a bool is accepted there.
  """
  convs = {f'{c.name}/kernel': c for c in spec.convs}
  out = {}
  for path, p in zip(tree_paths.leaf_paths(params), jax.tree.leaves(params)):
    shape = _shape(p)
    if path in convs:
      out[path] = len(shape) + convs[path].mask_axis
    else:
      out[path] = 0 if len(shape) == 1 else None
  return out


def full_mask(params, value: bool = False) -> Mask:
  """A mask with every leaf set to `value` (True = train everything)."""
  return jax.tree.map(lambda _: bool(value), params)


def check_mask(mask: Mask, params, spec: ModelSpec) -> None:
  """Raises ValueError if `mask` does not fit `params` (structure or lengths)."""
  mt, pt = jax.tree.structure(mask), jax.tree.structure(params)
  if mt != pt:
    raise ValueError(
        'mask structure does not match the params: mask has '
        f'{mt.num_leaves} leaves, params {pt.num_leaves}; build it '
        'with full_mask(params) / mask_from_layers(spec, params, ...)')
  axes = channel_axes(spec, params)
  for path, m, p in zip(
      tree_paths.leaf_paths(params), jax.tree.leaves(mask),
      jax.tree.leaves(params)):
    if _is_vector(m):
      ax = axes[path]
      if ax is None or m.shape[0] != _shape(p)[ax]:
        raise ValueError(f'mask leaf {path} has {m.shape[0]} channel flags but '
                         f'the param has shape {_shape(p)}' +
                         ('' if ax is not None else
                          '; only conv kernels and 1-D leaves take channel '
                          'flags, use a bool'))
    elif not isinstance(m, (bool, np.bool_)):
      raise ValueError(f'mask leaf {path} must be a bool or bool vector, got '
                       f'{type(m).__name__}')


def to_leaf_mask(mask: Mask) -> Mask:
  """Leaf-level bools (True = leaf has any trained entry), for optax.masked."""
  return jax.tree.map(lambda m: bool(np.any(m)), mask)


def broadcastable(mask: Mask, params, spec: ModelSpec) -> Mask:
  """Each leaf as a bool array that broadcasts to its param's shape.

  A channel vector becomes shape (1, .., C, .., 1) with C on the axis the
  conv's spec gives (`channel_axes`); a whole-leaf bool becomes (1,) * ndim.
  `mask_optax.channel_flags` is the shape-stable form of the same idea.
  Checks the mask first (`check_mask`).
  """
  check_mask(mask, params, spec)
  axes = channel_axes(spec, params)

  def one(path, m, p):
    shape = [1] * len(_shape(p))
    if _is_vector(m):
      shape[axes[path]] = m.shape[0]
      return np.asarray(m, bool).reshape(shape)
    return np.full(shape, bool(m))

  return jax.tree.unflatten(
      jax.tree.structure(params), [
          one(path, m, p) for path, m, p in zip(
              tree_paths.leaf_paths(params), jax.tree.leaves(mask),
              jax.tree.leaves(params))
      ])


def to_dense(mask: Mask, params, spec: ModelSpec) -> Mask:
  """Full-shape 0/1 numpy arrays in the params' dtypes (jaxpruner style).

  Only the params' shapes and dtypes are read, so this also works on traced
  or abstract params; the result is host data (a constant under jit).
  """
  return jax.tree.map(
      lambda b, p: np.broadcast_to(b.astype(p.dtype), _shape(p)),
      broadcastable(mask, params, spec), params)


def apply_mask(updates, mask: Mask, spec: ModelSpec):
  """Zeros every masked-out entry of `updates` (gradients or optimizer steps)."""
  return jax.tree.map(lambda u, d: u * d, updates,
                      to_dense(mask, updates, spec))


def count_trained(mask: Mask, params, spec: ModelSpec) -> int:
  """Number of trained scalar parameters."""
  return int(
      sum(
          np.asarray(d).sum()
          for d in jax.tree.leaves(to_dense(mask, params, spec))))


def mask_to_json(mask: Mask) -> Dict[str, Any]:
  """JSON-able {leaf path: bool | [channel indices]} (+ lengths)."""
  out = {}
  for path, m in zip(tree_paths.leaf_paths(mask), jax.tree.leaves(mask)):
    if _is_vector(m):
      out[path] = {
          'channels': np.flatnonzero(m).tolist(),
          'of': int(m.shape[0])
      }
    else:
      out[path] = bool(m)
  return out


def save_mask(path: str, mask: Mask, metadata: Optional[dict] = None) -> None:
  """Writes the mask as JSON ({'mask': ..., 'metadata': ...}); atomic."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(
      json.dumps(
          {
              'format': 'tinytrain_jax.mask/1',
              'mask': mask_to_json(mask),
              'metadata': metadata or {}
          }, indent=1))
  tmp.replace(path)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _leaf_from_json(path, key: str, v, shape, ax):
  """One mask leaf from its JSON value, strictly typed and range-checked."""
  if isinstance(v, bool):
    return v
  if not isinstance(v, dict):
    raise ValueError(f'mask file {path}: key {key!r} is {json.dumps(v)}; '
                     'accepted: true, false or {"channels": [...], "of": N}')
  n = None if ax is None else int(shape[ax])
  of, channels = v.get('of'), v.get('channels')
  if n is None or not _is_int(of) or of != n:
    raise ValueError(f'mask file {path}: key {key!r} has "of": '
                     f'{json.dumps(of)}; accepted: {n} (the channels of a '
                     f'param of shape {tuple(shape)})' if n is not None else
                     f'mask file {path}: key {key!r} is a scalar param; '
                     'accepted: true or false')
  if not isinstance(channels, list):
    raise ValueError(f'mask file {path}: key {key!r} has "channels": '
                     f'{json.dumps(channels)}; accepted: a list of integers '
                     f'0..{n - 1}')
  bad = [c for c in channels if not _is_int(c) or not 0 <= c < n]
  if bad or len(set(channels)) != len(channels):
    what = (f'channel {json.dumps(bad[0])}' if bad else 'a repeated channel')
    raise ValueError(f'mask file {path}: key {key!r} has {what} in '
                     f'"channels"; accepted: distinct integers 0..{n - 1}')
  m = np.zeros((n,), bool)
  m[channels] = True
  return m


def load_mask(path: str, params, spec: ModelSpec) -> Mask:
  """Reads a mask written by `save_mask` and checks it against `params`.

  Strict: a leaf is `true`, `false` or {"channels": [distinct ints in
  0..of-1], "of": the param's channel count}; anything else (a negative or
  too-large channel, null, a string, a float) is refused.

  Raises:
    ValueError: one line naming the file, the key and the accepted values.
  """
  try:
    blob = json.loads(pathlib.Path(path).read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f'cannot read mask file {path}: {e}') from None
  flat = blob.get('mask') if isinstance(blob, dict) else None
  if not isinstance(flat, dict):
    raise ValueError(f'mask file {path} has no "mask" object; write it with '
                     'masks.save_mask or experiments.select --save')
  paths, leaves = tree_paths.leaf_paths(params), jax.tree.leaves(params)
  if set(flat) != set(paths):
    missing = sorted(set(paths) - set(flat))[:3]
    extra = sorted(set(flat) - set(paths))[:3]
    raise ValueError(
        f'mask file {path} does not match the params (missing '
        f'{missing}, unexpected {extra}); was it saved for another '
        'model or feature_mix setting?')
  axes = channel_axes(spec, params)
  out = [
      _leaf_from_json(path, pth, flat[pth], _shape(leaf), axes[pth])
      for pth, leaf in zip(paths, leaves)
  ]
  mask = jax.tree.unflatten(jax.tree.structure(params), out)
  check_mask(mask, params, spec)
  return mask


# ---------------------------------------------------------------- layer view
class LayerUpdate(NamedTuple):
  """What a mask trains in one conv.

  weight_channels: sorted selected channel indices of the kernel along
    `ConvLayer.mask_axis` (input channels; depthwise: channels), all of them
    for a full update, () if the kernel is frozen.
  n_channels: `ConvLayer.mask_channels` (C_in, or C for depthwise).
  bias: whether the bias (BN shift; with BN also the scale) is trained.
  """
  weight_channels: Tuple[int, ...]
  n_channels: int
  bias: bool

  @property
  def weight_fraction(self) -> float:
    return len(self.weight_channels) / self.n_channels

  @property
  def trains_weight(self) -> bool:
    return bool(self.weight_channels)

  @property
  def trains_anything(self) -> bool:
    return self.trains_weight or self.bias


class LayerView(NamedTuple):
  """A mask seen per conv: what the cost model and the selection read.

  layers: {conv name: LayerUpdate}; convs not listed are frozen.
  classifier: whether the linear classifier (if the model has one) trains.
  """
  layers: Mapping[str, LayerUpdate]
  classifier: bool = False


def layer_choice(conv: ConvLayer, choice) -> LayerUpdate:
  """One conv's update from 'full', 'bias', channel indices or a LayerUpdate.

  Channel indices (any iterable of ints along `conv.mask_axis`) train those
  channels of the kernel and the whole bias.
  """
  n = conv.mask_channels
  if isinstance(choice, LayerUpdate):
    if choice.n_channels != n:
      raise ValueError(f'LayerUpdate for {conv.name} has n_channels='
                       f'{choice.n_channels}, expected {n}')
    return choice
  if isinstance(choice, str):
    if choice not in ('full', 'bias'):
      raise ValueError(f"update for conv {conv.name} must be 'full', 'bias', "
                       f'channel indices or a LayerUpdate, got {choice!r}')
    return LayerUpdate(tuple(range(n)) if choice == 'full' else (), n, True)
  chans = tuple(sorted({int(i) for i in np.asarray(choice).ravel()}))
  if chans and (chans[0] < 0 or chans[-1] >= n):
    raise ValueError(f'channel index out of range for conv {conv.name}: '
                     f'channel indices must be in [0, {n}), got {chans}')
  return LayerUpdate(chans, n, True)


def as_layer_view(spec: ModelSpec, updates: Mapping[Any, Any],
                  train_classifier: bool = False) -> LayerView:
  """LayerView from {conv name | index: choice} (see `layer_choice`).

  Example:
    view = as_layer_view(spec, {41: 'full', 40: [0, 5, 7]})
  """
  layers = {}
  for key, choice in updates.items():
    conv = spec.conv(key)
    layers[conv.name] = layer_choice(conv, choice)
  return LayerView(layers, bool(train_classifier))


def layer_updates(spec: ModelSpec, mask: Mask) -> Dict[str, LayerUpdate]:
  """{conv name: LayerUpdate} for every conv of `spec` with anything trained.

  The classifier (not a conv) is not included; see `trains_classifier`.
  """
  out = {}
  for conv in spec.convs:
    m = tree_paths.get(mask, conv.name)
    n = conv.mask_channels
    k = m['kernel']
    if _is_vector(k):
      chans = tuple(int(i) for i in np.flatnonzero(k))
    else:
      chans = tuple(range(n)) if bool(k) else ()
    bias = bool(np.any(m['bias'])) or bool(np.any(m.get('scale', False)))
    if chans or bias:
      out[conv.name] = LayerUpdate(chans, n, bias)
  return out


def trains_classifier(mask: Mask) -> bool:
  return CLASSIFIER in mask and bool(np.any(jax.tree.leaves(mask[CLASSIFIER])))


def layer_view(spec: ModelSpec, mask_or_view) -> LayerView:
  """The LayerView of a params-shaped mask, or a LayerView checked and
  reduced to the convs that train anything (the classifier only counts when
  the model has one)."""
  if isinstance(mask_or_view, LayerView):
    layers = {}
    for key, u in mask_or_view.layers.items():
      conv = spec.conv(key)
      u = layer_choice(conv, u)
      if u.trains_anything:
        layers[conv.name] = u
    return LayerView(layers,
                     bool(mask_or_view.classifier) and bool(spec.num_classes))
  if isinstance(mask_or_view, Mapping) and any(
      isinstance(v, LayerUpdate) for v in mask_or_view.values()):
    raise ValueError('a dict of LayerUpdates is not a mask; build a LayerView '
                     'with masks.as_layer_view(spec, updates)')
  return LayerView(
      layer_updates(spec, mask_or_view), trains_classifier(mask_or_view))


def mask_from_view(spec: ModelSpec, params, view: LayerView) -> Mask:
  """The params-shaped mask of a LayerView (params: arrays or shapes)."""
  mask = full_mask(params, False)
  for name, u in layer_view(spec, view).layers.items():
    conv = spec.conv(name)
    leaf = dict(tree_paths.get(mask, conv.name))
    if len(u.weight_channels) == u.n_channels:
      leaf['kernel'] = True
    elif u.weight_channels:
      v = np.zeros((u.n_channels,), bool)
      v[list(u.weight_channels)] = True
      leaf['kernel'] = v
    for b in ('bias', 'scale'):
      if b in leaf:
        leaf[b] = bool(u.bias)
    mask = tree_paths.replace(mask, conv.name, leaf)
  if view.classifier and CLASSIFIER in mask:
    mask[CLASSIFIER] = jax.tree.map(lambda _: True, mask[CLASSIFIER])
  return mask


def mask_from_layers(spec: ModelSpec, params, updates: Mapping[Any, Any],
                     train_classifier: bool = False) -> Mask:
  """Builds a mask from per-conv choices.

  Args:
    spec: the ModelSpec the params belong to.
    params: parameter pytree (for the structure).
    updates: {conv name or index: LayerUpdate | 'full' | 'bias' |
      array of selected channel indices (the bias is then trained too)}.
    train_classifier: also train the linear classifier, if any.

  Example:
    mask = mask_from_layers(spec, params, {41: 'full', 40: [0, 5, 7]})
  """
  return mask_from_view(spec, params,
                        as_layer_view(spec, updates, train_classifier))
