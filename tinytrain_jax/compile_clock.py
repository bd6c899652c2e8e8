"""How much of a job's wall time goes to XLA compiles.

On a 2-core CPU a fine-tune program compiles in 5-45 s and runs a task in
1-3 s, so a phase's wall time says little until its compile time is known.
jax reports the time of each trace, lowering and backend compile (a
persistent-cache hit included, with its load time) to `jax.monitoring`
listeners; `CompileClock` sums them. Tracing and lowering count: they run on
every new program, cache hit or not, and a large scanned program takes
seconds to lower.

  clock = CompileClock()          # registers one listener for the process
  c0 = clock.read()
  ...                              # anything that may compile
  seconds, count = clock.since(c0)
"""
import threading
from typing import Tuple

from jax import monitoring

# jax's events (jax._src.dispatch.*_EVENT); a hit of the persistent
# compilation cache reports its load time as the backend compile.
BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'
EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
          '/jax/core/compile/jaxpr_to_mlir_module_duration',
          BACKEND_COMPILE_EVENT)

_lock = threading.Lock()
_total = [0.0, 0]  # seconds, compiles since the listener was registered
_by_thread = {}  # thread id -> [seconds, compiles] (jax compiles in the
# thread that calls the jitted function)
_registered = [False]


def _listen(event: str, duration: float, **_):
  if event in EVENTS:
    with _lock:
      mine = _by_thread.setdefault(threading.get_ident(), [0.0, 0])
      for acc in (_total, mine):
        acc[0] += float(duration)
        acc[1] += event == BACKEND_COMPILE_EVENT


class CompileClock:
  """Seconds spent tracing, lowering and compiling, and the number of
  backend compiles, of this process (all threads) or of one thread."""

  def __init__(self):
    with _lock:
      if not _registered[0]:
        monitoring.register_event_duration_secs_listener(_listen)
        _registered[0] = True

  def read(self, this_thread: bool = False) -> Tuple[float, int]:
    """(seconds, compiles) since the first CompileClock was made, of the
    whole process or only of the calling thread."""
    with _lock:
      acc = (_by_thread.get(threading.get_ident(), [0.0, 0])
             if this_thread else _total)
      return acc[0], acc[1]

  def since(self, mark: Tuple[float, int],
            this_thread: bool = False) -> Tuple[float, int]:
    """(seconds, compiles) since `mark` (a `read()` with the same
    `this_thread`)."""
    s, n = self.read(this_thread)
    return s - mark[0], n - mark[1]
