"""CompileClock counts the compiles of the process and of each thread."""
import threading

import jax
import jax.numpy as jnp

from tinytrain_jax import compile_clock


def test_counts_a_new_compile_and_splits_threads():
  clock = compile_clock.CompileClock()
  mark, mine = clock.read(), clock.read(this_thread=True)

  def other():
    jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones((7,)))

  t = threading.Thread(target=other)
  t.start()
  t.join()
  seconds, compiles = clock.since(mark)
  assert compiles >= 1 and seconds > 0
  assert clock.since(mine, this_thread=True) == (0.0, 0)
  jax.jit(lambda x: x - 2.0)(jnp.ones((5,)))
  s_mine, n_mine = clock.since(mine, this_thread=True)
  assert n_mine >= 1 and s_mine > 0
  assert clock.since(mark)[1] >= compiles + n_mine
