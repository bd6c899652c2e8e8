"""Thin orbax wrapper (STYLE.md §7): manager, save, restore_or_init.

  mngr = checkpoint.manager(workdir, keep=3)
  state, step = checkpoint.restore_or_init(mngr, init_fn, config_json)
  checkpoint.save(mngr, step, state, config_json)
  mngr.wait_until_finished()

Each checkpoint holds two items: 'state' (any pytree of arrays, restored into
`jax.eval_shape(init_fn)`) and 'config' (the run's config as JSON). Saves are
atomic through orbax's own temporary-directory commit/rename; a checkpoint that
was interrupted mid-write is never listed by `latest_step()`.

A listed step can still be damaged afterwards (a disk error, a file deleted or
truncated by hand). `restore_or_init` then falls back to the newest step that
restores, logs one warning line, and moves the damaged newer steps aside to
`<checkpoints>_corrupt/<step>` so that the resumed run can save those steps
again. `check_checkpoint_for` tells a caller, before any work, whether a
checkpoint was written for the model it is about to use.
"""
import json
import pathlib
import shutil
from typing import Any, Callable, Optional, Sequence, Tuple

from absl import logging
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


def save(mngr: ocp.CheckpointManager, step: int, state: Any, config_json=None,
         wait: bool = False) -> None:
  """Saves `state` (+ config JSON, str or dict) as checkpoint `step`."""
  state = jax.tree.map(np.asarray, state)
  mngr.save(
      int(step), args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          config=ocp.args.JsonSave(_to_json(config_json))))
  if wait:
    mngr.wait_until_finished()


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return f'{type(e).__name__}: {text.splitlines()[0]}' if text else (
      type(e).__name__)


def _read_config_step(mngr, step) -> dict:
  out = mngr.restore(step,
                     args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return dict(out['config'] or {})


def read_config(mngr: ocp.CheckpointManager,
                step: Optional[int] = None) -> dict:
  """The config JSON stored with checkpoint `step`.

  With step=None: the newest step whose config is readable (a damaged newer
  step is skipped with a warning).

  Raises:
    ValueError: no checkpoint, or none whose config can be read.
  """
  if step is not None:
    try:
      return _read_config_step(mngr, step)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'cannot read checkpoint {step} in {mngr.directory} '
                       f'({_first_line(e)}); pass another step') from None
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    raise ValueError(f'no checkpoint in {mngr.directory}')
  errors = []
  for s in steps:
    try:
      cfg = _read_config_step(mngr, s)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f'step {s}: {_first_line(e)}')
      continue
    if errors:
      logging.warning(
          'checkpoint config unreadable in %s (%s); using step '
          '%d', mngr.directory, '; '.join(errors), s)
    return cfg
  raise ValueError(f'no readable checkpoint in {mngr.directory} '
                   f'({errors[0]}); move that folder away to start over')


def check_compatible(stored: dict, current: dict, directory,
                     fields: Sequence[str] = MATCH_FIELDS) -> None:
  """One-line ValueError when a checkpoint belongs to another model."""
  for f in fields:
    if f in stored and f in current and stored[f] != current[f]:
      raise ValueError(
          f'checkpoint in {directory} was written for {f}={stored[f]!r}, '
          f'but this run uses {f}={current[f]!r}; use another workdir or '
          f'--config.{f}={stored[f]}')


def check_checkpoint_for(workdir, flag: str = '--config.meta_train.checkpoint',
                         **expected) -> dict:
  """Checks, before any work, that a meta-train workdir fits this run.

  Args:
    workdir: a folder written by `meta_train` (holding checkpoints/).
    flag: the setting that named `workdir`, quoted in the error.
    **expected: config fields the checkpoint must have, e.g.
      model='mcunet-5fps', feature_mix=False.

  Returns:
    the stored config (newest readable step).

  Raises:
    ValueError: one line naming the folder, the field, both values and the
      fix: no checkpoint there, or one written for another model.

  Example:
    check_checkpoint_for('runs/meta_mcunet', model='mcunet-5fps')
  """
  path = pathlib.Path(workdir)
  if not (path / 'checkpoints').is_dir():
    raise ValueError(f'{flag}={workdir}: no checkpoints/ folder there; pass '
                     'a workdir written by experiments.meta_train')
  stored = read_config(manager(path))
  for f, want in expected.items():
    if f in stored and stored[f] != want:
      raise ValueError(
          f'{flag}={workdir} was meta-trained with {f}={stored[f]!r}, but '
          f'this run needs {f}={want!r}; pass a checkpoint meta-trained for '
          f'{f}={want!r} (one per backbone)')
  return stored


def _quarantine(mngr: ocp.CheckpointManager, steps) -> pathlib.Path:
  """Moves damaged step folders to <directory>_corrupt/<step>."""
  src = pathlib.Path(str(mngr.directory))
  dst = src.parent / (src.name + '_corrupt')
  dst.mkdir(exist_ok=True)
  for s in steps:
    target, n = dst / str(s), 1
    while target.exists():
      target, n = dst / f'{s}.{n}', n + 1
    shutil.move(str(src / str(s)), str(target))
  mngr.reload()
  return dst


def restore_or_init(mngr: ocp.CheckpointManager, init_fn: Callable[[], Any],
                    config_json=None) -> Tuple[Any, Optional[int]]:
  """Restores the newest intact checkpoint into init_fn's structure, or inits.

  A step that fails to restore while an older one restores is damaged: the
  older one is used, a warning names both, and the damaged steps are moved to
  `<directory>_corrupt/` (so training can write those steps again).

  Args:
    mngr: from `manager`.
    init_fn: () -> state pytree; only traced (`jax.eval_shape`) on restore.
    config_json: current config; checked against the stored one
      (`MATCH_FIELDS`).

  Returns:
    (state, restored step or None when freshly initialised).

  Raises:
    ValueError: the checkpoint is for another model, or no step restores
      (another state structure, or every step damaged); nothing is moved then.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    return init_fn(), None
  abstract = jax.eval_shape(init_fn)
  current = _to_json(config_json)
  failed = []
  for step in steps:
    try:
      stored = _read_config_step(mngr, step)
    except Exception as e:  # pylint: disable=broad-except
      failed.append((step, _first_line(e)))
      continue
    check_compatible(stored, current, mngr.directory)
    try:
      out = mngr.restore(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # pylint: disable=broad-except
      failed.append((step, _first_line(e)))
      continue
    if failed:
      dst = _quarantine(mngr, [s for s, _ in failed])
      logging.warning(
          'checkpoint step(s) %s in %s are damaged (%s); resumed from step %d '
          'and moved the damaged steps to %s', [s for s, _ in failed],
          mngr.directory, failed[0][1], step, dst)
    return out['state'], step
  step, msg = failed[0]
  raise ValueError(f'no checkpoint in {mngr.directory} restores into this '
                   f'run\'s state (step {step}: {msg}); it was written by '
                   'another version or is damaged: use another workdir, or '
                   'move that folder away to start over')
