"""Episodic ProtoNet meta-training of a whole backbone (docs/reference/protocol.md §3).

  cfg = MetaTrainConfig(model='mcunet-5fps', steps=2000)
  state = meta_train(cfg, '/tmp/run')     # resumes from /tmp/run if present
  spec, params, head = load_backbone('/tmp/run')

One jit-compiled step (`meta_train_step`) per batch of `episodes_per_step`
(E) episodes: for each, support -> prototypes and query cross-entropy under
the cosine head (scale and bias trained too); the step takes the gradient of
the mean loss over the E episodes (`jax.vmap`), then SGD with momentum,
warm-up + cosine schedule. Step i holds episodes i*E .. i*E+E-1; episode j
is a pure function of (seed, j): `sample_episode(src, sampler, seed, j)`, and
its augmentation key is `fold_in(fold_in(PRNGKey(seed), i), position)`
(E=1: `fold_in(PRNGKey(seed), i)`, the same episodes and numbers as before
E existed). A run resumed from a checkpoint ends with the same params as an
uninterrupted run: bit for bit on the same devices, to float tolerance on
others.

Devices (docs/devices.md): the E episodes of a step are stacked on a leading
axis split over a 1-D mesh (`devices.py`; the largest number of the visible
devices that divides E, so E=1 runs on one), the state is replicated, and
jit partitions the step; XLA inserts the gradient all-reduce. Checkpoints
hold host arrays, so a run written on N devices resumes on M. In a
multi-process run (`devices.initialize`), each process builds only the
episodes of its own devices.
"""
import dataclasses
import json
import sys
import pathlib
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from tinytrain_jax import checkpoint
from tinytrain_jax import data
from tinytrain_jax import devices
from tinytrain_jax import models
from tinytrain_jax import progress as progress_lib
from tinytrain_jax.data.preprocess import augment_jax
from tinytrain_jax.models import network
from tinytrain_jax.models import protonet
from tinytrain_jax.train import collapse
from tinytrain_jax.train import finetune as finetune_lib
from tinytrain_jax.train import validation

# Fields that may differ between a checkpoint and the run resuming it: they
# change logging and bookkeeping, never the trained numbers.
RESUMABLE_FIELDS = ('checkpoint_every', 'keep', 'log_every')
# Fields added after meta-trainings were cached and checkpointed, with the
# value every earlier run used. `to_json` leaves them out at that value, so
# the cache key (sha256 of `to_json`, eval/meta_cache.py) and the stored
# config of earlier runs stay valid; a stored config without one means it.
ADDED_DEFAULTS = {
    'episodes_per_step': 1,
    'train_from_block': 0,
    'head_scale': 10.0
}


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
  """Meta-training settings (hashable; a jit static argument).

  init: 'pretrained' (ImageNet weights) or 'random' (`network.init`).
  source: episode source of the 'split' split (mini-ImageNet in the paper).
  warmup_steps: linear warm-up from 0 to lr, then cosine decay to 0 at steps.
  checkpoint_every: save every N steps (and at the end); keep: last N kept.
  val_sources: sources whose 'valid' split validates the run (None accuracy
    on `val_episodes` fixed tasks each, `validation.py`); the step with the
    best mean over them is kept as the 'best' checkpoint, which
    `load_backbone` returns. Step 0 (the pretrained start) is validated too.
  val_every: validate every N steps (and at the end); 0 = never.
  episodes_per_step: E, episodes per optimizer step (the loss is their
    mean); `steps` counts steps, so a run sees steps * E episodes. The E
    episodes are split over the devices (docs/devices.md).
  train_from_block: B; the stem and blocks 0..B-1 stay at their start
    weights (no gradient is computed for them); blocks B.., the feature-mix
    conv, the classifier and the head train. 0 = everything trains.
  head_scale: the cosine head's starting scale (tau in logits = tau * (cos +
    bias)). It trains at the same lr as the weights, so at lr 1e-4 it stays
    where it starts: it sets how sharp the episodes' softmax is for the
    whole run (docs/results/meta_training.md).
  """
  model: str = 'mcunet-5fps'
  resolution: int = 128
  feature_mix: bool = False
  init: str = 'pretrained'
  source: str = 'mini-imagenet'
  split: str = 'train'
  ways: int = 5
  shots: int = 5
  queries: int = 15
  steps: int = 2000
  lr: float = 3e-3
  momentum: float = 0.9
  weight_decay: float = 0.0
  warmup_steps: int = 100
  augment: bool = True
  seed: int = 0
  checkpoint_every: int = 500
  keep: int = 3
  log_every: int = 50
  val_sources: Tuple[str, ...] = ('mini-imagenet', 'omniglot')
  val_every: int = 0
  val_episodes: int = 50
  episodes_per_step: int = 1
  train_from_block: int = 0
  head_scale: float = 30.0

  def __post_init__(self):
    models.canonical_name(self.model)
    if isinstance(self.val_sources, str):  # tuple('ab') would be ('a', 'b')
      raise ValueError('MetaTrainConfig.val_sources must be a tuple of source '
                       f'names, got the string {self.val_sources!r}')
    object.__setattr__(self, 'val_sources', tuple(self.val_sources))
    if self.val_every < 0:
      raise ValueError(f'MetaTrainConfig.val_every must be >= 0, got '
                       f'{self.val_every}; set --config.val_every')
    if self.val_every and not self.val_sources:
      raise ValueError('MetaTrainConfig.val_every > 0 needs val_sources; set '
                       '--config.val_sources=mini-imagenet,omniglot')
    for f in ('ways', 'shots', 'queries', 'steps', 'checkpoint_every', 'keep',
              'log_every', 'val_episodes', 'episodes_per_step'):
      if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
        raise ValueError(f'MetaTrainConfig.{f} must be an int >= 1, got '
                         f'{getattr(self, f)!r}; set --config.{f}')
    if not self.lr > 0:
      raise ValueError(f'MetaTrainConfig.lr must be > 0, got {self.lr}')
    if not isinstance(self.train_from_block, int) or (
        self.train_from_block and
        not 0 < self.train_from_block <= len(build_spec(self).blocks)):
      raise ValueError(f'MetaTrainConfig.train_from_block must be an int in '
                       f'[0, {len(build_spec(self).blocks)}] for '
                       f'{self.model}, got {self.train_from_block!r}')
    if isinstance(self.head_scale, bool) or not (isinstance(
        self.head_scale, (int, float)) and 0 < self.head_scale < float('inf')):
      raise ValueError('MetaTrainConfig.head_scale must be a finite number '
                       f'> 0, got {self.head_scale!r}; set '
                       '--config.head_scale')
    object.__setattr__(self, 'head_scale', float(self.head_scale))
    if self.warmup_steps < 0:
      raise ValueError('MetaTrainConfig.warmup_steps must be >= 0, got '
                       f'{self.warmup_steps}')
    if self.init not in ('pretrained', 'random'):
      raise ValueError("MetaTrainConfig.init must be 'pretrained' or "
                       f"'random', got {self.init!r}")

  def to_json(self) -> str:
    """The config as JSON; ADDED_DEFAULTS fields only when not at default
    (keeps the cache keys and stored configs of earlier runs valid)."""
    d = dataclasses.asdict(self)
    for f, default in ADDED_DEFAULTS.items():
      if d[f] == default:
        del d[f]
    return json.dumps(d, sort_keys=True)

  @property
  def sampler(self) -> data.SamplerConfig:
    return data.SamplerConfig(mode='fixed', ways=self.ways, shots=self.shots,
                              queries=self.queries)


class TrainState(NamedTuple):
  """params: backbone pytree; head: {'scale', 'bias'}; opt_state: optax state
  over {'params', 'head'}; step: i32[] steps done; key: u32[2] base key data.
  """
  params: Any
  head: Any
  opt_state: Any
  step: jax.Array
  key: jax.Array


class StepHParams(NamedTuple):
  """What the compiled step depends on (static); lr is a dynamic argument so
  runs that differ only in lr / schedule / seed share one compile."""
  augment: bool
  momentum: float
  weight_decay: float
  train_from_block: int = 0


def step_hparams(config: MetaTrainConfig) -> StepHParams:
  return StepHParams(
      bool(config.augment), float(config.momentum), float(config.weight_decay),
      int(config.train_from_block))


def map_frozen(fn, params, train_from_block: int):
  """`params` with `fn` applied to every leaf of the stem and of blocks <
  train_from_block (the blocks meta-training keeps frozen); the rest as is.
  With fn=stop_gradient the backward computes no weight gradient for them;
  with fn=zeros_like (on the updates) they do not move, weight decay
  included. train_from_block=0 freezes nothing."""
  if not train_from_block:
    return params
  frozen = {'first_conv'} | {f'blocks_{b}' for b in range(train_from_block)}
  return {
      k: jax.tree.map(fn, v) if k in frozen else v for k, v in params.items()
  }


def schedule(config: MetaTrainConfig) -> optax.Schedule:
  """Linear warm-up to lr over warmup_steps, then cosine decay to 0."""
  warm = min(config.warmup_steps, config.steps - 1)
  if warm > 0:
    return optax.warmup_cosine_decay_schedule(0.0, config.lr, warm,
                                              config.steps, 0.0)
  return optax.cosine_decay_schedule(config.lr, config.steps)


def optimizer(hp: StepHParams) -> optax.GradientTransformation:
  """SGD-momentum direction (lr applied in the step): (+wd) -> trace."""
  tx = optax.trace(decay=hp.momentum) if hp.momentum else optax.identity()
  if hp.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(hp.weight_decay), tx)
  return tx


def build_spec(config: MetaTrainConfig):
  return models.model_spec(config.model, config.resolution, config.feature_mix)


def init_state(config: MetaTrainConfig, init_params=None) -> TrainState:
  """Step-0 state: pretrained (or given / random) params, fresh head."""
  spec = build_spec(config)
  if init_params is not None:
    params = init_params
  elif config.init == 'pretrained':
    params = models.load_pretrained(config.model, config.resolution,
                                    config.feature_mix)[1]
  else:
    params = network.init(spec, jax.random.PRNGKey(config.seed))[0]
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  head = protonet.init_head(config.head_scale)
  opt_state = optimizer(step_hparams(config)).init({
      'params': params,
      'head': head
  })
  return TrainState(params, head, opt_state, jnp.zeros((), jnp.int32),
                    jax.random.PRNGKey(config.seed))


def _meta_train_step(spec, hp, state: TrainState, batch, lr):
  key = jax.random.fold_in(state.key, state.step)
  n = batch['way_mask'].shape[0]  # E, static

  def episode(tr, ep, k):
    if hp.augment:
      ks, kq = jax.random.split(k)
      ep = dict(ep, support_x=augment_jax(ep['support_x'], ks),
                query_x=augment_jax(ep['query_x'], kq))
    params = map_frozen(jax.lax.stop_gradient, tr['params'],
                        hp.train_from_block)
    return finetune_lib.episode_loss(spec, params, tr['head'], ep)

  def f(tr):
    if n == 1:  # no vmap, the step key itself: today's one-episode step
      return episode(tr, jax.tree.map(lambda x: x[0], batch), key)
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(jnp.arange(n))
    loss, acc = jax.vmap(episode, in_axes=(None, 0, 0))(tr, batch, keys)
    return jnp.mean(loss), jnp.mean(acc)

  tr = {'params': state.params, 'head': state.head}
  (loss, acc), grads = jax.value_and_grad(f, has_aux=True)(tr)
  updates, opt_state = optimizer(hp).update(grads, state.opt_state, tr)
  # Frozen blocks get no update, weight decay included.
  updates = dict(updates, params=map_frozen(jnp.zeros_like, updates['params'],
                                            hp.train_from_block))
  tr = jax.tree.map(lambda p, u: p - lr * u, tr, updates)
  new = TrainState(tr['params'], tr['head'], opt_state, state.step + 1,
                   state.key)
  return new, {'loss': loss, 'accuracy': acc}


@jax.jit
def all_finite(tree) -> jax.Array:
  """bool[]: every entry of every leaf of `tree` is finite."""
  return jnp.all(
      jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


meta_train_step = jax.jit(_meta_train_step, static_argnums=(0, 1),
                          donate_argnums=(2,))
meta_train_step.__doc__ = (
    'meta_train_step(spec, hp, state, batch, lr) -> (state, metrics); batch: '
    '`make_step_batch`, E episodes stacked on axis 0 (shard it along that '
    'axis, the state replicated: jit follows the inputs\' shardings); '
    'metrics: mean query loss and accuracy over them; static: spec, hp '
    '(StepHParams); lr: f32[]; the state is donated.')

eval_episode = finetune_lib.evaluate_step


def make_batch(source, config: MetaTrainConfig, index: int):
  """Episode `index` of the run as a dict of arrays (pure in seed, index)."""
  es = data.sample_episode(source, config.sampler, config.seed, index)
  ep = data.make_episode(source, es, config.resolution, buckets=None,
                         way_buckets=None)
  return finetune_lib.episode_arrays(build_spec(config), ep)


def make_step_batch(source, config: MetaTrainConfig, step: int,
                    positions: Optional[Sequence[int]] = None):
  """The episodes of step `step` stacked on a leading axis (numpy).

  Args:
    positions: which of the step's E episodes (default all, in order);
      position p is episode step * E + p.

  Returns:
    dict of `episode_arrays` leaves with a leading axis len(positions).
  """
  e = config.episodes_per_step
  positions = range(e) if positions is None else positions
  eps = [make_batch(source, config, step * e + p) for p in positions]
  return jax.tree.map(lambda *xs: np.stack(xs), *eps)


class _RunningMetrics:
  """Exponential moving averages of the meta-training loss and accuracy."""

  def __init__(self):
    self.loss = self.acc = None

  def update(self, loss, acc) -> str:
    a = 0.05 if self.loss is not None else 1.0
    self.loss = (1 - a) * (self.loss or 0.0) + a * loss
    self.acc = (1 - a) * (self.acc or 0.0) + a * acc
    return f'loss {self.loss:.4f} acc {self.acc:.3f}'


def check_resumable(stored: dict, config: MetaTrainConfig, directory) -> None:
  """One-line ValueError when a checkpoint was written under another config.

  Every field except RESUMABLE_FIELDS must agree: a run never continues, or
  reports, weights trained under other settings.
  """
  cur = dataclasses.asdict(config)
  stored = dict(ADDED_DEFAULTS, **stored)  # written before those fields
  for f in sorted(cur):
    if f in RESUMABLE_FIELDS or f not in stored:
      continue
    a, b = stored[f], cur[f]
    if isinstance(a, list):
      a = tuple(a)
    if isinstance(b, list):
      b = tuple(b)
    if a != b:
      raise ValueError(
          f'meta-train checkpoint in {directory} was written with {f}={a!r}, '
          f'this run has {f}={b!r}; use another workdir, or the same config')


def _read_val_log(path: pathlib.Path):
  rows = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        rows.append(json.loads(line))
      except ValueError:
        continue  # a line cut by a kill: that validation is redone
  return rows


def _validate(config, spec, state, val_set, log_path, best_mngr, rows,
              lead=True):
  accs = validation.none_accuracy(spec, state.params, state.head, val_set)
  step = int(state.step)
  row = {
      'step': step,
      'none_accuracy': accs,
      'mean': float(np.mean(list(accs.values())))
  }
  best = max((r['mean'] for r in rows), default=-1.0)
  rows.append(row)
  if row['mean'] > best:
    checkpoint.save(best_mngr, step, state, config.to_json(), wait=True)
  if lead:  # one writer when several processes run
    with log_path.open('a') as f:
      f.write(json.dumps(row) + '\n')
  return row


def step_mesh(config: MetaTrainConfig, num_devices: int = 0):
  """The mesh a run's steps use: of the first `num_devices` (0 = all), the
  most that divide episodes_per_step (E=1: one device).

  Raises:
    ValueError: more devices asked for than visible; or, with several
      processes, a mesh that leaves a process without devices.
  """
  mesh = devices.divisor_mesh(devices.make_mesh(num_devices),
                              config.episodes_per_step)
  owners = {d.process_index for d in mesh.devices.flat}
  if len(owners) < jax.process_count():
    raise ValueError(
        f'episodes_per_step={config.episodes_per_step} on {mesh.size} of the '
        f'devices leaves some of the {jax.process_count()} processes without '
        'episodes; set --config.episodes_per_step to a multiple of the '
        'device count (--devices)')
  return mesh


def episode_positions(sharding, n: int) -> List[int]:
  """The positions (of a step's n episodes) this process's devices hold
  under `sharding` (all n in a single process)."""
  index = sharding.addressable_devices_indices_map((n,))
  return sorted({p for s in index.values() for p in range(n)[s[0]]})


def place_batch(local_batch, sharding, n: int):
  """Global arrays [n, ...] from this process's episodes (`positions`)."""
  if jax.process_count() == 1:
    return jax.device_put(local_batch, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(
          sharding, x, (n,) + x.shape[1:]), local_batch)


def place_state(state, sharding):
  """Host (or single-device) state -> arrays with `sharding` (replicated).

  Every process holds the same values (from one checkpoint or init)."""
  if jax.process_count() == 1:
    return jax.device_put(state, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(
          np.shape(x), sharding, lambda i, x=np.asarray(x): x[i]), state)


def host_state(state):
  """The state as numpy (a replicated array's local copy: works when the
  mesh spans processes)."""
  return jax.tree.map(
      lambda x: np.asarray(x.addressable_data(0))
      if isinstance(x, jax.Array) else np.asarray(x), state)


def run_meta_training(config: MetaTrainConfig, workdir, *, init_params=None,
                      progress: bool = True, stop_at: Optional[int] = None,
                      source=None, num_devices: int = 0) -> TrainState:
  """Meta-trains (or resumes) in `workdir`; returns the final state.

  With `config.val_every`, the run validates at step 0, every val_every
  steps and at the end (`workdir/val.jsonl`: step, None accuracy per val
  source, mean) and keeps the best step in `workdir/best`.

  Args:
    config: MetaTrainConfig.
    workdir: checkpoints go to workdir/checkpoints; an existing one resumes.
    init_params: start params instead of config.init's.
    progress: tqdm bar (TTY) or log lines every config.log_every steps.
    stop_at: end the loop after this many steps (after checkpointing), as a
      killed run would; the schedule still spans config.steps.
    source: episode source (default `data.get_source(config.source, split)`).
    num_devices: devices to spread each step's episodes over (0 = all
      visible; `step_mesh`). Any count resumes any checkpoint.

  Raises:
    ValueError: a checkpoint in workdir was written under another config;
      more devices asked for than visible.
    RuntimeError: the loss became non-finite (the last good checkpoint stays).
  """
  spec = build_spec(config)
  mesh = step_mesh(config, num_devices)
  split, n_ep = devices.split_sharding(mesh), config.episodes_per_step
  positions = episode_positions(split, n_ep)
  lead = jax.process_index() == 0  # writes the val log, prints
  workdir = pathlib.Path(workdir)
  mngr = checkpoint.manager(workdir, config.keep)
  if mngr.latest_step() is not None:
    check_resumable(checkpoint.read_config(mngr), config, mngr.directory)
  source = source or data.get_source(config.source, config.split)
  state, _ = checkpoint.restore_or_init(mngr,
                                        lambda: init_state(config, init_params),
                                        config.to_json())
  state = place_state(state, devices.replicated(mesh))
  norm0 = collapse.param_norm(state.params)  # the step donates state
  start, end = int(state.step), config.steps
  if stop_at is not None:
    end = min(end, stop_at)
  val_set = best_mngr = None
  val_rows, val_log = [], workdir / 'val.jsonl'
  if config.val_every and start < end:
    val_set = validation.build_val_set(config.val_sources, config.resolution,
                                       config.val_episodes)
    best_mngr = checkpoint.manager(workdir / 'best', 1)
    val_rows = [r for r in _read_val_log(val_log) if r['step'] <= start]
    if lead:
      val_log.write_text(''.join(json.dumps(r) + '\n' for r in val_rows))
    if not val_rows:
      _validate(config, spec, host_state(state), val_set, val_log, best_mngr,
                val_rows, lead)
  bar = progress_lib.Progress(config.steps, 'meta_train', initial=start,
                              unit='ep' if n_ep == 1 else 'step',
                              log_every=config.log_every,
                              enabled=progress and lead)
  running = _RunningMetrics()
  hp, sched = step_hparams(config), schedule(config)
  try:
    for i in range(start, end):
      batch = place_batch(make_step_batch(source, config, i, positions),
                          split, n_ep)
      lr = np.float32(sched(i))
      state, metrics = meta_train_step(spec, hp, state, batch, lr)
      loss, acc = (float(metrics['loss']), float(metrics['accuracy']))
      # The loss is of the params before this step's update; the update can
      # still overflow, and such params must never become a checkpoint.
      bad = ('loss' if not np.isfinite(loss) else
             None if bool(all_finite(state.params)) else 'parameters')
      if bad:
        mngr.wait_until_finished()
        last = mngr.latest_step()
        raise RuntimeError(
            f'{bad} became non-finite at step {i + 1} (lr {config.lr}); ' +
            (f'last good checkpoint at step {last} in {mngr.directory}'
             if last is not None else 'no checkpoint was written yet') +
            '; lower --config.lr')
      bar.update(running.update(loss, acc))
      if (i + 1) % config.checkpoint_every == 0 or i + 1 == config.steps:
        checkpoint.save(mngr, i + 1, host_state(state), config.to_json())
      if i + 1 == end:
        collapse.warn_if_collapsed('meta-training', config.lr, config.ways,
                                   loss, norm0, state.params)
      if val_set is not None and ((i + 1) % config.val_every == 0 or
                                  i + 1 == config.steps):
        row = _validate(config, spec, host_state(state), val_set, val_log,
                        best_mngr, val_rows, lead)
        if progress and lead:
          print(
              f'meta_train val step {row["step"]}: None accuracy ' +
              ' '.join(f'{k}={v:.2f}' for k, v in row['none_accuracy'].items()),
              file=sys.stderr, flush=True)
  finally:
    bar.close()
    mngr.wait_until_finished()
  return state


def val_log(workdir):
  """Rows of a meta-train workdir's val.jsonl ([] without validation)."""
  return _read_val_log(pathlib.Path(workdir) / 'val.jsonl')


def best_step(workdir) -> Optional[int]:
  """The validated best step of a meta-train workdir (None without val)."""
  rows = _read_val_log(pathlib.Path(workdir) / 'val.jsonl')
  if not rows:
    return None
  return max(rows, key=lambda r: (r['mean'], -r['step']))['step']


def load_backbone(path_or_name: str, resolution: Optional[int] = None,
                  feature_mix: Optional[bool] = None,
                  step: Optional[int] = None):
  """(spec, params, head) from a meta-train workdir or a pretrained name.

  Args:
    path_or_name: a workdir written by `meta_train`, or 'mcunet-5fps' etc.
    resolution: spec resolution (default: the run's, or 128).
    feature_mix: for names only (default False); a workdir uses its own.
    step: checkpoint step (default: the validated best step when the run
      validated, else the latest).
  """
  if not (pathlib.Path(path_or_name) / 'checkpoints').is_dir():
    try:
      models.canonical_name(path_or_name)
    except ValueError:
      raise ValueError(
          f'{path_or_name!r} is neither a meta-train workdir '
          '(no checkpoints/ inside) nor a known model name') from None
    spec, params = models.load_pretrained(path_or_name, resolution or 128,
                                          bool(feature_mix))
    return spec, params, protonet.init_head()
  mngr = checkpoint.manager(path_or_name)
  best = checkpoint.manager(pathlib.Path(path_or_name) / 'best', 1)
  if step is None and best.latest_step() is not None:
    mngr, step = best, best.latest_step()
  elif step is not None and step not in mngr.all_steps() and (
      step == best.latest_step()):
    mngr = best
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise ValueError(f'no checkpoint in {path_or_name}/checkpoints')
  stored = checkpoint.read_config(mngr, step)
  cfg = MetaTrainConfig(**stored)
  if resolution is not None:
    cfg = dataclasses.replace(cfg, resolution=resolution)
  shapes = jax.eval_shape(
      lambda: network.init(build_spec(cfg), jax.random.PRNGKey(0))[0])
  abstract = jax.eval_shape(lambda p: init_state(cfg, p), shapes)
  out = mngr.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  st = out['state']
  return build_spec(cfg), st.params, st.head
