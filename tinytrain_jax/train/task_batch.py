"""Many fine-tuning tasks of one method at once, spread over the devices.

`finetune_tasks` takes T tasks (episodes of one shape, each with its own
mask) and runs them as few programs as their plans allow:
  * tasks whose plans agree (`mask_partition.SparsePlan`: the same trained
    leaves and the same channel counts; the channel *indices* are data) form
    a group and are `jax.vmap`ped in one program: frozen prefix once per
    task, every fine-tune step in one `lax.scan`, the fold and the query
    evaluation, one dispatch and one host sync per group;
  * a group is split over all the mesh's devices (`shard_map`; each device
    vmaps its own slice, no collective), padded to a multiple of the mesh
    size by repeating its last task, whose copies are dropped. Every group
    is dispatched before any result is read.
Static-plan methods (LastLayer, SparseUpdate, FullTrain) and None put a whole
chunk of tasks in one group; TinyTrain's per-task plans give one group per
distinct plan (its channel counts come from a few ratios, so the number of
distinct plans, and of compiles, is bounded by the plans the selection can
make, not by the number of tasks).

Each task's numbers are those of `finetune.finetune_task` with the sparse
implementation (the same loss, steps, augmentation key `task_key(seed,
task, step)` and lr), up to float reassociation from batching; on 1 or N
devices every task gets the same accuracy.

  outs = finetune_tasks(spec, params, head, batches, masks, cfg, tasks, mesh)
  outs[i].accuracy, outs[i].loss_curve

`module_tasks` does the same for the methods that train modules besides a
params mask (TinyTL, Transductive, AdapterDrop; `finetune.ModuleTrainer`):
one group per episode shape, every step in one `lax.scan`.

Compiled programs are bounded: past `MAX_PROGRAMS` held, all are let go
(`release_programs`) before the next call compiles; `programs_compiled()`
counts every compile.
"""
import dataclasses
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from tinytrain_jax import devices as devices_lib
from tinytrain_jax import mask_partition
from tinytrain_jax import masks as masks_lib
from tinytrain_jax.models import network
from tinytrain_jax.train import finetune as finetune_lib
from tinytrain_jax.train import sparse_step

_EMPTY = mask_partition.SparsePlan((), ())


class TaskOutcome(NamedTuple):
  """One task of `finetune_tasks`.

  accuracy: query accuracy in [0, 1]; query_loss: query cross-entropy;
  loss_curve: f32[steps] support loss per step (empty without training);
  param_norm: global L2 norm of the fine-tuned params; costs: `mask_costs`
  plus 'step_forward' (as `finetune_task`).
  """
  accuracy: float
  query_loss: float
  loss_curve: np.ndarray
  param_norm: float
  costs: Dict[str, Any]


def _map_tasks(fn, *per_task):
  """jax.vmap(fn) over the leading (task) axis; one task runs unbatched,
  which traces in about half the time (no batched-kernel convs); the
  numbers agree up to float reassociation (the device-count tests)."""
  if jax.tree.leaves(per_task)[0].shape[0] != 1:
    return jax.vmap(fn)(*per_task)
  out = fn(*jax.tree.map(lambda a: a[0], per_task))
  return jax.tree.map(lambda a: a[None], out)


def _one_task(spec, plan, cfg, start, from_block, trains, params, head, batch,
              indices, task, lr):
  """Fine-tune + evaluate one task (vmapped by `_group_program`). With
  from_block > 0 the batch carries 'support_in', the support set's activation
  entering that block (the Fisher pass's), and the frozen prefix continues
  from it."""
  p, h = params, head
  losses = jnp.zeros((0,), jnp.float32)
  batch = dict(batch)
  support_in = batch.pop('support_in', None)
  if trains:
    if start:
      h0 = batch['support_x'] if support_in is None else support_in
      batch['support_h'] = network.prefix(spec, params, h0, start,
                                          from_block=from_block)
    tr = mask_partition.split(params, plan, head if cfg.train_head else None)
    opt = sparse_step.sparse_optimizer(1.0, cfg.momentum).init(tr)
    tr, _, losses = finetune_lib.sparse_loop_fn(spec, plan, cfg, start, tr, opt,
                                                params, head, indices, batch,
                                                task, lr)
    p = mask_partition.fold(params, plan, tr, indices)
    h = tr.get('head', head)
  # The support set's frozen prefix (batch['support_h']) is not run again.
  loss, acc = finetune_lib.episode_loss(spec, p, h, batch, inference=True,
                                        support_start=start if trains else 0)
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p)))
  return acc, loss, losses, norm


def _group_program(spec, plan, cfg, start, from_block, trains, mesh, params,
                   head, batch, indices, tasks, lr):
  """The group's tasks split over `mesh` with `shard_map`: each device
  vmaps its own tasks, with no collective (the tasks are independent; the
  SPMD partitioner, left to itself, replicated the scanned loop)."""

  def local(params, head, batch, indices, tasks, lr):
    return _map_tasks(lambda b, i, t: _one_task(spec, plan, cfg, start,
                                                from_block, trains, params,
                                                head, b, i, t, lr),
                      batch, indices, tasks)

  split, rep = P(devices_lib.AXIS), P()
  return jax.shard_map(local, mesh=mesh,
                       in_specs=(rep, rep, split, split, split, rep),
                       out_specs=split, check_vma=False)(params, head, batch,
                                                         indices, tasks, lr)


# One compile per (spec, plan, cfg, start, from_block, mesh, group size,
# episode shapes).
group_program = jax.jit(_group_program, static_argnums=(0, 1, 2, 3, 4, 5, 6))

# Compiled fine-tune programs held at most; past it, every compiled program
# is let go. jax keeps each executable for the life of the process, and a
# variable-episode evaluation compiles one per (plan, bucket shape): unbounded,
# they ran a 24 GiB host out of memory inside XLA's compiler.
MAX_PROGRAMS = 48


_compiled = [0]  # programs compiled by this module since import


def programs_held() -> int:
  """Compiled programs of `group_program` and `module_program`."""
  return group_program._cache_size() + module_program._cache_size()  # pylint: disable=protected-access


def programs_compiled() -> int:
  """Fine-tune programs compiled since import (releases do not reset it)."""
  return _compiled[0]


def release_programs(limit: Optional[int] = None) -> bool:
  """Drops every compiled program (`jax.clear_caches`: jax's lowering caches
  hold the executables too) once more than `limit` (default MAX_PROGRAMS)
  are held; True if so. Later calls recompile what they need; results do
  not change."""
  if programs_held() <= (MAX_PROGRAMS if limit is None else limit):
    return False
  jax.clear_caches()
  return True


def _plan_of(spec, params, mask):
  if mask is None:
    return _EMPTY, {}
  masks_lib.check_mask(mask, params, spec)
  return mask_partition.make_plan(spec, params, mask)


def _shape_key(batch) -> tuple:
  return tuple((k, tuple(v.shape)) for k, v in sorted(batch.items()))


def _stack(trees: Sequence[Any], n: int):
  """Stacks `trees` on a new leading axis, padded to n by repeating the last
  (device arrays stay on the device)."""
  trees = list(trees) + [trees[-1]] * (n - len(trees))

  def stack(*xs):
    if isinstance(xs[0], jax.Array):
      return jnp.stack(xs)
    return np.stack([np.asarray(x) for x in xs])

  return jax.tree.map(stack, *trees)


def _padded_tasks(tasks, members, n: int) -> np.ndarray:
  """i32[n]: the members' task indices, padded by repeating the last."""
  return np.asarray([tasks[i] for i in members] + [tasks[members[-1]]] *
                    (n - len(members)), np.int32)


def finetune_tasks(spec, params, head, batches: Sequence[Dict[str, Any]],
                   task_masks: Sequence[Optional[Any]],
                   config: finetune_lib.FinetuneConfig,
                   tasks: Sequence[int],
                   mesh: Optional[jax.sharding.Mesh] = None,
                   support_inputs: Optional[Sequence[Any]] = None
                  ) -> List[TaskOutcome]:
  """Fine-tunes and evaluates T tasks from the same start weights.

  Args:
    spec, params, head: the model and its start weights (never modified).
    batches: T `finetune.episode_arrays` dicts.
    task_masks: T masks (`masks`); None = no training for that task (not
      even the head).
    config: FinetuneConfig with impl='sparse' (the dense reference runs
      through `finetune.finetune_task`, one task at a time).
    tasks: T task indices (folded into each task's augmentation key).
    mesh: devices to spread the tasks over (default: all local devices).
    support_inputs: T `selection.BlockInput`s or Nones: the support set's
      activation entering some block (TinyTrain's Fisher pass computes it,
      `methods.method_selection`). A task whose frozen prefix reaches that
      block continues it from there instead of running the blocks below
      again; numbers equal the plain run's up to float rounding.

  Returns:
    T TaskOutcomes, in order. Raises RuntimeError naming the task whose
    support loss became non-finite.
  """
  if config.impl != 'sparse':
    raise ValueError("finetune_tasks runs impl='sparse' only; use "
                     'finetune.finetune_task for the dense reference')
  support_inputs = (list(support_inputs) if support_inputs is not None else
                    [None] * len(batches))
  if not (len(batches) == len(task_masks) == len(tasks) ==
          len(support_inputs)):
    raise ValueError(f'finetune_tasks: {len(batches)} batches, '
                     f'{len(task_masks)} masks, {len(tasks)} task indices and '
                     f'{len(support_inputs)} support inputs')
  mesh = mesh or devices_lib.make_mesh(local=True)
  release_programs()
  held = programs_held()
  static_cfg = dataclasses.replace(config, lr=1.0)
  lr = jnp.float32(config.lr)
  groups: Dict[Any, List[int]] = {}
  meta = []
  batches = list(batches)
  for i, (b, m, inp) in enumerate(zip(batches, task_masks, support_inputs)):
    plan, indices = _plan_of(spec, params, m)
    trains = m is not None and config.steps > 0 and (not plan.empty or
                                                    config.train_head)
    start = finetune_lib.prefix_start(spec, plan, config) if trains else 0
    from_block = 0
    if start and inp is not None and 0 < inp.block <= start:
      from_block = inp.block
      batches[i] = b = dict(b, support_in=inp.activation)
    n_support = int(np.asarray(b['support_mask']).sum())
    costs = finetune_lib.mask_costs(spec, m, n_support)
    costs['step_forward'] = finetune_lib.step_forward_macs(spec, start)
    meta.append((indices, costs))
    groups.setdefault((plan, trains, start, from_block, _shape_key(b)),
                      []).append(i)
  pending = []
  sharding, rep = (devices_lib.split_sharding(mesh),
                   devices_lib.replicated(mesh))
  put = jax.device_put
  # The start weights go to the devices once, not once per group.
  params_r, head_r, lr_r = put(params, rep), put(head, rep), put(lr, rep)
  for (plan, trains, start, from_block, _), members in groups.items():
    # A multiple of the mesh size: one compile per (plan, size). With the
    # protocol's chunks (mesh size x tasks_per_device) a device vmaps at most
    # tasks_per_device tasks on any mesh: per-task numbers do not depend on
    # the device count.
    n = devices_lib.padded_size(len(members), mesh)
    args = (put(_stack([batches[i] for i in members], n), sharding),
            put(_stack([meta[i][0] for i in members], n), sharding),
            put(_padded_tasks(tasks, members, n), sharding))
    out = group_program(spec, plan, static_cfg, start, from_block, trains,
                        mesh, params_r, head_r, *args, lr_r)
    pending.append((members, out))
  _compiled[0] += programs_held() - held
  return _collect(pending, tasks, config.steps, [m[1] for m in meta])


def _collect(pending, tasks, steps: int, costs) -> List[TaskOutcome]:
  """TaskOutcomes, in task order, of the dispatched groups `pending`
  ([(member indices, program output)]); checks every loss curve."""
  results: List[Optional[TaskOutcome]] = [None] * len(tasks)
  for members, out in pending:
    acc, loss, curves, norms = jax.device_get(out)
    for j, i in enumerate(members):
      curve = np.asarray(curves[j], np.float32)
      if curve.size:
        try:
          finetune_lib.check_finite_curve(curve, steps)
        except RuntimeError as e:
          raise RuntimeError(f'task {tasks[i]}: {e}') from None
      results[i] = TaskOutcome(float(acc[j]), float(loss[j]), curve,
                               float(norms[j]), costs[i])
  return results


def _one_module_task(spec, cfg, trainer, tr0, params, head, batch, task, lr):
  """`finetune.train_module` + evaluation of one task, as one pure function
  (vmapped by `_module_program`)."""
  opt = sparse_step.sparse_optimizer(1.0, cfg.momentum).init(tr0)

  def body(carry, i):
    tr, opt = carry
    tr, opt, loss = trainer.step(spec, cfg, tr, opt, params, head, batch, i,
                                 task, lr)
    return (tr, opt), loss

  (tr, _), losses = jax.lax.scan(body, (tr0, opt),
                                 jnp.arange(cfg.steps, dtype=jnp.int32))
  loss, acc = trainer.evaluate(spec, params, tr, head, batch)
  p = trainer.params_of(params, tr)
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p)))
  return acc, loss, losses, norm


def _module_program(spec, cfg, trainer, mesh, tr0, params, head, batch, tasks,
                    lr):

  def local(tr0, params, head, batch, tasks, lr):
    return _map_tasks(lambda b, t: _one_module_task(spec, cfg, trainer, tr0,
                                                    params, head, b, t, lr),
                      batch, tasks)

  split, rep = P(devices_lib.AXIS), P()
  return jax.shard_map(local, mesh=mesh,
                       in_specs=(rep, rep, rep, split, split, rep),
                       out_specs=split, check_vma=False)(tr0, params, head,
                                                         batch, tasks, lr)


# One compile per (spec, cfg, trainer, mesh, group size, episode shapes).
module_program = jax.jit(_module_program, static_argnums=(0, 1, 2, 3))


def module_tasks(trainer: finetune_lib.ModuleTrainer, spec, params, head,
                 batches: Sequence[Dict[str, Any]],
                 config: finetune_lib.FinetuneConfig, tasks: Sequence[int],
                 mesh: Optional[jax.sharding.Mesh] = None) -> List[TaskOutcome]:
  """Fine-tunes and evaluates T tasks of a module method from the same start.

  Args:
    trainer: the method's `finetune.ModuleTrainer` (a module constant).
    spec, params, head: backbone, its start weights, ProtoNet head.
    batches: T `finetune.episode_arrays` dicts.
    config: FinetuneConfig (impl is not used: modules train densely).
    tasks: T task indices (augmentation keys, as `finetune.task_key`).
    mesh: devices (default: all local devices).

  Returns:
    T TaskOutcomes as `finetune_tasks` (costs empty: the caller's
    `methods.method_costs` knows them). Each equals the method's one-task
    function up to float reassociation.

  Raises:
    RuntimeError: a task's loss curve is not finite (names the task).
  """
  mesh = mesh if mesh is not None else devices_lib.make_mesh(local=True)
  release_programs()
  held = programs_held()
  static_cfg = dataclasses.replace(config, lr=1.0)
  rep, sharding = devices_lib.replicated(mesh), devices_lib.split_sharding(mesh)
  put = jax.device_put
  tr0 = put(trainer.init(spec, params, config), rep)
  params_r, head_r = put(params, rep), put(head, rep)
  lr_r = put(jnp.float32(config.lr), rep)
  groups: Dict[Any, List[int]] = {}
  for i, b in enumerate(batches):
    groups.setdefault(_shape_key(b), []).append(i)
  pending = []
  for members in groups.values():
    n = devices_lib.padded_size(len(members), mesh)
    out = module_program(
        spec, static_cfg, trainer, mesh, tr0, params_r, head_r,
        put(_stack([batches[i] for i in members], n), sharding),
        put(_padded_tasks(tasks, members, n), sharding), lr_r)
    pending.append((members, out))
  _compiled[0] += programs_held() - held
  return _collect(pending, tasks, config.steps, [{}] * len(batches))
