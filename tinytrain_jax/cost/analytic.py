"""Analytic backward-pass cost rules from a ModelSpec and a mask (no tracing).

Three named models of docs/reference/cost_model.md, all per layer and in pure Python
(each call is a loop over the convs, well under a millisecond), so the channel
selection can call them hundreds of times per task:

* `backward_macs`: compute rule of §2 (per sample, MACs = FLOPs / 2).
* `backward_memory_bytes`: the `fp32_saved` memory model of §3.4 (what the
  backward pass must keep, plus trained parameters, gradients and optimizer
  slots); the model the selection budgets against.
* `tt_memory_bits` / `sparse_update_memory_kb`: tiny-training's bit-level model
  (§3.1, their `nelem_saved_for_backward`).
* `fulltrain_saved_elements`: TinyTrain's FullTrain MB relation (§3.3).

A `mask` argument is either a params-shaped mask (`tinytrain_jax.masks`) or a
`masks.LayerView` (the faster form for a selection loop; `as_layer_view`
builds one from per-conv choices).

Example:
  spec = model_spec('mcunet-5fps')
  full = {c.index: 'full' for c in spec.convs}
  backward_macs(spec, as_layer_view(spec, full), True).total_macs  # 44907008
"""
import functools
from typing import Dict, NamedTuple, Optional, Sequence, Tuple
from typing import Union

from tinytrain_jax.masks import as_layer_view
from tinytrain_jax.masks import CLASSIFIER
from tinytrain_jax.masks import layer_view
from tinytrain_jax.masks import LayerUpdate
from tinytrain_jax.masks import LayerView
from tinytrain_jax.models.registry import model_spec
from tinytrain_jax.models.spec import ModelSpec


class BackwardMacs(NamedTuple):
  """Backward MACs per sample (docs/reference/cost_model.md §2).

  weight_grad_macs: Σ over trained kernels of r_l · MACs_l.
  input_grad_macs: Σ of MACs_l over the layers above the lowest layer that
    needs a gradient (plus that layer with count_unneeded_input_grad).
  total_macs: the sum of both.
  per_layer: {layer name: (weight_grad_macs, input_grad_macs)}, every conv
    and, when the spec has one, 'classifier'.
  """
  weight_grad_macs: int
  input_grad_macs: int
  total_macs: int
  per_layer: Dict[str, Tuple[int, int]]


class LayerMemory(NamedTuple):
  """One layer's share of `BackwardMemory` (bytes at the given batch)."""
  saved_input_bytes: int  # trained-kernel input slice (BN: normalised input)
  mask_bytes: int  # 1-bit ReLU6 mask where a gradient passes
  trained_params: int  # trained scalars (kernel slice + bias [+ BN scale])


class BackwardMemory(NamedTuple):
  """The fp32_saved memory model (docs/reference/cost_model.md §3.4), in bytes.

  saved_activation_bytes: Σ saved_input_bytes + Σ mask_bytes, at the batch.
  param_bytes: trained parameters (weight copy being updated).
  grad_bytes: their gradients (= param_bytes).
  optimizer_bytes: optimizer_slots × param_bytes (1 slot = SGD momentum).
  total_bytes: the sum of the four.
  per_layer: {layer name: LayerMemory} for every conv (+ 'classifier').
  """
  saved_activation_bytes: int
  param_bytes: int
  grad_bytes: int
  optimizer_bytes: int
  total_bytes: int
  per_layer: Dict[str, LayerMemory]


class TTMemory(NamedTuple):
  """tiny-training's bit-level memory breakdown (docs/reference/cost_model.md §3.1), bits."""
  input_bits: int  # saved input slices of weight-trained convs (8 bit)
  weight_bits: int  # trained weight entries (8 bit)
  bias_bits: int  # trained biases (32 bit)
  mask_bits: int  # 1-bit clamp masks of updated convs
  feature_bits: int  # pooled feature kept for the fp classifier (8 bit)
  momentum_bits: int  # 0 in tiny-training's setting
  total_bits: int

  @property
  def kb(self) -> float:
    """Total in tiny-training's kB (= bits / 8 / 1024)."""
    return self.total_bits / 8 / 1024


def _ceil_bytes(bits: int) -> int:
  return -(-int(bits) // 8)


def _lowest_index(spec, updates) -> Optional[int]:
  idx = [spec.conv(n).index for n in updates]
  return min(idx) if idx else None


@functools.lru_cache(maxsize=64)
def _conv_table(spec: ModelSpec):
  """Per-conv constants: (name, index, macs, n_channels, kk, out_elems, ...)."""
  rows = []
  for c in spec.convs:
    n = c.mask_channels
    per_channel_weights = c.kernel * c.kernel * (1 if c.depthwise else c.c_out)
    rows.append(
        (c.name, c.index, c.macs, n, per_channel_weights, c.h_in * c.h_in,
         c.output_elements, c.c_out, c.activation == 'relu6'))
  return tuple(rows)


# ------------------------------------------------------------------ compute
def backward_macs(spec: ModelSpec, mask,
                  count_unneeded_input_grad: bool = False) -> BackwardMacs:
  """Backward MACs per sample, docs/reference/cost_model.md §2.

  Weight gradients: Σ over trained kernels of r_l · MACs_l, r_l = the kernel's
  weight_fraction (selected input channels / C_in; depthwise channels / C).
  Input gradients: MACs_l of every conv above l_min, the lowest conv with a
  trained kernel or bias (its own input gradient is not needed). With
  `count_unneeded_input_grad` l_min's input gradient is counted too (the naive
  autograd convention of TinyTrain's FullTrain row: exactly 2 × forward).
  Classifier (when the spec has one): weight gradient = its forward MACs
  (C_feat · K) if trained; input gradient = the same if any conv needs a
  gradient. Bias gradients, pooling and elementwise ops are free.

  Args:
    spec: the model (resolution fixes the MACs).
    mask: params-shaped mask or layer view (see `layer_view`).
    count_unneeded_input_grad: also count l_min's input gradient.

  Returns:
    BackwardMacs (ints, per sample).
  """
  updates, cls = layer_view(spec, mask)
  lmin = _lowest_index(spec, updates)
  per_layer, w_total, i_total = {}, 0, 0
  for name, idx, macs, n, _, _, _, _, _ in _conv_table(spec):
    u = updates.get(name)
    w = macs // n * len(u.weight_channels) if u is not None else 0
    i = 0
    if lmin is not None and (idx > lmin or
                             (count_unneeded_input_grad and idx == lmin)):
      i = macs
    per_layer[name] = (w, i)
    w_total += w
    i_total += i
  if spec.num_classes:
    w = spec.classifier_macs if cls else 0
    i = spec.classifier_macs if lmin is not None else 0
    per_layer[CLASSIFIER] = (w, i)
    w_total += w
    i_total += i
  return BackwardMacs(w_total, i_total, w_total + i_total, per_layer)


# ------------------------------------------------------------------- memory
def backward_memory_bytes(spec: ModelSpec, mask, batch_size: int = 1,
                          optimizer_slots: int = 1, act_bits: int = 32,
                          param_bits: int = 32) -> BackwardMemory:
  """The fp32_saved backward-memory model (docs/reference/cost_model.md §3.2-3.4), bytes.

  Rule, per conv l (l_min = lowest conv with a trained kernel or bias):
    * trained kernel with c selected input channels (depthwise: channels):
      keeps its input slice, H_in · W_in · c values at `act_bits`;
    * BN variant (spec.batchnorm) with a trained scale/shift: keeps the
      normalised input, C_out · H_out · W_out values (inference-mode BN
      assumed: frozen statistics, no batch-statistics backward);
    * ReLU6 conv with l >= l_min (a gradient passes through it): a 1-bit mask
      of its output, C_out · H_out · W_out bits;
    * frozen convs, bias-only convs, residual adds and pooling keep nothing
      (frozen weights needed for input gradients are parameters, not counted).
  A trained classifier keeps the pooled feature (C_feat values). Activations
  scale with the batch; parameters do not. Trained parameters (kernel slice
  c · k² · C_out, depthwise c · k², + C_out bias [+ C_out BN scale], trained
  classifier (C_feat + 1) · K) cost `param_bits` each for the weight, its
  gradient and every optimizer slot.

  Args:
    spec: the model.
    mask: params-shaped mask or layer view (see `layer_view`).
    batch_size: images per step (> 0).
    optimizer_slots: state tensors per parameter (0 SGD, 1 momentum, 2 Adam).
    act_bits: bits per saved activation value.
    param_bits: bits per parameter / gradient / optimizer value.

  Returns:
    BackwardMemory (ints, bytes).
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  if optimizer_slots < 0:
    raise ValueError(f'optimizer_slots must be >= 0, got {optimizer_slots}')
  updates, cls = layer_view(spec, mask)
  lmin = _lowest_index(spec, updates)
  per_layer, saved, n_params = {}, 0, 0
  for name, idx, _, _, pcw, hw_in, out_el, c_out, relu in _conv_table(spec):
    u = updates.get(name)
    in_bits = mask_bits = trained = 0
    if u is not None:
      c = len(u.weight_channels)
      in_bits = hw_in * c * act_bits
      trained = c * pcw
      if u.bias:
        trained += c_out * (2 if spec.batchnorm else 1)
        if spec.batchnorm:
          in_bits += out_el * act_bits
    if relu and lmin is not None and idx >= lmin:
      mask_bits = out_el
    lm = LayerMemory(
        _ceil_bytes(in_bits * batch_size), _ceil_bytes(mask_bits * batch_size),
        trained)
    per_layer[name] = lm
    saved += lm.saved_input_bytes + lm.mask_bytes
    n_params += trained
  if spec.num_classes:
    lm = LayerMemory(0, 0, 0)
    if cls:
      lm = LayerMemory(
          _ceil_bytes(spec.feature_dim * act_bits * batch_size), 0,
          spec.classifier_params)
    per_layer[CLASSIFIER] = lm
    saved += lm.saved_input_bytes
    n_params += lm.trained_params
  p = _ceil_bytes(n_params * param_bits)
  opt = optimizer_slots * p
  return BackwardMemory(saved, p, p, opt, saved + 2 * p + opt, per_layer)


def tt_memory_breakdown(spec: ModelSpec, mask, act_bits: int = 8,
                        weight_bits: int = 8, bias_bits: int = 32,
                        momentum_bits: int = 0,
                        count_pass_through_masks: bool = False) -> TTMemory:
  """tiny-training's `nelem_saved_for_backward` for an arbitrary mask.

  Per updated conv (trained bias or kernel): a 1-bit mask of its output
  (C_out · H_out · W_out); a trained bias adds C_out · (bias + momentum) bits;
  a trained kernel with c selected input channels adds its input slice
  H_in · W_in · c · act_bits and its weight entries c · k² (depthwise) or
  C_out · c · k² at (weight + momentum) bits. Plus the pooled feature
  (C_feat · act_bits) kept for the classifier, whose parameters are not
  counted. Convs that are not updated cost nothing, even if a gradient passes
  through them, unless `count_pass_through_masks` (then convs above the lowest
  updated one get their 1-bit mask too; tiny-training's contiguous "last n"
  schemes never have such convs).

  Returns:
    TTMemory (bits); `.kb` = bits / 8 / 1024.
  """
  updates, _ = layer_view(spec, mask)
  lmin = _lowest_index(spec, updates)
  inp = wgt = bias = msk = mom = 0
  for name, idx, _, _, pcw, hw_in, out_el, c_out, _ in _conv_table(spec):
    u = updates.get(name)
    if u is None:
      if count_pass_through_masks and lmin is not None and idx > lmin:
        msk += out_el
      continue
    msk += out_el
    if u.bias:
      bias += c_out * bias_bits
      mom += c_out * momentum_bits
    c = len(u.weight_channels)
    inp += hw_in * c * act_bits
    wgt += c * pcw * weight_bits
    mom += c * pcw * momentum_bits
  feat = spec.feature_dim * act_bits
  return TTMemory(inp, wgt, bias, msk, feat, mom,
                  inp + wgt + bias + msk + feat + mom)


def tt_memory_bits(spec: ModelSpec, mask, **kwargs) -> int:
  """Total bits of `tt_memory_breakdown` (tiny-training's memory model)."""
  return tt_memory_breakdown(spec, mask, **kwargs).total_bits


def _parse_list(value, cast, field):
  if value is None:
    return None
  if isinstance(value, str):
    return [cast(p) for p in value.split('-') if p]
  if isinstance(value, (int, float)):
    return value
  try:
    return [cast(p) for p in value]
  except (TypeError, ValueError):
    raise ValueError(f'{field} must be a list, a "-"-joined string or a '
                     f'number, got {value!r}') from None


def sparse_update_to_layers(spec: ModelSpec, n_bias_update, manual_weight_idx,
                            weight_update_ratio) -> LayerView:
  """tiny-training's backward_config as a `masks.LayerView`.

  Args:
    spec: the model.
    n_bias_update: int or 'all': biases of the last n convs are trained.
    manual_weight_idx: conv indices (from the input) whose kernels are trained
      (list or '-'-joined string like '36-39-41'); each must be among the last
      n_bias_update convs.
    weight_update_ratio: None (all channels), a number, or one per index
      (list or '-'-joined string), aligned with `manual_weight_idx`. r <= 1
      keeps the first int(C_in · r) input channels (depthwise: channels), as
      tiny-training's sliced kernels do; r > 1 is an absolute channel count.

  Returns:
    LayerView of the last n_bias_update convs (classifier frozen).
  """
  n_conv = len(spec.convs)
  n_bias = n_conv if n_bias_update == 'all' else n_bias_update
  if not isinstance(n_bias, int) or not 0 <= n_bias <= n_conv:
    raise ValueError(f'n_bias_update must be an int in [0, {n_conv}] or '
                     f"'all' for {spec.name}, got {n_bias_update!r}")
  idx = _parse_list(manual_weight_idx, int, 'manual_weight_idx') or []
  if isinstance(idx, (int, float)):
    idx = [int(idx)]
  ratios = _parse_list(weight_update_ratio, float, 'weight_update_ratio')
  if ratios is None or isinstance(ratios, (int, float)):
    ratios = [ratios] * len(idx)
  if len(ratios) != len(idx):
    raise ValueError(f'weight_update_ratio has {len(ratios)} entries but '
                     f'manual_weight_idx has {len(idx)}; give one ratio per '
                     'index or a single number')
  first = n_conv - n_bias
  out = {
      i: LayerUpdate((), spec.convs[i].mask_channels, True)
      for i in range(first, n_conv)
  }
  for i, r in zip(idx, ratios):
    if not first <= i < n_conv:
      raise ValueError(f'manual_weight_idx {i} is not among the last '
                       f'n_bias_update={n_bias} convs ({first}..{n_conv - 1}) '
                       f'of {spec.name}; a weight-trained conv must also train '
                       'its bias')
    n = spec.convs[i].mask_channels
    if r is None:
      keep = n
    elif r <= 1:
      keep = int(n * r)
    else:
      keep = min(int(r), n)
    out[i] = LayerUpdate(tuple(range(keep)), n, True)
  return as_layer_view(spec, out)


def sparse_update_memory_kb(model: Union[str, ModelSpec], n_bias_update,
                            manual_weight_idx: Sequence[int],
                            weight_update_ratio,
                            resolution: int = 128) -> float:
  """tiny-training's memory model in kB (bits / 8 / 1024) for a scheme.

  Args:
    model: backbone name (no feature mix) or a ModelSpec.
    n_bias_update, manual_weight_idx, weight_update_ratio: as in
      `sparse_update_to_layers` (tiny-training's backward_config).
    resolution: input size in pixels (ignored for a ModelSpec).

  Example:
    sparse_update_memory_kb('mcunet-5fps', 12, range(30, 42), 1)  # 448.05
  """
  spec = model if isinstance(model, ModelSpec) else model_spec(
      model, resolution=resolution)
  layers = sparse_update_to_layers(spec, n_bias_update, manual_weight_idx,
                                   weight_update_ratio)
  return tt_memory_bits(spec, layers) / 8 / 1024


def fulltrain_saved_elements(spec: ModelSpec) -> int:
  """S = Σ conv inputs + Σ conv outputs + Σ ReLU6 outputs, per image.

  TinyTrain's FullTrain MB ≈ 4 bytes · S · ≈101 images, in MiB (§3.3).
  """
  return sum(c.input_elements + c.output_elements *
             (2 if c.activation == 'relu6' else 1) for c in spec.convs)
