"""Fisher potential of every conv from one forward+backward pass.

Reference: TinyTrain's Fisher potential (Kwon et al. 2024). For conv i, sample n,
channel o and spatial position d, with a the activation and g = dL/da:

  Δ_o = 1/(2N) · Σ_n ( Σ_d a[n, d, o] · g[n, d, o] )²,    P_i = Σ_o Δ_o.

Which tensor (docs/reference/criterion.md §2.1, reconstructed):
  * `out` (option A): the conv's pre-activation output (incl. folded bias or
    BN); P_i sums it over the layer's output channels.
  * `inp` (option B): the conv's input (post-ReLU6 of the layer below, or the
    block input for pointwise1, the images for the stem), as seen by this conv
    only (the residual shortcut path is not included). Used to rank the input
    channels of non-depthwise convs; depthwise convs use `out` (own channels).

Which loss (docs/reference/criterion.md §2.2, reconstructed): the ProtoNet cosine loss on the
support set itself (prototypes from the support features, logits for the same
support images, mean over valid rows), BN frozen, no augmentation. The
prototype couples the samples, so g is the gradient of the *batch* loss.

All g's come from zero "probes" added in place (`network.apply(in_probes=...,
out_probes=...)`): one `jax.value_and_grad` w.r.t. the probe pytree, no
per-sample vmap. The step is jitted once per (spec, shapes); spec is static.

`convs` limits the pass to some convs (`criterion.reachable_convs`: those the
budgets can ever select). Probes go on those only, so the backward stops at
the lowest one and the layers below run forward only; the scores of the
measured convs are the same as in the full pass. That forward also gives the
support set's activation entering the lowest measured block
(`FisherScores.block_input`): every conv the selection can choose is at or
above it, so fine-tuning starts its frozen prefix from there instead of
running the blocks below it a second time.
"""
import functools
from typing import Any, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax.models import network
from tinytrain_jax.models import protonet
from tinytrain_jax.models.spec import ModelSpec


class BlockInput(NamedTuple):
  """The support set's activation entering block `block` (>= 1), as the
  Fisher pass computed it: activation f32[S, H, W, C], on the device.
  `network.prefix(spec, params, activation, b, from_block=block)` continues
  it to any block b >= block."""
  block: int
  activation: jax.Array


class FisherScores(NamedTuple):
  """Per-task Fisher potentials (host numpy), keyed by conv name.

  out: {name: f32[C_out]}, Δ_o on the conv's pre-activation output.
  inp: {name: f32[C_in]}, Δ_c on the conv's input (depthwise: f32[C]).
  layer: {name: float}, P_i = sum(out[name]).
  loss: the support-set ProtoNet loss the gradients were taken of.
  n_support: N, the number of valid support images.
  block_input: the support set's `BlockInput` at the lowest measured block,
    when the pass measured only convs above block 0 (None otherwise, and
    for the BN variant, whose prefix needs its BN statistics).
  """
  out: Dict[str, np.ndarray]
  inp: Dict[str, np.ndarray]
  layer: Dict[str, float]
  loss: float = float('nan')
  n_support: int = 0
  block_input: Optional[BlockInput] = None


def fisher_per_channel(act: jax.Array, grad: jax.Array,
                       valid: Optional[jax.Array] = None) -> jax.Array:
  """Δ per channel from one layer's activation and its loss gradient.

  Args:
    act: f32[N, H, W, C] activation a.
    grad: f32[N, H, W, C] gradient g = dL/da (same shape).
    valid: optional bool[N]; padded rows are dropped (N = valid.sum()).

  Returns:
    f32[C]: 1/(2N) · Σ_n (Σ_{h,w} a·g)².
  """
  s = jnp.sum(act * grad, axis=(1, 2))
  if valid is None:
    return 0.5 * jnp.mean(s * s, axis=0)
  w = valid.astype(s.dtype)
  return 0.5 * jnp.sum(w[:, None] * s * s, axis=0) / jnp.maximum(
      jnp.sum(w), 1.0)


# The Fisher pass's loss: the support set on its own prototypes
# (docs/reference/criterion.md §2.2), the same loss fine-tuning minimises.
support_loss = protonet.support_loss


def _probes(spec: ModelSpec, batch: int, names):
  convs = [c for c in spec.convs if c.name in names]
  inp = {
      c.name: jnp.zeros((batch, c.h_in, c.h_in, c.c_in), jnp.float32)
      for c in convs
  }
  out = {
      c.name: jnp.zeros((batch, c.h_out, c.h_out, c.c_out), jnp.float32)
      for c in convs
  }
  return inp, out


def _conv_names(spec: ModelSpec, convs) -> tuple:
  """The measured convs' names in spec order; None = every conv."""
  if convs is None:
    return tuple(c.name for c in spec.convs)
  names = set(convs)
  unknown = names - {c.name for c in spec.convs}
  if unknown or not names:
    raise ValueError(f'convs must name convs of {spec.name}, got '
                     f'{sorted(unknown) or "none"}; use names from '
                     'spec.convs (e.g. blocks_13/depthwise)')
  return tuple(c.name for c in spec.convs if c.name in names)


@functools.partial(jax.jit, static_argnums=(0, 9, 10))
def fisher_step(spec: ModelSpec, params, state, head, images, labels, valid,
                way_mask, loss_scale, convs=None, keep_block=None):
  """Jitted forward+backward on the support set; spec must be static.

  Args:
    spec: static ModelSpec (hashable).
    params, state: backbone parameters and BN statistics (frozen).
    head: ProtoNet head {'scale', 'bias'}.
    images: f32[S, R, R, 3]; labels: i32[S]; valid: bool[S];
    way_mask: bool[W].
    loss_scale: f32[] multiplier on the loss (1 normally; tests use it).
    convs: static tuple of the conv names to measure; None = all. The
      backward runs down to the lowest of them only.
    keep_block: static block index >= 1, or None: also return the
      activation entering that block (its first conv's input).

  Returns:
    (loss f32[], {'out': {name: f32[C_out]}, 'inp': {name: f32[C_in]}}) for
    the measured convs, then f32[S, H, W, C] (or None): the activation
    entering `keep_block`.
  """
  names = _conv_names(spec, convs)
  in_p, out_p = _probes(spec, images.shape[0], names)

  def loss_fn(probes):
    o = network.apply(spec, params, images, state=state, train=False,
                      in_probes=probes[0], out_probes=probes[1], capture=True)
    loss = loss_scale * support_loss(head, o.features, labels, valid, way_mask)
    return loss, o.activations

  (loss, acts), (g_in, g_out) = jax.value_and_grad(loss_fn,
                                                   has_aux=True)((in_p, out_p))
  scores = {'out': {}, 'inp': {}}
  for c in spec.convs:
    if c.name not in names:
      continue
    scores['out'][c.name] = fisher_per_channel(acts[c.name]['out'],
                                               g_out[c.name], valid)
    scores['inp'][c.name] = fisher_per_channel(acts[c.name]['in'], g_in[c.name],
                                               valid)
  kept = None
  if keep_block is not None:  # the block input, as its first conv sees it
    kept = acts[network.block_convs(spec)[keep_block][0].name]['in']
  return loss, scores, kept


def compute_fisher(spec: ModelSpec, params, episode, head=None,
                   state: Optional[Any] = None,
                   loss_scale: float = 1.0, convs=None) -> FisherScores:
  """Fisher potentials of every conv (or of `convs`) for one task (one
  jitted pass).

  Args:
    spec: the backbone (static; the jitted step is cached per spec/shapes).
    params: its parameters (pre-fine-tuning weights).
    episode: anything with support_x f32[S, R, R, 3], support_y i32[S],
      support_mask bool[S] and way_mask bool[W] (a `data.Episode`);
      support_x may be a jax.Array already on the device.
    head: ProtoNet head; default `protonet.init_head()` (scale 10, bias 0).
    state: BN statistics for the BN variant (used frozen); None otherwise.
    loss_scale: multiplies the loss (Δ scales by its square).
    convs: names of the convs to measure (default: all). The backward stops
      at the lowest one, so a pass over the last blocks costs a forward plus
      their backward; the others are absent from the result.

  Returns:
    FisherScores of numpy arrays, keyed by the measured convs.

  Raises:
    ValueError: bad support-set shape, no valid support image, an unknown
      conv name, or a non-finite loss / Fisher score.

  Example:
    fs = compute_fisher(spec, params, make_episode(src, ep_spec, 128))
    fs.layer['blocks_13/depthwise']  # P_i
  """
  x = episode.support_x
  # Images already on a device stay there (no round trip through the host).
  x = (x.astype(jnp.float32) if isinstance(x, jax.Array) else
       np.asarray(x, np.float32))
  r = spec.resolution
  if x.ndim != 4 or x.shape[1:] != (r, r, 3):
    raise ValueError(f'episode.support_x must be f32[S, {r}, {r}, 3] for '
                     f'{spec.name} at resolution {r}, got {x.shape}; build '
                     f'the episode with make_episode(..., resolution={r})')
  valid = np.asarray(episode.support_mask, bool)
  if not valid.any():
    raise ValueError('episode.support_mask has no valid support image; the '
                     'Fisher pass needs at least one labelled image')
  head = protonet.init_head() if head is None else head
  names = _conv_names(spec, convs)
  keep = _lowest_block(spec, names) if not state else 0
  loss, scores, kept = fisher_step(spec, params, state or {}, head, x,
                                   np.asarray(episode.support_y, np.int32),
                                   valid, np.asarray(episode.way_mask, bool),
                                   np.float32(loss_scale),
                                   None if convs is None else names,
                                   keep or None)
  loss, scores = jax.device_get((loss, scores))
  out = {k: np.asarray(v, np.float32) for k, v in scores['out'].items()}
  inp = {k: np.asarray(v, np.float32) for k, v in scores['inp'].items()}
  bad = [k for k, v in {**out, **inp}.items() if not np.all(np.isfinite(v))]
  if not np.isfinite(loss) or bad:
    raise ValueError(f'the Fisher pass produced a non-finite support loss '
                     f'({float(loss)}) or scores (e.g. {bad[:2]}); check the '
                     'weights and inputs (images in [-1, 1]) and the head')
  layer = {n: float(np.sum(out[n], dtype=np.float64)) for n in names}
  return FisherScores(out, inp, layer, float(loss), int(valid.sum()),
                      BlockInput(keep, kept) if keep else None)


def _lowest_block(spec: ModelSpec, names) -> int:
  """The lowest block any of `names` runs in (0: the stem or block 0)."""
  return min(network.block_of(spec, n) for n in names)
