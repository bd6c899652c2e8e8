"""Task-independent masks: static L2 / random channels, last-k, SparseUpdate.

The static channel baselines of docs/reference/criterion.md §4 keep the same layers and
channel counts as a dynamic selection and change only which channels:
  * L2: input channel c of a conv ranked by ‖W[:, :, c, :]‖₂ (depthwise:
    ‖W[:, :, 0, c]‖₂), largest first (SparseUpdate's magnitude order);
  * random: a fixed permutation from np.random.default_rng([seed, index]).
Ties keep the lower channel index first.

Example:
  sel = select(spec, params, ep, cfg)
  l2 = static_l2_mask(spec, params, sel.channel_counts)
"""
from typing import Any, Mapping

import numpy as np

from tinytrain_jax import cost
from tinytrain_jax import masks as masks_lib
from tinytrain_jax import tree_paths
from tinytrain_jax.models.spec import ConvLayer, ModelSpec


def l2_order(params, conv: ConvLayer) -> np.ndarray:
  """Channel indices of `conv` by weight-slice L2 norm, largest first."""
  w = np.asarray(tree_paths.get(params, f'{conv.name}/kernel'), np.float64)
  axis = w.ndim + conv.mask_axis
  other = tuple(a for a in range(w.ndim) if a != axis)
  return np.argsort(-np.sqrt(np.sum(w * w, axis=other)), kind='stable')


def random_order(conv: ConvLayer, seed: int) -> np.ndarray:
  """A fixed random channel order of `conv` for (seed, conv index)."""
  rng = np.random.default_rng([int(seed), conv.index])
  return rng.permutation(conv.mask_channels)


def _from_counts(spec, params, counts, order_fn, train_classifier):
  updates = {}
  for key, k in counts.items():
    conv = spec.conv(key)
    n = conv.mask_channels
    if not 1 <= int(k) <= n:
      raise ValueError(f'channel count for {conv.name} must be in [1, {n}], '
                       f'got {k}; pass counts like selection.channel_counts')
    updates[conv.name] = sorted(int(i) for i in order_fn(conv)[:int(k)])
  return masks_lib.mask_from_layers(spec, params, updates, train_classifier)


def static_l2_mask(spec: ModelSpec, params, counts: Mapping[Any, int],
                   train_classifier: bool = False):
  """Mask with the top-k L2-norm channels of each listed conv (+ its bias).

  Args:
    spec, params: the model.
    counts: {conv name or index: k channels}.
    train_classifier: also train the classifier.

  Returns:
    params-shaped mask.
  """
  return _from_counts(spec, params, counts, lambda c: l2_order(params, c),
                      train_classifier)


def random_mask(spec: ModelSpec, params, counts: Mapping[Any, int],
                seed: int = 0, train_classifier: bool = False):
  """Mask with k seeded-random channels of each listed conv (+ its bias)."""
  return _from_counts(spec, params, counts, lambda c: random_order(c, seed),
                      train_classifier)


def last_k_mask(spec: ModelSpec, params, k: int, ratio: float = 1.0,
                train_classifier: bool = False):
  """Weights (first max(1, int(C · ratio)) input channels) and biases of the
  last k convs.

  Args:
    spec, params: the model.
    k: number of convs counted from the output, 1..len(spec.convs).
    ratio: channel fraction in (0, 1]; channels are the first ones, as in
      tiny-training's sliced kernels.
    train_classifier: also train the classifier.
  """
  n = len(spec.convs)
  if not 1 <= k <= n:
    raise ValueError(f'k must be in [1, {n}] for {spec.name}, got {k}')
  if not 0 < ratio <= 1:
    raise ValueError(f'ratio must be in (0, 1], got {ratio}')
  updates = {
      c.index: list(range(max(1, int(c.mask_channels * ratio))))
      for c in spec.convs[n - k:]
  }
  return masks_lib.mask_from_layers(spec, params, updates, train_classifier)


def sparse_update_mask(spec: ModelSpec, params, n_bias_update,
                       manual_weight_idx, weight_update_ratio,
                       train_classifier: bool = False):
  """tiny-training's SparseUpdate scheme (backward_config) as a mask.

  Args:
    spec, params: the model.
    n_bias_update: biases of the last n convs (int or 'all').
    manual_weight_idx: conv indices whose kernels train ('36-39-41' or list).
    weight_update_ratio: per-index fractions (first int(C · r) input
      channels), a single number, or None (all channels).
    train_classifier: also train the classifier.

  Example:
    sparse_update_mask(spec, params, 12, '36-39-41', '1-0.5-0.25')
  """
  layers = cost.sparse_update_to_layers(spec, n_bias_update, manual_weight_idx,
                                        weight_update_ratio)
  return masks_lib.mask_from_view(spec, params,
                                  layers._replace(classifier=train_classifier))
