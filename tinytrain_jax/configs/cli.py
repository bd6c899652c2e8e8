"""Launcher edge: flags and config files in, one `error:` line out.

Every launcher runs through `cli.run(main)` instead of `app.run(main)`:

  def main(argv): ...
  if __name__ == '__main__':
    cli.run(main)

`run` parses the flags itself (`parse_flags`), so that a bad `--config=FILE:ARG`
argument, an unknown `--config.key`, a value of the wrong type or a missing
config file ends with one line `error: ...` (exit 2) instead of a traceback,
and wraps `main` so that the errors a user can fix (ValueError,
FileNotFoundError, RuntimeError, OSError such as an unwritable folder or a
full disk) end with one line `error: ...` (exit 1). Anything else is a bug and
keeps its traceback.

A config file accepts the `:ARG` values in its module-level `CONFIG_ARGS`
(default `('', 'quick')`, what every config of this project takes).

Launchers that spread work over devices (docs/devices.md) call
`define_device_flags()` at import and `initialize_devices()` first in main:

  cli.define_device_flags()       # --devices, --coordinator_address, ...
  def main(argv):
    cli.initialize_devices()      # jax.distributed.initialize when > 1 process
    run(..., num_devices=cli.num_devices())
"""
import errno
import importlib.util
import os
import pathlib
import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

import jax

from tinytrain_jax import assets
from tinytrain_jax import devices

DEFAULT_CONFIG_ARGS = ('', 'quick')
USER_ERRORS = (ValueError, FileNotFoundError, RuntimeError, OSError)


def one_line(text: str) -> str:
  """Joins a multi-line message into one line."""
  parts = [p.strip() for p in str(text).strip().splitlines()]
  return '; '.join(p for p in parts if p)


def error_exit(message: str, code: int = 1):
  """Prints `error: <message>` (one line) to stderr and exits with `code`."""
  print(f'error: {one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(code)


def require_config(config, example: str):
  """Launcher preamble: quiet orbax's per-save INFO logs, and exit with one
  line (code 2) when --config was not given; `example` is its config file."""
  logging.set_verbosity(logging.WARNING)
  if config is None:
    error_exit(f'--config is required, e.g. --config={example}', 2)
  return config


def config_file_args(argv: Sequence[str], flag: str = 'config'):
  """The value of --<flag>=FILE[:ARG] in argv, or None."""
  value = None
  for i, a in enumerate(argv):
    if a.startswith(f'--{flag}='):
      value = a.split('=', 1)[1]
    elif a == f'--{flag}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def check_config_arg(value: str, flag: str = 'config') -> None:
  """Checks FILE exists and ARG is one of FILE's CONFIG_ARGS.

  Raises:
    ValueError: one line naming the flag, the value and the accepted ones.
  """
  path, _, arg = value.partition(':')
  if not pathlib.Path(path).is_file():
    raise ValueError(f'--{flag}={value}: no config file {path!r}; e.g. '
                     f'--{flag}=tinytrain_jax/configs/default.py')
  spec = importlib.util.spec_from_file_location('_cli_config_check', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  accepted = tuple(getattr(module, 'CONFIG_ARGS', DEFAULT_CONFIG_ARGS))
  if arg not in accepted:
    shown = ', '.join(repr(a) if a else "'' (none)" for a in accepted)
    raise ValueError(f'--{flag}={value}: unknown config argument {arg!r} of '
                     f'{path}; accepted: {shown}')


def parse_flags(argv: Sequence[str]):
  """`app.run` flags_parser: one `error:` line (exit 2) on any bad flag."""
  try:
    value = config_file_args(argv)
    if value is not None and 'config' in flags.FLAGS:
      check_config_arg(value)
    return flags.FLAGS(list(argv))
  except flags.Error as e:
    error_exit(_flag_message(e, argv), 2)
  except (ValueError, KeyError, AttributeError, TypeError, OSError) as e:
    error_exit(_flag_message(e, argv), 2)


def _flag_message(e: BaseException, argv: Sequence[str] = ()) -> str:
  # config_flags reports an unknown --config.key as an AttributeError wrapping
  # a KeyError whose text is "'key'\nDid you mean ...".
  inner = e
  while inner.args and isinstance(inner.args[0], BaseException):
    inner = inner.args[0]
  if isinstance(e, (KeyError, AttributeError)):
    text = str(inner.args[0]) if inner.args else str(inner)
    key, _, hint = text.partition('\n')
    key = key.strip('\'" ')
    for arg in argv:  # the full dotted path the user typed
      path = arg[len('--config.'):].split('=', 1)[0]
      if arg.startswith('--config.') and path.split('.')[-1] == key:
        key = path
    return (f'unknown config key --config.{key}' +
            (f'; {one_line(hint)}' if hint.strip() else '') +
            '; see the config file for the accepted keys')
  return one_line(str(e))


def describe_os_error(e: OSError) -> str:
  """One line for an OSError: what failed, on which file, and the fix."""
  where = f' {e.filename}' if e.filename else ''
  if e.errno == errno.ENOSPC:
    return (f'disk full while writing{where}; free space and rerun (finished '
            'work is kept and resumed)')
  if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return (f'cannot write{where} ({e.strerror}); pass a writable --workdir '
            'or fix the permissions')
  if e.errno in (errno.ENOTDIR, errno.EEXIST):
    return (f'cannot create folder{where} ({e.strerror}): a file is in the '
            'way; pass another --workdir')
  if e.strerror:
    return f'{e.strerror}{where}'
  return one_line(str(e)) or type(e).__name__


def guard(main: Callable, prefix: Optional[Callable[[], str]] = None):
  """Wraps main: USER_ERRORS -> one `error:` line, exit 1."""

  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
        msg = describe_os_error(e)
      elif isinstance(e, FileNotFoundError) and e.filename:
        msg = describe_os_error(e)
      else:
        msg = str(e) or type(e).__name__
      error_exit(f'{prefix()}: {msg}' if prefix else msg)

  return wrapped


def run(main: Callable, prefix: Optional[Callable[[], str]] = None) -> None:
  """`app.run(main)` with `parse_flags` and `guard` (see module doc)."""
  app.run(guard(main, prefix), flags_parser=parse_flags)


def check_resolution(value: int, flag: str = '--resolution') -> None:
  """Input sizes must be positive multiples of 32 (the backbones' stride).

  At other sizes the feature maps stop halving evenly, and `describe` and
  `cost` were found to report different backward MACs there; refuse instead.

  Raises:
    ValueError: one line naming the flag, the value and the nearest valid ones.
  """
  if not isinstance(value, int) or value < 32 or value % 32:
    lo = max(32, (int(value) // 32) * 32) if isinstance(value, int) else 32
    raise ValueError(f'{flag}={value} must be a multiple of 32 and >= 32 '
                     f'(the backbones downsample by 32); use e.g. {lo} or '
                     f'{lo + 32}')


def define_device_flags() -> None:
  """Defines --devices, --coordinator_address, --num_processes, --process_id
  (once; a second call is a no-op)."""
  if 'devices' in flags.FLAGS:
    return
  flags.DEFINE_integer(
      'devices', 0, 'devices to spread the work over: the first N visible '
      '(0 = all; on a CPU host, XLA_FLAGS=--xla_force_host_platform_'
      'device_count=N simulates N)')
  flags.DEFINE_string(
      'coordinator_address', '', 'multi-process runs: HOST:PORT of process 0 '
      '(jax.distributed.initialize)')
  flags.DEFINE_integer('num_processes', 1, 'multi-process runs: processes')
  flags.DEFINE_integer('process_id', 0, 'multi-process runs: this process')


def num_devices() -> int:
  """The --devices flag (0 = all visible devices)."""
  return flags.FLAGS.devices


def initialize_devices() -> None:
  """Starts jax.distributed from the device flags (no-op for 1 process) and
  checks --devices against the visible devices; call first in main.

  Raises:
    ValueError: one line naming the flag (main's `guard` prints it).
  """
  f = flags.FLAGS
  enable_compilation_cache()
  devices.initialize(f.coordinator_address, f.num_processes, f.process_id)
  devices.device_list(f.devices)  # raises when more than visible


def enable_compilation_cache() -> pathlib.Path:
  """Keeps compiled XLA programs on disk, in the derived cache's `xla/`.

  A rerun, a resumed run or a sweep point that compiles a program it compiled
  before (same HLO, options, backend and jax version: the cache's key, so a
  stale entry is never used) loads it instead. A folder the user chose
  ($JAX_COMPILATION_CACHE_DIR or jax's config) is kept. Returns the folder.
  """
  chosen = (os.environ.get('JAX_COMPILATION_CACHE_DIR') or
            jax.config.jax_compilation_cache_dir)
  if chosen:
    return pathlib.Path(chosen)
  path = assets.derived_cache_dir() / 'xla'
  # No size bound: jax's LRU eviction needs the `filelock` package, which
  # the project does not depend on. The folder can be deleted at any time.
  jax.config.update('jax_compilation_cache_dir', str(path))
  return path
