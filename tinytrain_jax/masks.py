"""Parameter masks: which conv weights, channels and biases a fine-tune updates.

A mask is a pytree with exactly the params' treedef. Each leaf is either
  * a Python/NumPy bool: the whole tensor trains (True) or is frozen (False), or
  * a bool vector of channel flags, for channel-sparse kernels.

Channel convention: a vector on a conv kernel f32[kh, kw, C_in, C_out] flags
*input* channels (axis -2): only those input channels' activations need to be kept
for the weight gradient, which is where the memory saving comes from
(tiny-training's sparse update and reference criterion.md §2.1 option B). For a
depthwise kernel f32[kh, kw, 1, C] input and output channel coincide and the vector
flags axis -1. General rule: axis -2 unless it has size 1, then axis -1. A vector
on a 1-D leaf (bias) is elementwise. Masks are host-side (numpy), never traced.
For optax (the mask as data in a jitted step, or leaf labels): `mask_optax`.
"""
import json
import pathlib
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import numpy as np

Mask = Any


def _is_vector(m) -> bool:
  return isinstance(m, np.ndarray) and m.ndim == 1


def channel_axis(shape) -> int:
  """Axis a channel vector flags on a leaf of this shape (see module doc)."""
  if len(shape) <= 1:
    return 0 if shape else None
  return len(shape) - 1 if shape[-2] == 1 else len(shape) - 2


def full_mask(params, value: bool = False) -> Mask:
  """A mask with every leaf set to `value` (True = train everything)."""
  return jax.tree.map(lambda _: bool(value), params)


def check_mask(mask: Mask, params) -> None:
  """Raises ValueError if `mask` does not fit `params` (structure or lengths)."""
  mt, pt = jax.tree.structure(mask), jax.tree.structure(params)
  if mt != pt:
    raise ValueError('mask structure does not match the params: mask has '
                     f'{mt.num_leaves} leaves, params {pt.num_leaves}; build it '
                     'with full_mask(params) / mask_from_layers(spec, params, ...)')
  for path, m, p in zip(_paths(params), jax.tree.leaves(mask),
                        jax.tree.leaves(params)):
    if _is_vector(m):
      ax = channel_axis(p.shape)
      if ax is None or m.shape[0] != p.shape[ax]:
        raise ValueError(f'mask leaf {path} has {m.shape[0]} channel flags but '
                         f'the param has shape {tuple(p.shape)}')
    elif not isinstance(m, (bool, np.bool_)):
      raise ValueError(f'mask leaf {path} must be a bool or bool vector, got '
                       f'{type(m).__name__}')


def _paths(tree):
  return ['/'.join(str(getattr(k, 'key', k)) for k in kp)
          for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def to_leaf_mask(mask: Mask) -> Mask:
  """Leaf-level bools (True = leaf has any trained entry), for optax.masked."""
  return jax.tree.map(lambda m: bool(np.any(m)), mask)


def to_dense(mask: Mask, params) -> Mask:
  """Full-shape 0/1 numpy arrays in the params' dtypes (jaxpruner style).

  Only the params' shapes and dtypes are read, so this also works on traced
  or abstract params; the result is host data (a constant under jit).
  """
  def dense(m, p):
    if _is_vector(m):
      shape = [1] * p.ndim
      shape[channel_axis(p.shape)] = m.shape[0]
      return np.broadcast_to(m.reshape(shape).astype(p.dtype), p.shape)
    return np.full(p.shape, bool(m), p.dtype)
  return jax.tree.map(dense, mask, params)


def apply_mask(updates, mask: Mask):
  """Zeros every masked-out entry of `updates` (gradients or optimizer steps)."""
  return jax.tree.map(lambda u, d: u * d, updates, to_dense(mask, updates))


def count_trained(mask: Mask, params) -> int:
  """Number of trained scalar parameters."""
  return int(sum(np.asarray(d).sum() for d in
                 jax.tree.leaves(to_dense(mask, params))))


def mask_to_json(mask: Mask) -> Dict[str, Any]:
  """JSON-able {leaf path: bool | [channel indices]} (+ lengths)."""
  out = {}
  for path, m in zip(_paths(mask), jax.tree.leaves(mask)):
    if _is_vector(m):
      out[path] = {'channels': np.flatnonzero(m).tolist(), 'of': int(m.shape[0])}
    else:
      out[path] = bool(m)
  return out


def save_mask(path: str, mask: Mask, metadata: Optional[dict] = None) -> None:
  """Writes the mask as JSON ({'mask': ..., 'metadata': ...}); atomic."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps({'format': 'tinytrain_jax.mask/1',
                             'mask': mask_to_json(mask),
                             'metadata': metadata or {}}, indent=1))
  tmp.replace(path)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _leaf_from_json(path, key: str, v, shape):
  """One mask leaf from its JSON value, strictly typed and range-checked."""
  if isinstance(v, bool):
    return v
  ax = channel_axis(shape)
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
    what = (f'channel {json.dumps(bad[0])}' if bad else
            'a repeated channel')
    raise ValueError(f'mask file {path}: key {key!r} has {what} in '
                     f'"channels"; accepted: distinct integers 0..{n - 1}')
  m = np.zeros((n,), bool)
  m[channels] = True
  return m


def load_mask(path: str, params) -> Mask:
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
  paths, leaves = _paths(params), jax.tree.leaves(params)
  if set(flat) != set(paths):
    missing = sorted(set(paths) - set(flat))[:3]
    extra = sorted(set(flat) - set(paths))[:3]
    raise ValueError(f'mask file {path} does not match the params (missing '
                     f'{missing}, unexpected {extra}); was it saved for another '
                     'model or feature_mix setting?')
  out = [_leaf_from_json(path, pth, flat[pth], tuple(leaf.shape))
         for pth, leaf in zip(paths, leaves)]
  mask = jax.tree.unflatten(jax.tree.structure(params), out)
  check_mask(mask, params)
  return mask


# ---------------------------------------------------------------- layer view
class LayerUpdate(NamedTuple):
  """What a mask trains in one conv.

  weight_channels: sorted selected channel indices of the kernel (input
    channels; depthwise: channels), all of them for a full update, () if the
    kernel is frozen.
  n_channels: channels on that axis (C_in, or C for depthwise).
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


def _layer_leaf(tree, name):
  for part in name.split('/'):
    tree = tree[part]
  return tree


def layer_updates(spec, mask: Mask) -> Dict[str, LayerUpdate]:
  """{conv name: LayerUpdate} for every conv of `spec` with anything trained.

  The classifier (not a conv) is not included; see `trains_classifier`.
  """
  out = {}
  for conv in spec.convs:
    m = _layer_leaf(mask, conv.name)
    n = conv.c_out if conv.depthwise else conv.c_in
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
  return 'classifier' in mask and bool(np.any(jax.tree.leaves(
      mask['classifier'])))


def mask_from_layers(spec, params, updates: Dict[str, Any],
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
  mask = full_mask(params, False)
  for key, u in updates.items():
    conv = spec.conv(key)
    n = conv.c_out if conv.depthwise else conv.c_in
    if isinstance(u, LayerUpdate):
      chans, bias = u.weight_channels, u.bias
    elif isinstance(u, str):
      if u not in ('full', 'bias'):
        raise ValueError(f"layer update must be 'full', 'bias', channel "
                         f'indices or a LayerUpdate, got {u!r}')
      chans, bias = (tuple(range(n)) if u == 'full' else ()), True
    else:
      chans, bias = tuple(int(i) for i in np.asarray(u).ravel()), True
    if chans and (min(chans) < 0 or max(chans) >= n):
      raise ValueError(f'channel index out of range for {conv.name} '
                       f'({n} channels): {chans}')
    leaf = dict(_layer_leaf(mask, conv.name))
    if len(set(chans)) == n:
      leaf['kernel'] = True
    elif chans:
      v = np.zeros((n,), bool)
      v[list(chans)] = True
      leaf['kernel'] = v
    for b in ('bias', 'scale'):
      if b in leaf:
        leaf[b] = bool(bias)
    mask = _set(mask, conv.name, leaf)
  if train_classifier and 'classifier' in mask:
    mask['classifier'] = jax.tree.map(lambda _: True, mask['classifier'])
  return mask


def _set(tree, name, value):
  head, *rest = name.split('/')
  out = dict(tree)
  out[head] = _set(tree[head], '/'.join(rest), value) if rest else value
  return out
