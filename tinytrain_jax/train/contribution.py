"""SparseUpdate's contribution analysis: accuracy gain per bias depth and conv.

  cfg = ContributionConfig(bias_ks=(4, 8, 12), weight_convs=(39, 41))
  gains = measure_contributions(spec, params, head, episodes, cfg)
  gains.bias_gain[8], gains.weight_gain[41][0.5]   # accuracy points (0..1)

tiny-training (Lin et al. 2022) builds its static sparse-update scheme once per
backbone, offline: it measures how much few-shot accuracy each piece of the
update buys, then searches the combination with the largest summed gain that
fits a memory budget (`selection.sparse_update_search`). The pieces measured
here, each fine-tuned from the same start weights on the same episodes:

  * bias_gain[k]: biases of the last k convs trained, minus no training;
  * weight_gain[i][r]: biases of the last `ref_bias_k` convs plus the kernel
    of conv i on its first max(1, int(C · r)) input channels (depthwise:
    channels), minus the biases of the last `ref_bias_k` convs alone.

All configurations of one kind share one compiled program: the union of their
trainable leaves is the (static) trainable partition and each configuration is
a 0/1 mask passed as *data*, multiplied into the gradients and the updates
(SGD with momentum; masked entries keep zero momentum, so this equals training
only the masked subset). The backward stops at the lowest leaf of the union.
"""
import dataclasses
from typing import Dict, List, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinytrain_jax import mask_partition
from tinytrain_jax import masks as masks_lib
from tinytrain_jax import tree_paths
from tinytrain_jax.models import network
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import sparse_step

RATIOS = (1.0, 0.5, 0.25, 0.125)


@dataclasses.dataclass(frozen=True)
class ContributionConfig:
  """What the analysis measures and how (hashable; a jit static argument).

  bias_ks: depths k (convs counted from the output) of the bias analysis.
  weight_convs: conv indices whose kernels are analysed.
  ratios: input-channel fractions per analysed kernel.
  ref_bias_k: biases trained under every weight configuration (and in its
    reference); must cover every conv of `weight_convs`.
  steps, lr, momentum: the fine-tune of every configuration (full batch).
  """
  bias_ks: Tuple[int, ...] = (4, 8, 12, 16, 20, 24, 28, 32, 36)
  weight_convs: Tuple[int, ...] = ()
  ratios: Tuple[float, ...] = RATIOS
  ref_bias_k: int = 12
  steps: int = 20
  lr: float = 1e-2
  momentum: float = 0.9

  def check(self, spec) -> None:
    """Raises ValueError naming the field when it does not fit `spec`."""
    n = len(spec.convs)
    bad = [k for k in self.bias_ks if not 1 <= k <= n]
    if bad:
      raise ValueError(f'ContributionConfig.bias_ks must lie in [1, {n}] for '
                       f'{spec.name}, got {bad}')
    if not 1 <= self.ref_bias_k <= n:
      raise ValueError(f'ContributionConfig.ref_bias_k must lie in [1, {n}], '
                       f'got {self.ref_bias_k}')
    low = [i for i in self.weight_convs if not n - self.ref_bias_k <= i < n]
    if low:
      raise ValueError(f'ContributionConfig.weight_convs {low} are not among '
                       f'the last ref_bias_k={self.ref_bias_k} convs of '
                       f'{spec.name}; raise ref_bias_k')
    if any(not 0 < r <= 1 for r in self.ratios):
      raise ValueError(f'ContributionConfig.ratios must lie in (0, 1], got '
                       f'{self.ratios}')
    if self.steps < 1:
      raise ValueError(f'ContributionConfig.steps must be >= 1, got '
                       f'{self.steps}')


class Contributions(NamedTuple):
  """Mean gains over the episodes (accuracy as a fraction, 0..1).

  base_accuracy: no training.
  bias_accuracy: {k: accuracy}; bias_gain: {k: accuracy - base_accuracy}.
  ref_accuracy: biases of the last ref_bias_k convs.
  weight_gain: {conv index: {ratio: accuracy - ref_accuracy}}.
  per_episode: {config name: [accuracy per episode]} (for the record).
  """
  base_accuracy: float
  bias_accuracy: Dict[int, float]
  bias_gain: Dict[int, float]
  ref_accuracy: float
  weight_gain: Dict[int, Dict[float, float]]
  per_episode: Dict[str, List[float]]


def n_kept(conv, ratio: float) -> int:
  """Channels tiny-training's sliced kernel keeps: max(1, int(C · ratio))."""
  return max(1, int(conv.mask_channels * ratio))


def _bias_path(conv):
  return f'{conv.name}/bias'


def _kernel_path(conv):
  return f'{conv.name}/kernel'


def _plan(paths: Sequence[str]) -> mask_partition.SparsePlan:
  return mask_partition.SparsePlan(tuple(sorted(paths)), ())


def _mask_tree(spec, plan, params, on: Dict[str, int]) -> Dict[str, np.ndarray]:
  """{leaf path: 0/1 f32 array} over `plan`'s leaves; `on` = {path: channels
  (kernels: the first n along the conv's mask axis; biases: -1 = all)}."""
  axes = masks_lib.channel_axes(spec, params)
  out = {}
  for path in plan.full_leaves:
    shape = np.shape(tree_paths.get(params, path))
    m = np.zeros(shape, np.float32)
    if path in on:
      c = on[path]
      if c < 0:
        m[...] = 1.0
      else:
        m[tuple(
            slice(0, c) if a == axes[path] else slice(None)
            for a in range(len(shape)))] = 1.0
    out[path] = m
  return out


def _run_impl(spec, plan, cfg, params, head, batch, dmask):
  """Fine-tunes `plan`'s leaves under `dmask` for cfg.steps; query accuracy."""
  tr = {
      'params': {
          p: tree_paths.get(params, p) for p in plan.full_leaves
      },
      'deltas': {}
  }
  tx = optax.sgd(cfg.lr, momentum=cfg.momentum or None)
  key = jax.random.PRNGKey(0)  # unused: no augmentation

  def loss_fn(p, h, deltas, batch, key):
    return ft.support_loss(
        lambda x: network.apply(spec, p, x, deltas=deltas).features, h, batch,
        key, False)

  def body(_, carry):
    t, s = carry
    _, g = sparse_step.sparse_value_and_grad(loss_fn, t, params, head, {},
                                             batch, key)
    g = {'params': jax.tree.map(jnp.multiply, g['params'], dmask), 'deltas': {}}
    u, s = tx.update(g, s, t)
    u = {'params': jax.tree.map(jnp.multiply, u['params'], dmask), 'deltas': {}}
    return jax.tree.map(jnp.add, t, u), s

  tr, _ = jax.lax.fori_loop(0, cfg.steps, body, (tr, tx.init(tr)))
  new = mask_partition.combine(params, tr['params'])
  return ft.episode_loss(spec, new, head, batch, inference=True)[1]


# One compile per (spec, plan, config); every configuration is data.
_run = jax.jit(_run_impl, static_argnums=(0, 1, 2))


def _accuracy(spec, plan, cfg, params, head, batch, on):
  dmask = _mask_tree(spec, plan, params, on)
  return float(
      _run(spec, plan, cfg, params, head, batch, {
          k: jnp.asarray(v) for k, v in dmask.items()
      }))


def measure_contributions(spec, params, head, episodes,
                          cfg: ContributionConfig) -> Contributions:
  """Runs the contribution analysis on `episodes` (data.Episode list).

  Args:
    spec, params, head: the start model (pretrained weights, ProtoNet head).
    episodes: episodes at spec.resolution; every configuration sees all.
    cfg: ContributionConfig.

  Returns:
    Contributions (means over the episodes).

  Raises:
    ValueError: a config field that does not fit `spec`.
  """
  cfg.check(spec)
  if not episodes:
    raise ValueError('measure_contributions needs at least one episode')
  n = len(spec.convs)
  convs = spec.convs
  bias_plan = _plan([_bias_path(c) for c in convs[n - max(cfg.bias_ks):]])
  ref = {_bias_path(c): -1 for c in convs[n - cfg.ref_bias_k:]}
  weight_plan = _plan(
      list(ref) + [_kernel_path(convs[i]) for i in cfg.weight_convs])
  per = {}

  def record(name, acc):
    per.setdefault(name, []).append(acc)

  for ep in episodes:
    batch = ft.episode_arrays(spec, ep)
    record('none', float(ft.evaluate_step(spec, params, head, batch)[1]))
    for k in cfg.bias_ks:
      on = {_bias_path(c): -1 for c in convs[n - k:]}
      record(f'bias{k}', _accuracy(spec, bias_plan, cfg, params, head, batch,
                                   on))
    if cfg.weight_convs:
      record('ref', _accuracy(spec, weight_plan, cfg, params, head, batch, ref))
    for i in cfg.weight_convs:
      for r in cfg.ratios:
        on = dict(ref)
        on[_kernel_path(convs[i])] = n_kept(convs[i], r)
        record(f'w{i}@{r}',
               _accuracy(spec, weight_plan, cfg, params, head, batch, on))
  mean = {k: float(np.mean(v)) for k, v in per.items()}
  base = mean['none']
  ref_acc = mean.get('ref', base)
  return Contributions(
      base_accuracy=base,
      bias_accuracy={k: mean[f'bias{k}'] for k in cfg.bias_ks},
      bias_gain={k: mean[f'bias{k}'] - base for k in cfg.bias_ks},
      ref_accuracy=ref_acc, weight_gain={
          i: {
              r: mean[f'w{i}@{r}'] - ref_acc for r in cfg.ratios
          } for i in cfg.weight_convs
      }, per_episode=per)
