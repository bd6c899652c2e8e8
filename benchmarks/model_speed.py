"""Forward and forward+backward time of the three backbones, the CPU-chosen
conv formulations (impl='cpu') against lax convs, on the default backend.

  python -m benchmarks.model_speed [--batch=100 --resolution=128]

Writes benchmarks/results/model_speed.json and prints a table.
"""
from absl import app, flags
import jax
import jax.numpy as jnp

from benchmarks import common
from tinytrain_jax.models import apply, init, model_spec

_BATCH = flags.DEFINE_integer('batch', 100, 'images per step')
_RES = flags.DEFINE_integer('resolution', 128, 'input size')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'timed runs (median)')
_MODELS = flags.DEFINE_list('models',
                            ['mcunet-5fps', 'mbv2-w0.35', 'proxyless-w0.3'],
                            'backbones')


def main(argv):
  del argv
  rows = []
  x = jax.random.uniform(
      jax.random.PRNGKey(1), (_BATCH.value, _RES.value, _RES.value, 3),
      minval=-1)
  for name in _MODELS.value:
    spec = model_spec(name, _RES.value, feature_mix=name != 'mcunet-5fps')
    params, _ = init(spec, jax.random.PRNGKey(0))
    for impl in ('cpu', 'lax'):
      fwd = jax.jit(lambda p, x, impl=impl, spec=spec: apply(
          spec, p, x, impl=impl).features)
      grad = jax.jit(
          jax.grad(lambda p, x, impl=impl, spec=spec: jnp.sum(
              apply(spec, p, x, impl=impl).features**2)))
      row = dict(model=name, impl=impl, batch=_BATCH.value,
                 resolution=_RES.value)
      try:
        row['fwd_s'] = common.median_seconds(fwd, params, x,
                                             repeats=_REPEATS.value)
        row['fwd_bwd_s'] = common.median_seconds(grad, params, x,
                                                 repeats=_REPEATS.value)
      except jax.errors.JaxRuntimeError as e:
        # A formulation can fail to compile on a backend it was not chosen
        # for (the CPU ones' depthwise kernel gradient on an H200: ptxas
        # out of shared memory); the row records that instead of the run
        # stopping.
        row['error'] = str(e).splitlines()[0][:300]
      rows.append(row)
      times = ' '.join(f'{k} {row[k]:.3f} s' for k in ('fwd_s', 'fwd_bwd_s')
                       if k in row)
      print(f"{name:<15} {impl:<5} {times} {row.get('error', '')}",
            flush=True)
  path = common.write_results('model_speed',
                              dict(device=common.device_info(), rows=rows))
  print('wrote', path)


if __name__ == '__main__':
  app.run(main)
