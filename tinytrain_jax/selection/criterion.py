"""TinyTrain's multi-objective score and the greedy layer/channel fill.

Reference: TinyTrain's criterion (Kwon et al. 2024); the greedy fill is our
reconstruction.

  s_i = P_i / ( (‖W_i‖ / max_l ‖W_l‖) · (M_i / max_l M_l) )

‖W_i‖ = `ConvLayer.n_weights` (kernel entries, folded bias excluded), M_i =
`ConvLayer.macs` (forward MACs per image); both maxima over all convs of the
spec (classifier excluded). Layers are visited in order of s_i (or P_i, or
depth); each gets the largest allowed channel count whose *whole* candidate
mask still fits both budgets (`cost.backward_memory_bytes(...).total_bytes`
at `batch_size` and `cost.backward_macs(...).total_macs` per sample), so the
non-additive input-gradient MACs are charged when the lowest selected layer
moves. Selected layers also train their bias.

Determinism: ties in the layer order are broken by the *higher* conv index
first (later layers need fewer input-gradient MACs); ties between channels by
the lower channel index first. Nothing is random except channel_rank='random'
(seeded per (seed, conv index)).

Example:
  sel = select(spec, params, episode, SelectionConfig(2**20, 6_510_000))
  sel.layers[0]['name'], sel.bwd_bytes, sel.bwd_macs
"""
import dataclasses
import functools
import logging
import math
from typing import Any, Dict, List, Mapping, Tuple, Union

import numpy as np

from tinytrain_jax import cost
from tinytrain_jax import masks as masks_lib
from tinytrain_jax.masks import LayerUpdate
from tinytrain_jax.models.spec import ModelSpec
from tinytrain_jax.selection import fisher as fisher_lib
from tinytrain_jax.selection import static_masks

LAYER_ORDERS = ('score', 'fisher', 'last')
CHANNEL_RANKS = ('fisher', 'l2', 'random')
POTENTIALS = ('out', 'inp')


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
  """Greedy-fill settings (frozen, hashable).

  Attributes:
    budget_bytes: backward memory cap, bytes (`cost.backward_memory_bytes`
      total at `batch_size`, `optimizer_slots`); math.inf = no cap.
    budget_macs: backward compute cap, MACs per sample (`cost.backward_macs`
      total); math.inf = no cap.
    layer_order: 'score' (s_i), 'fisher' (P_i, ablation) or 'last' (deepest
      first).
    channel_rank: within a layer, 'fisher' (dynamic, per task), 'l2' (weight
      slice norm, static) or 'random' (static, seeded).
    ratios: allowed channel fractions (k = max(1, int(C · r))), or 'any' for
      any integer 1..C (largest fitting k by bisection).
    candidates: 'all' convs, or an int K = only convs of the last K blocks
      (plus the feature-mix conv).
    batch_size: images per step for the memory model.
    optimizer_slots: optimizer state tensors per parameter (1 = momentum).
    train_classifier: also train the classifier (when the spec has one).
    stop_at_first_misfit: stop at the first layer that does not fit, instead
      of skipping it.
    seed: seed of channel_rank='random'.
    potential: which tensor the layer potential P_i sums Δ over
      (docs/reference/criterion.md §2.1): 'out', the conv's pre-activation
      output (option A, default), or 'inp', its input (option B, the same
      tensor the channels are ranked on).
  """
  budget_bytes: float
  budget_macs: float
  layer_order: str = 'score'
  channel_rank: str = 'fisher'
  ratios: Union[Tuple[float, ...], str] = (1.0, 0.5, 0.25, 0.125)
  candidates: Union[str, int] = 'all'
  batch_size: int = 1
  optimizer_slots: int = 1
  train_classifier: bool = False
  stop_at_first_misfit: bool = False
  seed: int = 0
  potential: str = 'out'

  def __post_init__(self):
    for f in ('budget_bytes', 'budget_macs'):
      v = getattr(self, f)
      if not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
        raise ValueError(f'SelectionConfig.{f} must be a number >= 0 '
                         f'(math.inf = no cap), got {v!r}; fix {f}')
    if self.layer_order not in LAYER_ORDERS:
      raise ValueError(f'SelectionConfig.layer_order must be one of '
                       f'{LAYER_ORDERS}, got {self.layer_order!r}')
    if self.channel_rank not in CHANNEL_RANKS:
      raise ValueError(f'SelectionConfig.channel_rank must be one of '
                       f'{CHANNEL_RANKS}, got {self.channel_rank!r}')
    if self.potential not in POTENTIALS:
      raise ValueError(f'SelectionConfig.potential must be one of '
                       f'{POTENTIALS}, got {self.potential!r}')
    if isinstance(self.ratios, str):
      if self.ratios != 'any':
        raise ValueError("SelectionConfig.ratios must be 'any' or a tuple of "
                         f'fractions in (0, 1], got {self.ratios!r}')
    else:
      r = tuple(self.ratios)
      if not r or any(not 0 < x <= 1 for x in r):
        raise ValueError('SelectionConfig.ratios must be a non-empty tuple of '
                         f"fractions in (0, 1] or 'any', got {self.ratios!r}")
      object.__setattr__(self, 'ratios', r)
    c = self.candidates
    if c != 'all' and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
      raise ValueError("SelectionConfig.candidates must be 'all' or an int "
                       f'K >= 1 (last K blocks), got {c!r}')
    if self.batch_size < 1 or self.optimizer_slots < 0:
      raise ValueError('SelectionConfig needs batch_size >= 1 and '
                       f'optimizer_slots >= 0, got {self.batch_size} and '
                       f'{self.optimizer_slots}')


@dataclasses.dataclass
class Selection:
  """Result of `select` / `select_from_scores`.

  Attributes:
    mask: params-shaped mask (`tinytrain_jax.masks`).
    layers: one dict per selected conv, in selection order: index, name,
      kind, channels_selected, channels_total, channels (sorted indices),
      score (s_i), fisher (P_i), cum_bytes, cum_macs (mask cost after it).
    view: the selection's `masks.LayerView`.
    bwd_bytes: `cost.backward_memory_bytes` total of the mask (<= budget).
    bwd_macs: `cost.backward_macs` total per sample (<= budget).
    tt_kb: tiny-training's bit-level memory model of the mask, kB.
    budget_bytes, budget_macs: the budgets.
    fisher: the FisherScores used (`select`: the reachable convs only).
    scores: {conv name: s_i} for every measured conv.
    config: the SelectionConfig.
  """
  mask: Any
  layers: List[Dict[str, Any]]
  view: masks_lib.LayerView
  bwd_bytes: int
  bwd_macs: int
  tt_kb: float
  budget_bytes: float
  budget_macs: float
  fisher: fisher_lib.FisherScores
  scores: Dict[str, float]
  config: SelectionConfig

  @property
  def channel_counts(self) -> Dict[str, int]:
    """{conv name: selected channels}, for the static baselines."""
    return {l['name']: l['channels_selected'] for l in self.layers}


def normalisers(spec: ModelSpec) -> Tuple[int, int]:
  """(max ‖W‖, max M) over the spec's convs: kernel entries, forward MACs."""
  return (max(c.n_weights for c in spec.convs), max(c.macs for c in spec.convs))


def layer_potentials(spec: ModelSpec, fisher,
                     potential: str = 'out') -> Dict[str, float]:
  """P_i for every measured conv: Δ summed over the conv's output ('out',
  the FisherScores' `layer`) or its input channels ('inp')."""
  convs = [c for c in spec.convs if c.name in fisher.layer]
  if potential == 'inp':
    return {
        c.name: float(np.sum(fisher.inp[c.name], dtype=np.float64))
        for c in convs
    }
  return {c.name: float(fisher.layer[c.name]) for c in convs}


def layer_scores(spec: ModelSpec, fisher) -> Dict[str, float]:
  """s_i for every conv.

  Args:
    spec: the model.
    fisher: FisherScores, or {conv name: P_i}.

  Returns:
    {conv name: s_i}, float, for the convs `fisher` measured (the
    normalisers are over all convs).
  """
  p = fisher.layer if isinstance(fisher, fisher_lib.FisherScores) else fisher
  max_w, max_m = normalisers(spec)
  return {
      c.name: float(p[c.name]) / ((c.n_weights / max_w) * (c.macs / max_m))
      for c in spec.convs
      if c.name in p
  }


def candidate_convs(spec: ModelSpec, candidates) -> list:
  """Convs eligible for selection ('all', or those of the last K blocks)."""
  if candidates == 'all':
    return list(spec.convs)
  first = len(spec.blocks) - candidates
  return [
      c for c in spec.convs
      if (c.block is not None and c.block >= first) or c.kind == 'mix'
  ]


def _cheapest(conv, ratios) -> Dict[str, LayerUpdate]:
  """The conv's cheapest allowed update: its fewest channels, with bias."""
  k = _channel_counts(conv.mask_channels, ratios)[-1]
  return {conv.name: LayerUpdate(tuple(range(k)), conv.mask_channels, True)}


def reachable_convs(spec: ModelSpec, config: 'SelectionConfig') -> list:
  """The candidate convs the budgets can ever select (spec order).

  A conv is reachable when its cheapest allowed update fits both budgets on
  its own. Adding a layer never lowers a mask's cost (the bytes sum over the
  trained layers; the MACs also pay the gradient's propagation down to the
  lowest one), so a conv that does not fit alone never fits. The Fisher pass
  needs only these, and its backward stops at the lowest. With
  `stop_at_first_misfit` a misfit ends the fill, so every candidate counts.
  """
  return list(_reachable(spec, config))


# `_reachable` and `_infeasible` depend on (spec, config) only and cost one
# analytic cost evaluation per candidate conv each: cached, they no longer
# run twice in every task's selection (about 15 of its 50 ms on a 2-core CPU;
# on a GPU most of the selection's host time).
@functools.lru_cache(maxsize=64)
def _reachable(spec, config) -> tuple:
  convs = candidate_convs(spec, config.candidates)
  if config.stop_at_first_misfit:
    return tuple(convs)
  coster = _Coster(spec, config)
  return tuple(c for c in convs
               if coster.fits(_cheapest(c, config.ratios))[0])


def _layer_order(convs, scores, fisher_p, order) -> list:
  if order == 'last':
    key = lambda c: (-c.index,)
  elif order == 'fisher':
    key = lambda c: (-fisher_p[c.name], -c.index)
  else:
    key = lambda c: (-scores[c.name], -c.index)
  return sorted(convs, key=key)


def _channel_counts(n: int, ratios) -> List[int]:
  """Allowed channel counts for a layer of n channels, largest first."""
  if ratios == 'any':
    return list(range(n, 0, -1))
  return sorted({max(1, int(n * r)) for r in ratios}, reverse=True)


def _rank_channels(spec, params, conv, fisher, config, warned) -> np.ndarray:
  if config.channel_rank == 'fisher':
    s = fisher.out[conv.name] if conv.depthwise else fisher.inp[conv.name]
    s = np.asarray(s, np.float64)
    if np.any(s > 0):
      return np.argsort(-s, kind='stable')
    if not warned:
      logging.warning(
          'all-zero Fisher channel scores for %s: ranking its '
          'channels by weight L2 norm instead', conv.name)
    warned.add(conv.name)
  elif config.channel_rank == 'random':
    return static_masks.random_order(conv, config.seed)
  return static_masks.l2_order(params, conv)


class _Coster:
  """Total backward bytes and MACs of a layer view (analytic cost model)."""

  def __init__(self, spec, config):
    self.spec, self.config = spec, config

  def __call__(self, updates: Mapping[str, LayerUpdate]) -> Tuple[int, int]:
    view = masks_lib.LayerView(dict(updates), self.config.train_classifier)
    mem = cost.backward_memory_bytes(
        self.spec, view, batch_size=self.config.batch_size,
        optimizer_slots=self.config.optimizer_slots).total_bytes
    return mem, cost.backward_macs(self.spec, view).total_macs

  def fits(self, updates) -> Tuple[bool, int, int]:
    mem, mac = self(updates)
    c = self.config
    return mem <= c.budget_bytes and mac <= c.budget_macs, mem, mac


def _check_feasible(spec, config):
  """Raises if not even the cheapest single-layer update fits the budgets.

  The message names the budget that binds: when some layer fits the bytes,
  the MACs budget is too small (and vice versa), so only that one is
  reported, with the cheapest layer that fits the other budget.
  """
  error = _infeasible(spec, config)
  if error:
    raise ValueError(error)


@functools.lru_cache(maxsize=64)
def _infeasible(spec, config):
  """`_check_feasible`'s message, or None when some layer fits."""
  coster = _Coster(spec, config)
  rows = []
  for c in candidate_convs(spec, config.candidates):
    k = _channel_counts(c.mask_channels, config.ratios)[-1]
    ok, mem, mac = coster.fits(_cheapest(c, config.ratios))
    if ok:
      return None
    rows.append((mem, mac, c.name, k))
  b, m = config.budget_bytes, config.budget_macs
  fit_mem = [r for r in rows if r[0] <= b]
  fit_mac = [r for r in rows if r[1] <= m]
  if fit_mem:
    mem, mac, name, k = min(fit_mem, key=lambda r: (r[1], r[0]))
    return (
        f'budget_macs={m} is below the cheapest single-layer update within '
        f'budget_bytes={b} ({name} with {k} channel(s): {mac} MACs, {mem} '
        f'bytes); raise the budgets: --budget_mmacs to at least '
        f'{mac / 1e6:.6g}')
  if fit_mac:
    mem, mac, name, k = min(fit_mac, key=lambda r: (r[0], r[1]))
    return (
        f'budget_bytes={b} is below the cheapest single-layer update within '
        f'budget_macs={m} ({name} with {k} channel(s): {mem} bytes, {mac} '
        f'MACs); raise the budgets: --budget_kb to at least '
        f'{math.ceil(mem / 1024)}')

  def excess(r):  # how far over the budgets, as a multiple of them
    over = max(r[0] / b if b > 0 else math.inf, r[1] / m if m > 0 else math.inf)
    return over, r[0], r[1]

  mem, mac, name, k = min(rows, key=excess)
  return (
      f'budget_bytes={b} and budget_macs={m} are both below the cheapest '
      f'single-layer update ({name} with {k} channel(s): {mem} bytes, {mac} '
      f'MACs); raise the budgets: --budget_kb to at least '
      f'{math.ceil(mem / 1024)} and --budget_mmacs to at least '
      f'{mac / 1e6:.6g}')


def _fit_layer(conv, ranking, chosen, coster, ratios):
  """Largest allowed k for `conv` whose whole candidate mask fits, or None."""
  n = conv.mask_channels

  def trial(k):
    ups = dict(chosen)
    ups[conv.name] = LayerUpdate(
        tuple(sorted(int(i) for i in ranking[:k])), n, True)
    return coster.fits(ups), ups

  if ratios == 'any':  # cost is monotone in k: bisect the largest fitting k
    lo, hi, best = 1, n, None
    while lo <= hi:
      mid = (lo + hi) // 2
      (ok, mem, mac), ups = trial(mid)
      if ok:
        best, lo = (mid, ups, mem, mac), mid + 1
      else:
        hi = mid - 1
    return best
  for k in _channel_counts(n, ratios):
    (ok, mem, mac), ups = trial(k)
    if ok:
      return k, ups, mem, mac
  return None


def select_from_scores(spec: ModelSpec, params, fisher,
                       config: SelectionConfig) -> Selection:
  """Greedy layer/channel fill from given Fisher scores (no JAX).

  Args:
    spec: the model.
    params: its parameters (mask structure; weights for channel_rank='l2').
    fisher: FisherScores (may be hand-written: `layer` = P_i for every conv,
      `out`/`inp` channel scores for the candidates when channel_rank is
      'fisher').
    config: SelectionConfig.

  Returns:
    Selection whose costs are <= both budgets.

  Raises:
    ValueError: NaN scores, or budgets below the cheapest single-layer update.
  """
  p = layer_potentials(spec, fisher, config.potential)
  bad = [n for n, v in p.items() if not math.isfinite(v) or v < 0]
  if bad:
    raise ValueError(f'Fisher potentials must be finite and >= 0, got '
                     f'{p[bad[0]]} for {bad[0]} ({len(bad)} layer(s)); the '
                     'Fisher pass loss was probably non-finite')
  if all(v == 0 for v in p.values()) and config.layer_order != 'last':
    logging.warning('all layer Fisher potentials are 0 (saturated loss?): the '
                    'layer order falls back to the tie-break (deepest first)')
  scores = layer_scores(spec, p)
  convs = candidate_convs(spec, config.candidates)
  coster = _Coster(spec, config)
  _check_feasible(spec, config)
  # Candidates the Fisher pass skipped must be unreachable (never selected).
  missing = [c.name for c in convs if c.name not in p]
  lost = missing and set(missing) & {
      c.name for c in reachable_convs(spec, config)}
  if lost:
    raise ValueError(f'the Fisher scores lack {len(lost)} conv(s) the budgets '
                     f'can select (e.g. {sorted(lost)[0]}); measure them: '
                     'compute_fisher(..., convs=reachable_convs(spec, config))')
  convs = [c for c in convs if c.name in p]
  chosen, layers, warned = {}, [], set()
  for conv in _layer_order(convs, scores, p, config.layer_order):
    ranking = _rank_channels(spec, params, conv, fisher, config, warned)
    fit = _fit_layer(conv, ranking, chosen, coster, config.ratios)
    if fit is None:
      if config.stop_at_first_misfit and layers:
        break
      continue
    k, chosen, mem, mac = fit
    layers.append(
        dict(index=conv.index, name=conv.name, kind=conv.kind,
             channels_selected=k, channels_total=conv.mask_channels,
             channels=list(chosen[conv.name].weight_channels),
             score=scores[conv.name], fisher=p[conv.name], cum_bytes=mem,
             cum_macs=mac))
  mem, mac = coster(chosen)
  view = masks_lib.LayerView(dict(chosen), config.train_classifier)
  mask = masks_lib.mask_from_view(spec, params, view)
  return Selection(mask, layers, view, mem, mac,
                   cost.tt_memory_breakdown(spec, view).kb, config.budget_bytes,
                   config.budget_macs, fisher, scores, config)


def select(spec: ModelSpec, params, episode, config: SelectionConfig, head=None,
           state=None) -> Selection:
  """Task-adaptive selection: one Fisher pass, then the greedy fill.

  The pass measures the `reachable_convs` only, so its backward stops at
  the lowest conv the budgets allow; the mask is the one a full pass gives.

  Args:
    spec: the backbone (static).
    params: pre-fine-tuning parameters.
    episode: a `data.Episode` (only the support set is used).
    config: SelectionConfig (budgets, order, channel ranking, ...).
    head: ProtoNet head for the Fisher loss (default `init_head()`).
    state: BN statistics of the BN variant (frozen), else None.

  Returns:
    Selection (mask, chosen layers, costs <= budgets, Fisher scores).

  Example:
    b, m = default_budgets('mcunet-5fps')
    sel = select(spec, params, ep, SelectionConfig(b, m))
  """
  _check_feasible(spec, config)
  reach = [c.name for c in reachable_convs(spec, config)]
  fs = fisher_lib.compute_fisher(
      spec, params, episode, head, state,
      convs=None if len(reach) == len(spec.convs) else reach)
  return select_from_scores(spec, params, fs, config)
