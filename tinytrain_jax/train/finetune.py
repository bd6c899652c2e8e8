"""Per-task fine-tuning on the support set (docs/reference/protocol.md §5) and evaluation.

  cfg = FinetuneConfig(steps=40, lr=1e-3)
  res = finetune(spec, params, head, episode, mask, cfg)  # res.accuracy

Loss: ProtoNet cosine loss; prototypes from the *current* backbone on the
clean support images, logits for the (optionally `augment_jax`-augmented)
support "pseudo-queries", masked cross-entropy. The final prediction uses
prototypes of the clean support set under the fine-tuned weights.
`impl='sparse'` (default) trains through `sparse_step`'s partition + deltas;
`impl='dense'` is the dense-masked reference.
"""
import dataclasses
from typing import Any, Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinytrain_jax import cost
from tinytrain_jax import mask_partition
from tinytrain_jax import masks as masks_lib
from tinytrain_jax.data.preprocess import augment_jax
from tinytrain_jax.models import network
from tinytrain_jax.models import protonet
from tinytrain_jax.train import sparse_step

IMPLS = ('sparse', 'dense')
EPISODE_KEYS = ('support_x', 'support_y', 'support_mask', 'query_x', 'query_y',
                'query_mask', 'way_mask')


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """Fine-tuning hyper-parameters (hashable: a jit static argument).

  steps: full-batch SGD steps on the support set (0 = no fine-tuning).
  lr, momentum, weight_decay: SGD with momentum.
  augment: augment the support pseudo-queries (P>M>F batch augmentation).
  impl: 'sparse' (real savings) or 'dense' (masked reference).
  train_head: also train the cosine head's scale and bias.
  seed: augmentation key seed (step i uses fold_in(PRNGKey(seed), i)).
  cache_prefix: without augmentation, run the frozen blocks below the lowest
    trained layer once per task (`network.prefix`) and train only the rest;
    same numbers, less compute per step (sparse impl only).
  """
  steps: int = 40
  lr: float = 1e-3
  momentum: float = 0.9
  weight_decay: float = 0.0
  augment: bool = False
  impl: str = 'sparse'
  train_head: bool = False
  seed: int = 0
  cache_prefix: bool = True

  def __post_init__(self):
    if not isinstance(self.steps, int) or self.steps < 0:
      raise ValueError(f'FinetuneConfig.steps must be an int >= 0, got '
                       f'{self.steps!r}')
    if not self.lr > 0:
      raise ValueError(f'FinetuneConfig.lr must be > 0, got {self.lr}')
    if not 0 <= self.momentum < 1:
      raise ValueError(f'FinetuneConfig.momentum must be in [0, 1), got '
                       f'{self.momentum}')
    if self.weight_decay < 0:
      raise ValueError('FinetuneConfig.weight_decay must be >= 0, got '
                       f'{self.weight_decay}')
    if self.impl not in IMPLS:
      raise ValueError(f'FinetuneConfig.impl must be one of {IMPLS}, got '
                       f'{self.impl!r}')


class FinetuneResult(NamedTuple):
  """accuracy: query top-1 (float); query_loss: float; loss_curve: f32[steps]
  support loss before each step; params: fine-tuned params (deltas folded);
  head: the (possibly trained) head; costs: analytic bwd MACs / bytes."""
  accuracy: float
  loss_curve: np.ndarray
  params: Any
  costs: Dict[str, Any]
  query_loss: float = float('nan')
  head: Any = None


def episode_arrays(spec, episode) -> Dict[str, jax.Array]:
  """Checks an Episode (or dict) against `spec` and returns jnp arrays.

  Raises:
    ValueError: wrong image shape, misaligned labels/masks (before any jit).
  """
  get = (
      episode.get
      if isinstance(episode, dict) else lambda k: getattr(episode, k, None))
  out = {}
  for k in EPISODE_KEYS:
    v = get(k)
    if v is None:
      raise ValueError(f'episode has no {k!r}; pass a data.Episode')
    out[k] = np.asarray(v)
  r = spec.resolution
  for side in ('support', 'query'):
    x, y, m = (out[f'{side}_x'], out[f'{side}_y'], out[f'{side}_mask'])
    if x.ndim != 4 or x.shape[1:] != (r, r, 3):
      raise ValueError(f'episode {side}_x must be f32[N, {r}, {r}, 3] for '
                       f'{spec.name} at resolution {r}, got shape '
                       f'{tuple(x.shape)}; make the episode with '
                       f'resolution={r}')
    if y.shape != (x.shape[0],) or m.shape != (x.shape[0],):
      raise ValueError(f'episode {side}_y / {side}_mask must have shape '
                       f'({x.shape[0]},), got {y.shape} and {m.shape}')
  w = out['way_mask']
  if w.ndim != 1 or not w.any():
    raise ValueError(f'episode way_mask must be a non-empty bool[W], got '
                     f'shape {w.shape}')
  if out['support_y'].max(initial=0) >= w.shape[0]:
    raise ValueError(f'episode support labels reach {out["support_y"].max()}'
                     f' but way_mask has {w.shape[0]} slots')
  if not out['support_mask'].any():
    raise ValueError('episode has no valid support image')
  return {
      k: jnp.asarray(v, jnp.float32 if k.endswith('_x') else None)
      for k, v in out.items()
  }


def support_loss(features_fn, head, batch, key, augment: bool):
  """ProtoNet support loss (module docstring). features_fn(images) -> f32[B,D].
  """
  sx = batch['support_x']
  clean = features_fn(sx)
  q = features_fn(augment_jax(sx, key)) if augment else None
  return protonet.support_loss(head, clean, batch['support_y'],
                               batch['support_mask'], batch['way_mask'], q)


def _loss(spec, cfg, start_block=0):
  """Support loss of the step; with start_block > 0 the batch carries the
  cached prefix activation 'support_h' (augmentation off), so only blocks
  from start_block on run."""

  def loss_fn(params, head, deltas, batch, key):
    if start_block:
      feats = lambda _: network.apply(spec, params, batch[
          'support_h'], deltas=deltas, start_block=start_block).features
    else:
      feats = lambda x: network.apply(spec, params, x, deltas=deltas).features
    return support_loss(feats, head, batch, key, cfg.augment)

  return loss_fn


def start_block(spec, plan: mask_partition.SparsePlan) -> int:
  """The first block a plan trains: blocks below it are a frozen prefix.

  0 when the stem is trained; len(spec.blocks) when no conv is (then only
  the feature-mix conv, if any, and the pooling run per step).
  """
  layers = [p.rsplit('/', 1)[0] for p in plan.full_leaves]
  layers += [d.name for d in plan.delta_layers]
  convs = {c.name for c in spec.convs}
  return min((network.block_of(spec, n) for n in layers if n in convs),
             default=len(spec.blocks))


def prefix_start(spec, plan, cfg) -> int:
  """start_block the sparse step uses under `cfg` (0: the whole network
  runs every step, as with augmentation, whose inputs change per step)."""
  if cfg.augment or not cfg.cache_prefix or cfg.impl != 'sparse':
    return 0
  return start_block(spec, plan)


def step_forward_macs(spec, start: int) -> Dict[str, int]:
  """Forward MACs per support image of one fine-tune step that starts at
  block `start` (0: the whole network), and of the prefix run once per task.

  Returns {'start_block', 'step_macs', 'prefix_macs'} (MACs per sample).
  """
  suffix = sum(c.macs
               for c in spec.convs
               if c.index > 0 and network.block_of(spec, c.name) >= start)
  if start == 0:
    suffix += spec.convs[0].macs
  total = sum(c.macs for c in spec.convs)
  return {
      'start_block': int(start),
      'step_macs': int(suffix),
      'prefix_macs': int(total - suffix)
  }


# One compile per (spec, start_block): the frozen prefix of a task's support.
support_prefix = jax.jit(network.prefix, static_argnums=(0, 3))


class SparseTask(NamedTuple):
  """Inputs of the sparse step / loop for one task (`sparse_task`).

  start: start_block (static); trainable, opt_state: initial partition and
  SGD state; indices: {conv name: i32[k]}; batch: `episode_arrays` plus
  'support_h' (the cached prefix activation) when start > 0.
  """
  start: int
  trainable: Any
  opt_state: Any
  indices: Dict[str, jax.Array]
  batch: Dict[str, jax.Array]


def sparse_task(spec, params, plan, indices, batch, cfg,
                head=None) -> SparseTask:
  """Everything the sparse step needs for a task, the prefix computed once
  (`prefix_start`); `head` is trained when given."""
  start = prefix_start(spec, plan, cfg)
  if start:
    batch = dict(
        batch, support_h=support_prefix(spec, params, batch['support_x'],
                                        start))
  tr = mask_partition.split(params, plan, head)
  opt_state = sparse_step.sparse_optimizer(cfg.lr, cfg.momentum).init(tr)
  return SparseTask(start, tr, opt_state, {
      k: jnp.asarray(v) for k, v in indices.items()
  }, batch)


def task_key(seed, task, step):
  """Augmentation key of fine-tuning step `step` of task `task` (dynamic
  ints, so tasks share one compile): fold_in(fold_in(PRNGKey(seed), task),
  step). Every task gets its own augmentation stream."""
  return jax.random.fold_in(
      jax.random.fold_in(jax.random.PRNGKey(seed), task), step)


def sgd_update(cfg, grads, opt_state, tr, lr=None):
  """One momentum-SGD update of `tr` with cfg's weight decay (on `tr`
  itself) and lr (or `lr`, a runtime value): (tr, opt_state). The update of
  the modules that TinyTL, Transductive and AdapterDrop train."""
  if cfg.weight_decay:
    grads = jax.tree.map(lambda g, w: g + cfg.weight_decay * w, grads, tr)
  tx = sparse_step.sparse_optimizer(cfg.lr if lr is None else lr, cfg.momentum)
  updates, opt_state = tx.update(grads, opt_state, tr)
  return jax.tree.map(jnp.add, tr, updates), opt_state


def module_step_fn(features_of):
  """SGD step of a method that trains modules besides the params (unjitted;
  `module_step` is its jit).

  features_of(spec, frozen_params, trainable, images) -> f32[B, D] gives the
  features with the trainable modules (TinyTL's biases and lite residuals,
  AdapterDrop's adapters); the loss is `support_loss`. The step is
  step(spec, cfg, trainable, opt_state, params, head, batch, step, task, lr)
  -> (trainable, opt_state, loss).
  """

  def step_fn(spec, cfg, tr, opt_state, params, head, batch, step, task,
              lr=None):
    key = task_key(cfg.seed, task, step)
    frozen = jax.tree.map(jax.lax.stop_gradient, params)

    def loss_fn(t):
      return support_loss(lambda x: features_of(spec, frozen, t, x),
                          jax.lax.stop_gradient(head), batch, key, cfg.augment)

    loss, grads = jax.value_and_grad(loss_fn)(tr)
    tr, opt_state = sgd_update(cfg, grads, opt_state, tr, lr)
    return tr, opt_state, loss

  return step_fn


def module_step(features_of):
  """`module_step_fn` jitted: spec and cfg static, trainable and opt_state
  donated."""
  return jax.jit(module_step_fn(features_of), static_argnums=(0, 1),
                 donate_argnums=(2, 3))


def module_eval_fn(features):
  """(loss, accuracy) of a padded episode with features(spec, params,
  modules, images) -> f32[B, D]: eval(spec, params, modules, head, batch)
  (unjitted; `module_eval` is its jit)."""

  def eval_fn(spec, params, modules, head, batch):
    sf = features(spec, params, modules, batch['support_x'])
    qf = features(spec, params, modules, batch['query_x'])
    return protonet.episode_loss(head, sf, batch['support_y'],
                                 batch['support_mask'], qf, batch['query_y'],
                                 batch['query_mask'], batch['way_mask'])

  return eval_fn


def module_eval(features):
  """`module_eval_fn` jitted (spec static)."""
  return jax.jit(module_eval_fn(features), static_argnums=0)


class ModuleTrainer(NamedTuple):
  """A method that trains modules besides (or instead of) a params mask, as
  pure functions, so that many tasks can run batched
  (`task_batch.module_tasks`); TinyTL, Transductive, AdapterDrop.

  init(spec, params, config) -> trainable: the start modules (the same for
    every task; seeded by config.seed).
  step(spec, cfg, trainable, opt_state, params, head, batch, step, task, lr)
    -> (trainable, opt_state, loss): one unjitted SGD step.
  evaluate(spec, params, trainable, head, batch) -> (loss, accuracy).
  params_of(params, trainable) -> the fine-tuned backbone params.
  Instances must be module-level constants: they are jit static arguments.
  """
  init: Callable[..., Any]
  step: Callable[..., Any]
  evaluate: Callable[..., Any]
  params_of: Callable[..., Any]


def train_module(step, spec, config, tr, args, task: int = 0):
  """config.steps calls of a jitted `step(spec, cfg, tr, opt_state, *args,
  step, task, lr)` from fresh momentum-SGD state: (tr, loss curve f32[S]).

  lr is runtime data, so an lr grid shares one compile. Raises RuntimeError
  on a non-finite loss (`check_finite_curve`).
  """
  opt_state = sparse_step.sparse_optimizer(config.lr, config.momentum).init(tr)
  static_cfg, lr = dataclasses.replace(config, lr=1.0), jnp.float32(config.lr)
  losses = []
  for i in range(config.steps):
    tr, opt_state, loss = step(spec, static_cfg, tr, opt_state, *args,
                               jnp.int32(i), jnp.int32(task), lr)
    losses.append(loss)
  curve = np.asarray(jax.device_get(losses), np.float32)
  check_finite_curve(curve, config.steps)
  return tr, curve


def sparse_step_fn(spec, plan, cfg, trainable, opt_state, params, head, indices,
                   batch, step, task=0, lr=None, start_block=0):
  """One sparse SGD step on the partition (unjitted; `sparse_train_step` is
  its jit): (trainable, opt_state, loss)."""
  key = task_key(cfg.seed, task, step)
  loss, grads = sparse_step.sparse_value_and_grad(
      _loss(spec, cfg, start_block), trainable, params, head, indices, batch,
      key)
  grads = mask_partition.weight_decay_grads(grads, plan, trainable, params,
                                            indices, cfg.weight_decay)
  tx = sparse_step.sparse_optimizer(cfg.lr if lr is None else lr, cfg.momentum)
  updates, opt_state = tx.update(grads, opt_state, trainable)
  return jax.tree.map(jnp.add, trainable, updates), opt_state, loss


# One compile per (spec, plan, config); trainable/opt_state are donated.
# `finetune` passes lr as a runtime argument (and a config with lr=0 as the
# static one), so an lr grid shares one compile.
sparse_train_step = jax.jit(sparse_step_fn, static_argnums=(0, 1, 2),
                            static_argnames=('start_block',),
                            donate_argnums=(3, 4))
sparse_train_step.__doc__ = (
    'sparse_train_step(spec, plan, cfg, trainable, opt_state, params, head, '
    'indices, batch, step, task=0, lr=None, start_block=0) -> (trainable, '
    'opt_state, loss); static: spec, plan, cfg, start_block; lr: f32[] '
    'overrides cfg.lr; start_block > 0 needs batch["support_h"].')


def sparse_loop_fn(spec, plan, cfg, start, trainable, opt_state, params, head,
                   indices, batch, task, lr):
  """cfg.steps sparse steps in one `lax.scan` (unjitted; `sparse_train_loop`
  is its jit): (trainable, opt_state, losses f32[cfg.steps])."""

  def body(carry, i):
    tr, opt = carry
    tr, opt, loss = sparse_step_fn(spec, plan, cfg, tr, opt, params, head,
                                   indices, batch, i, task, lr, start)
    return (tr, opt), loss

  (tr, opt), losses = jax.lax.scan(body, (trainable, opt_state),
                                   jnp.arange(cfg.steps, dtype=jnp.int32))
  return tr, opt, losses


# All cfg.steps steps of a task in one program: one dispatch, one host sync.
sparse_train_loop = jax.jit(sparse_loop_fn, static_argnums=(0, 1, 2, 3),
                            donate_argnums=(4, 5))
sparse_train_loop.__doc__ = (
    'sparse_train_loop(spec, plan, cfg, start_block, trainable, opt_state, '
    'params, head, indices, batch, task, lr) -> (trainable, opt_state, '
    'losses f32[cfg.steps]); static: spec, plan, cfg, start_block.')


def make_dense_step(spec, cfg, mask, head, donate: bool = True):
  """Jitted dense-masked reference step: full backward, then zeroed grads.

  This is how tiny-training simulates sparse updates. The 0/1 mask enters the
  compiled step as *data* (an argument), so XLA cannot constant-fold the
  multiply-by-zero and prune the frozen gradients: the step really computes
  the full backward, which makes it the honest dense baseline for the cost
  comparison (`benchmarks.step_costs`) and the reference the sparse step is
  tested against.

  Returns (step_fn, tx, dense_mask): step_fn(tr, opt_state, batch, step,
  dense_mask) -> (tr, opt_state, loss) over tr = {'params', 'head'}.
  """
  tx = optax.sgd(cfg.lr, momentum=cfg.momentum or None)
  if cfg.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
  full = {
      'params': mask,
      'head': jax.tree.map(lambda _: bool(cfg.train_head), head)
  }
  loss_fn = _loss(spec, cfg)

  def step(tr, opt_state, batch, step_i, dense_mask, task=0):
    key = task_key(cfg.seed, task, step_i)
    loss, grads = sparse_step.dense_value_and_grad(loss_fn, tr['params'],
                                                   tr['head'], batch, key)
    grads = jax.tree.map(jnp.multiply, grads, dense_mask)
    updates, opt_state = tx.update(grads, opt_state, tr)
    updates = jax.tree.map(jnp.multiply, updates, dense_mask)
    return jax.tree.map(jnp.add, tr, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1) if donate else ()), tx, full


def dense_step_mask(spec, full, tr):
  """The 0/1 `dense_mask` argument of `make_dense_step`'s step: `full` (its
  third result, {'params': mask, 'head': bools}) expanded to the shapes of
  tr = {'params', 'head'}."""
  return {
      'params':
          masks_lib.to_dense(full['params'], tr['params'], spec),
      'head':
          jax.tree.map(lambda m, h: np.full(np.shape(h), m, np.result_type(h)),
                       full['head'], tr['head'])
  }


def episode_loss(spec, params, head, batch, inference: bool = False,
                 support_start: int = 0):
  """ProtoNet (loss, accuracy) of a padded episode batch (`episode_arrays`).

  inference=True (evaluation, no gradient taken): the features come from
  `network.features`, over cache-sized chunks of the batch; a meta-train
  step differentiates it with inference=False (one whole-batch pass).
  support_start > 0 (static, inference only): the support features start
  from batch['support_h'], the activation entering that block, which the
  fine-tuning cached (`sparse_task`); `params` must not have changed below
  it (a sparse fine-tune trains nothing there), so the frozen prefix is not
  run again for the support set.
  """
  feats = ((lambda x: network.features(spec, params, x)) if inference else
           (lambda x: network.apply(spec, params, x).features))
  if support_start and inference:
    sf = network.features(spec, params, batch['support_h'],
                          start_block=support_start)
  else:
    sf = feats(batch['support_x'])
  qf = feats(batch['query_x'])
  return protonet.episode_loss(head, sf, batch['support_y'],
                               batch['support_mask'], qf, batch['query_y'],
                               batch['query_mask'], batch['way_mask'])


evaluate_step = jax.jit(
    lambda spec, params, head, batch, support_start=0: episode_loss(
        spec, params, head, batch, inference=True,
        support_start=support_start),
    static_argnums=(0, 4))


def evaluate(spec, params, head, episode):
  """(query loss, query accuracy) as floats, ProtoNet on `params`."""
  loss, acc = evaluate_step(spec, params, head, episode_arrays(spec, episode))
  return float(loss), float(acc)


def mask_costs(spec, mask, batch_size: int) -> Dict[str, Any]:
  """Analytic per-sample backward MACs and fp32 bytes at `batch_size`."""
  if mask is None:
    return {'bwd_macs': 0, 'bwd_bytes': 0, 'n_trained': 0, 'layers': {}}
  macs = cost.backward_macs(spec, mask)
  mem = cost.backward_memory_bytes(spec, mask, batch_size=batch_size)
  ups = masks_lib.layer_updates(spec, mask)
  return {
      'bwd_macs': int(macs.total_macs),
      'bwd_bytes': int(mem.total_bytes),
      'bwd_saved_activation_bytes': int(mem.saved_activation_bytes),
      'layers': {
          n: {
              'channels': len(u.weight_channels),
              'of': u.n_channels,
              'bias': u.bias
          } for n, u in ups.items()
      }
  }


def check_finite_curve(curve, steps):
  """Raises RuntimeError naming the first step whose loss is not finite."""
  if not np.all(np.isfinite(curve)):
    bad = int(np.flatnonzero(~np.isfinite(curve))[0])
    raise RuntimeError(f'fine-tuning loss became non-finite at step {bad} of '
                       f'{steps}; lower FinetuneConfig.lr')


def finetune_task(spec, params, head, episode, mask,
                  config: FinetuneConfig = FinetuneConfig(),
                  task: int = 0) -> FinetuneResult:
  """Fine-tunes a copy of `params` on the episode's support set.

  Args:
    spec: the ModelSpec (its resolution must match the episode).
    params: start weights (never modified; every task starts from them).
    head: cosine head {'scale', 'bias'}.
    episode: data.Episode (or dict with its fields).
    mask: params-shaped mask (`masks`), or None / all-False = no training.
    config: FinetuneConfig.
    task: the task's index in its evaluation; folded into the augmentation
      key (`task_key`), so tasks do not share augmentations.

  Returns:
    FinetuneResult. Raises ValueError on a bad episode or mask and
    RuntimeError when the loss becomes non-finite.
  """
  batch = episode_arrays(spec, episode)
  n_support = int(np.asarray(batch['support_mask']).sum())
  if mask is not None:
    masks_lib.check_mask(mask, params, spec)
  costs = mask_costs(spec, mask, n_support)
  plan, indices = (
      mask_partition.make_plan(spec, params, mask) if mask is not None else
      (mask_partition.SparsePlan((), ()), {}))
  trains = config.steps > 0 and (not plan.empty or config.train_head)
  start = prefix_start(spec, plan, config) if trains else 0
  costs['step_forward'] = step_forward_macs(spec, start)
  curve = np.zeros((0,), np.float32)
  eval_start = 0  # > 0: the support set's frozen prefix is reused
  if trains and config.impl == 'sparse':
    t = sparse_task(spec, params, plan, indices, batch, config,
                    head if config.train_head else None)
    tr, _, losses = sparse_train_loop(spec, plan,
                                      dataclasses.replace(config, lr=1.0),
                                      t.start, t.trainable, t.opt_state, params,
                                      head, t.indices, t.batch, jnp.int32(task),
                                      jnp.float32(config.lr))
    curve = np.asarray(jax.device_get(losses), np.float32)
    params = mask_partition.fold(params, plan, tr, indices)
    head = tr.get('head', head)
    batch, eval_start = t.batch, t.start
  elif trains:
    m = mask if mask is not None else masks_lib.full_mask(params, False)
    step_fn, tx, full = make_dense_step(spec, config, m, head)
    tr = jax.tree.map(lambda x: jnp.array(x, copy=True), {
        'params': params,
        'head': head
    })
    dense_mask = dense_step_mask(spec, full, tr)
    opt_state = tx.init(tr)
    losses = []
    for i in range(config.steps):
      tr, opt_state, loss = step_fn(tr, opt_state, batch, jnp.int32(i),
                                    dense_mask, jnp.int32(task))
      losses.append(loss)
    curve = np.asarray(jax.device_get(losses), np.float32)
    params, head = tr['params'], tr['head']
  if trains:
    check_finite_curve(curve, config.steps)
  loss, acc = evaluate_step(spec, params, head, batch, eval_start)
  return FinetuneResult(float(acc), curve, params, costs, float(loss), head)
