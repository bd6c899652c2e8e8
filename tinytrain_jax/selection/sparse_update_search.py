"""SparseUpdate's offline scheme search: maximise summed gains under budgets.

  scheme = search_scheme(spec128, bias_gain, weight_gain, budget_bytes,
                         budget_macs)
  scheme.n_bias_update, scheme.manual_weight_idx, scheme.weight_update_ratio

A SparseUpdate scheme (tiny-training's `backward_config`) trains the biases of
the last k convs and the kernels of a few of those convs, each on its first
int(C · r) input channels, r ∈ {1, 1/2, 1/4, 1/8}. tiny-training picks it
once per backbone: a contribution analysis measures the accuracy gain of each
piece (`train.contribution`), then a search maximises

    bias_gain[k] + Σ_i weight_gain[i][r_i]

over k and the per-conv ratios (r_i = 0: kernel frozen; conv i must be among
the last k), subject to the update fitting the budgets. tiny-training uses an
evolutionary search under its bit-level memory model; the objective is a sum
of independent per-conv terms once k is fixed, so we solve it exactly instead
(a multiple-choice knapsack per k, by dynamic programming over a Pareto front),
which is deterministic and never worse than a randomised search.

Budgets use the same two named cost models as TinyTrain's selection
(`selection.default_budgets`): `cost.backward_memory_bytes` at batch 1 (the
fp32_saved model) and `cost.backward_macs` (per sample). The scheme is
resolution-independent (conv indices and ratios); evaluate its costs on the
spec it will be reported at (128 px).
"""
import json
import pathlib
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

from tinytrain_jax import cost
from tinytrain_jax.models.registry import canonical_name
from tinytrain_jax.models.spec import ModelSpec

SCHEMES_FORMAT = 'tinytrain_jax.sparseupdate_schemes/1'
# SparseUpdate's published backward cost at 128 px (per sample): (MB, MACs).
PUBLISHED = {
    'mcunet-5fps': (1.43, 11_900_000),
    'mbv2-w0.35': (2.08, 8_100_000),
    'proxyless-w0.3': (1.74, 7_600_000),
}


def default_budgets(model_name: str, scale: float = 1.0) -> Tuple[int, int]:
  """(budget_bytes, budget_macs) of the search: the published SparseUpdate
  memory read as MiB and its compute, times `scale`, in the models TinyTrain's
  selection budgets against (fp32_saved at batch 1; MACs per sample)."""
  mb, macs = PUBLISHED[canonical_name(model_name)]
  return int(round(mb * 2**20 * scale)), int(round(macs * scale))


class Scheme(NamedTuple):
  """A static SparseUpdate scheme and what it costs on the spec searched with.

  n_bias_update: biases of the last n convs train.
  manual_weight_idx: conv indices (from the input) whose kernels train.
  weight_update_ratio: input-channel fraction per index (aligned).
  gain: the summed measured gain (accuracy fraction) the search maximised.
  bwd_macs: `cost.backward_macs` per sample.
  bwd_bytes: `cost.backward_memory_bytes` at batch 1 (fp32_saved model).
  tt_kb: tiny-training's bit-level memory model, kB (bits / 8 / 1024).
  """
  n_bias_update: int
  manual_weight_idx: Tuple[int, ...]
  weight_update_ratio: Tuple[float, ...]
  gain: float
  bwd_macs: int
  bwd_bytes: int
  tt_kb: float


def scheme_view(spec: ModelSpec, n_bias: int, weights: Mapping[int, float]):
  """`masks.LayerView` of biases-last-n + weights."""
  layers = cost.sparse_update_to_layers(spec, n_bias, sorted(weights),
                                        [weights[i] for i in sorted(weights)])
  return layers


def _costs(spec, n_bias, weights) -> Tuple[int, int]:
  view = scheme_view(spec, n_bias, weights)
  return (cost.backward_memory_bytes(spec, view).total_bytes,
          cost.backward_macs(spec, view).total_macs)


def _pareto(states):
  """Drops states another one dominates (<= bytes, <= MACs, >= gain)."""
  states = sorted(states, key=lambda s: (s[0], s[1], -s[2], s[3]))
  kept = []
  for s in states:
    if not any(k[0] <= s[0] and k[1] <= s[1] and k[2] >= s[2] for k in kept):
      kept.append(s)
  return kept


def search_scheme(spec: ModelSpec, bias_gain: Mapping[int, float],
                  weight_gain: Mapping[int, Mapping[float,
                                                    float]], budget_bytes: int,
                  budget_macs: Optional[int] = None) -> Scheme:
  """The scheme with the largest summed gain within both budgets.

  Args:
    spec: the model the costs are counted on (e.g. 128 px).
    bias_gain: {k: gain of training the biases of the last k convs}.
    weight_gain: {conv index: {ratio: gain of its kernel at that ratio}}.
    budget_bytes: cap on `cost.backward_memory_bytes` at batch 1.
    budget_macs: cap on `cost.backward_macs` per sample (None: no cap).

  Returns:
    Scheme. Ties go to fewer MACs, then fewer bytes, then smaller k, then
    the lexicographically smaller choice, so the result is deterministic.

  Raises:
    ValueError: nothing fits (names the budgets and the cheapest k).

  Example:
    search_scheme(spec, {8: .02, 16: .03}, {41: {1.0: .01}}, 2**20, 12e6)
  """
  n = len(spec.convs)
  macs_cap = float('inf') if budget_macs is None else budget_macs
  best = None
  cheapest = None
  for k in sorted(bias_gain):
    if not 1 <= k <= n:
      raise ValueError(f'bias_gain key {k} must lie in [1, {n}] for '
                       f'{spec.name}')
    base_b, base_m = _costs(spec, k, {})
    if cheapest is None or base_b < cheapest[1]:
      cheapest = (k, base_b, base_m)
    if base_b > budget_bytes or base_m > macs_cap:
      continue
    states = [(base_b, base_m, float(bias_gain[k]), ())]
    for i in sorted(weight_gain):
      if not n - k <= i < n:
        continue
      opts = []
      for r, g in sorted(weight_gain[i].items(), reverse=True):
        if g <= 0:
          continue  # never worth its cost
        b, m = _costs(spec, k, {i: r})
        opts.append((b - base_b, m - base_m, float(g), (i, float(r))))
      nxt = list(states)
      for s in states:
        for db, dm, g, choice in opts:
          if s[0] + db <= budget_bytes and s[1] + dm <= macs_cap:
            nxt.append((s[0] + db, s[1] + dm, s[2] + g, s[3] + (choice,)))
      states = _pareto(nxt)
    for b, m, g, choice in states:
      key = (-g, m, b, k, choice)
      if best is None or key < best[0]:
        best = (key, k, dict(choice))
  if best is None:
    k, b, m = cheapest
    raise ValueError(f'no SparseUpdate scheme fits budget_bytes={budget_bytes}'
                     f' / budget_macs={budget_macs} on {spec.name}; the '
                     f'cheapest (biases of the last {k} convs) needs {b} bytes'
                     f' and {m} MACs; raise the budgets')
  _, k, weights = best
  return describe_scheme(spec, k, weights, gain=-best[0][0])


def describe_scheme(
    spec: ModelSpec, n_bias: int, weights: Mapping[int, float],
    gain: float = float('nan')) -> Scheme:
  """Scheme tuple with its costs on `spec` (weights: {conv index: ratio})."""
  idx = tuple(sorted(int(i) for i in weights))
  view = scheme_view(spec, n_bias, weights)
  return Scheme(
      int(n_bias), idx, tuple(float(weights[i]) for i in idx), float(gain),
      cost.backward_macs(spec, view).total_macs,
      cost.backward_memory_bytes(spec, view).total_bytes,
      cost.tt_memory_bits(spec, view) / 8 / 1024)


def candidate_weight_convs(
    spec: ModelSpec, last_n: int = 12,
    kinds=('pw1', 'pw2', 'mix')) -> Tuple[int, ...]:
  """Indices of the 1x1 convs (+ the mix conv) among the last `last_n`."""
  n = len(spec.convs)
  return tuple(
      c.index for c in spec.convs[max(0, n - last_n):] if c.kind in kinds)


def save_schemes(path, entries: Mapping[str, Dict[str, Any]],
                 metadata: Mapping[str, Any]) -> None:
  """Merges {model: entry} into the schemes JSON at `path` (atomic write).

  Each entry holds at least n_bias_update, manual_weight_idx,
  weight_update_ratio and feature_mix; other models already in the file are
  kept.
  """
  path = pathlib.Path(path)
  blob = {'format': SCHEMES_FORMAT, 'metadata': {}, 'schemes': {}}
  if path.exists():
    blob = json.loads(path.read_text())
  blob['metadata'].update(metadata)
  for model, entry in entries.items():
    for f in ('n_bias_update', 'manual_weight_idx', 'weight_update_ratio',
              'feature_mix'):
      if f not in entry:
        raise ValueError(f'scheme entry for {model} lacks {f!r}')
    blob['schemes'][model] = dict(entry)
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(blob, indent=1, sort_keys=True) + '\n')
  tmp.replace(path)
