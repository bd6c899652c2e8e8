"""Thin orbax wrapper (STYLE.md §7): manager, save, restore_or_init.

  mngr = checkpoint.manager(workdir, keep=3)
  state, step = checkpoint.restore_or_init(mngr, init_fn, config_json)
  checkpoint.save(mngr, step, state, config_json)
  mngr.wait_until_finished()

Each checkpoint holds two items: 'state' (any pytree of arrays, restored into
`jax.eval_shape(init_fn)`) and 'config' (the run's config as JSON). Saves are
atomic through orbax's own temporary-directory commit/rename; a checkpoint that
was interrupted mid-write is never listed by `latest_step()`.
"""
import json
import pathlib
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

# Config fields that must agree between a checkpoint and the run resuming it.
MATCH_FIELDS = ('model', 'feature_mix')


def manager(workdir, keep: int = 3) -> ocp.CheckpointManager:
  """A CheckpointManager in `workdir`/checkpoints keeping the last `keep`."""
  if keep < 1:
    raise ValueError(f'keep must be >= 1, got {keep}; set --config.keep')
  path = pathlib.Path(workdir).absolute() / 'checkpoints'
  opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(path, options=opts,
                               item_names=('state', 'config'))


def _to_json(config_json) -> dict:
  if config_json is None:
    return {}
  if isinstance(config_json, str):
    return json.loads(config_json)
  return dict(config_json)


def save(mngr: ocp.CheckpointManager, step: int, state: Any,
         config_json=None, wait: bool = False) -> None:
  """Saves `state` (+ config JSON, str or dict) as checkpoint `step`."""
  state = jax.tree.map(np.asarray, state)
  mngr.save(int(step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      config=ocp.args.JsonSave(_to_json(config_json))))
  if wait:
    mngr.wait_until_finished()


def read_config(mngr: ocp.CheckpointManager,
                step: Optional[int] = None) -> dict:
  """The config JSON stored with checkpoint `step` (default: latest)."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise ValueError(f'no checkpoint in {mngr.directory}')
  out = mngr.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore()))
  return dict(out['config'] or {})


def check_compatible(stored: dict, current: dict, directory,
                     fields: Sequence[str] = MATCH_FIELDS) -> None:
  """One-line ValueError when a checkpoint belongs to another model."""
  for f in fields:
    if f in stored and f in current and stored[f] != current[f]:
      raise ValueError(
          f'checkpoint in {directory} was written for {f}={stored[f]!r}, '
          f'but this run uses {f}={current[f]!r}; use another workdir or '
          f'--config.{f}={stored[f]}')


def restore_or_init(mngr: ocp.CheckpointManager, init_fn: Callable[[], Any],
                    config_json=None) -> Tuple[Any, Optional[int]]:
  """Restores the latest checkpoint into init_fn's structure, or inits.

  Args:
    mngr: from `manager`.
    init_fn: () -> state pytree; only traced (`jax.eval_shape`) on restore.
    config_json: current config; checked against the stored one
      (`MATCH_FIELDS`).

  Returns:
    (state, restored step or None when freshly initialised).

  Raises:
    ValueError: the checkpoint is for another model or has another structure.
  """
  step = mngr.latest_step()
  if step is None:
    return init_fn(), None
  check_compatible(read_config(mngr, step), _to_json(config_json),
                   mngr.directory)
  abstract = jax.eval_shape(init_fn)
  try:
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
  except (ValueError, KeyError, TypeError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f'checkpoint {step} in {mngr.directory} does not match '
                     f'this run\'s state structure ({msg}); use another '
                     'workdir') from None
  return out['state'], step
