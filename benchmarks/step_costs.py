"""Compiled cost of one fine-tune step per backbone and method (XLA, CPU).

  python -m benchmarks.step_costs --models=mcunet-5fps

For each backbone (mcunet-5fps; mbv2-w0.35 and proxyless-w0.3 with the mix
layer) and method (fulltrain, lastlayer, sparseupdate, tinytrain with the
sparse step, and tinytrain_dense: the same TinyTrain mask through the
dense-masked reference step) this compiles the fine-tune step
(`train.finetune`) at --resolution px with a --support-image support set
(5-way 5-shot = 25 images, random pixels: costs do not depend on content) and
records (the sparse step as `finetune` runs it: the frozen prefix below
the lowest trained block computed once per task, `start_block`) XLA's FLOPs
and temp bytes (`cost.xla_check.xla_costs`), the median
wall-clock seconds per step over --repeats runs after one warm-up, and the
analytic per-sample backward MACs / fp32 bytes (`cost.backward_macs`,
`cost.backward_memory_bytes` at the support batch). TinyTrain's mask comes
from `selection.select` on a real Omniglot test task (default budgets).
Prints a table and writes --out (JSON).
"""
import functools
import json
import pathlib
import statistics
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from tinytrain_jax import data
from tinytrain_jax import mask_partition
from tinytrain_jax import models
from tinytrain_jax.configs import cli
from tinytrain_jax.cost import xla_check
from tinytrain_jax.models import protonet
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import methods

_MODELS = flags.DEFINE_list('models',
                            ['mcunet-5fps', 'mbv2-w0.35', 'proxyless-w0.3'],
                            'Backbones.')
_METHODS = flags.DEFINE_list(
    'methods',
    ['fulltrain', 'lastlayer', 'sparseupdate', 'tinytrain', 'tinytrain_dense'],
    'Methods.')

_RES = flags.DEFINE_integer('resolution', 128, 'Input resolution.')
_SUPPORT = flags.DEFINE_integer('support', 25, 'Support-set images.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per step.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/step_costs.json',
                           'Results JSON (merged with an existing file).')

def _base(name: str) -> str:
  """The train.methods name of a --methods entry ('<name>_dense' = <name>'s
  mask trained through the dense-masked reference step)."""
  return name[:-len('_dense')] if name.endswith('_dense') else name


def _is_mask_method(name: str) -> bool:
  m = methods.METHODS.get(_base(name))
  return m is not None and m.mask_fn is not None


MIX = {'mcunet-5fps': False, 'mbv2-w0.35': True, 'proxyless-w0.3': True}


def _task(spec):
  src = data.get_source('omniglot', 'test')
  es = data.sample_episode(
      src, data.SamplerConfig(mode='fixed', ways=5, shots=5, queries=5), 0, 0)
  return data.make_episode(src, es, resolution=spec.resolution, buckets=None,
                           way_buckets=None)


def _time(fn, args):
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(_REPEATS.value):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def measure(spec, params, head, batch, mask, dense: bool):
  cfg = ft.FinetuneConfig(steps=1, impl='dense' if dense else 'sparse')
  if dense:
    step, tx, full = ft.make_dense_step(spec, cfg, mask, head, donate=False)
    tr = {'params': params, 'head': head}
    args = (tr, tx.init(tr), batch, jnp.int32(0),
            ft.dense_step_mask(spec, full, tr))
    fn = step
  else:
    plan, idx = mask_partition.make_plan(spec, params, mask)
    # The step as `finetune` runs it: the frozen prefix cached once per task.
    t = ft.sparse_task(spec, params, plan, idx, batch, cfg)
    start = t.start
    args = (t.trainable, t.opt_state, params, head, t.indices, t.batch,
            jnp.int32(0))
    fn = jax.jit(
        functools.partial(ft.sparse_step_fn, spec, plan, cfg,
                          start_block=start))
  t0 = time.perf_counter()
  xla = xla_check.xla_costs(fn, *args)
  compile_s = time.perf_counter() - t0
  return {
      'start_block': 0 if dense else start,
      'xla_flops': xla['flops'],
      'temp_bytes': xla['temp_bytes'],
      'compile_s': compile_s,
      'seconds_per_step': _time(fn, args)
  }


def main(argv):
  del argv
  cli.check_resolution(_RES.value)
  for m in _METHODS.value:
    if not _is_mask_method(m):
      raise ValueError(
          f'--methods: {m!r} is not a mask method; accepted: fulltrain, '
          'lastlayer, sparseupdate, tinytrain, ... (train.methods names with '
          'a mask) or <name>_dense; tinytl and adapterdrop_* train modules, '
          'not a mask: time them with benchmarks.throughput')
  out_path = pathlib.Path(_OUT.value)
  rows = json.loads(out_path.read_text())['rows'] if out_path.exists() else []
  head = protonet.init_head()
  for name in _MODELS.value:
    spec, params = models.load_pretrained(name, _RES.value, MIX[name])
    params = jax.tree.map(jnp.asarray, params)
    ep = _task(spec)
    batch = ft.episode_arrays(spec, ep)
    s = _SUPPORT.value
    rng = np.random.default_rng(0)
    batch['support_x'] = jnp.asarray(
        rng.uniform(-1, 1, (s,) + batch['support_x'].shape[1:]), jnp.float32)
    batch['support_y'] = jnp.asarray(np.arange(s) % 5, jnp.int32)
    batch['support_mask'] = jnp.ones((s,), bool)
    for method in _METHODS.value:
      mask = methods.method_mask(_base(method), spec, params, ep, head)
      costs = ft.mask_costs(spec, mask, 1)
      r = measure(spec, params, head, batch, mask, method.endswith('_dense'))
      row = {
          'model': spec.name + ('+mix' if spec.feature_mix else ''),
          'method': method,
          'resolution': _RES.value,
          'support': s,
          'bwd_macs': costs['bwd_macs'],
          'bwd_bytes_per_sample': costs['bwd_bytes'],
          **r, 'layers': costs['layers']
      }
      rows = [
          x for x in rows if (x['model'], x['method'], x['resolution']) !=
          (row['model'], method, _RES.value)
      ] + [row]
      print(
          f"| {row['model']} | {method} | {row['xla_flops'] / 1e9:.2f} | "
          f"{row['temp_bytes'] / 1e6:.1f} | "
          f"{row['seconds_per_step'] * 1e3:.0f} | "
          f"{row['bwd_macs'] / 1e6:.2f} | "
          f"{row['bwd_bytes_per_sample'] / 1e6:.2f} |", flush=True)
      out_path.parent.mkdir(parents=True, exist_ok=True)
      out_path.write_text(
          json.dumps(
              {
                  'command': 'python -m benchmarks.step_costs',
                  **common.device_info(), 'units': {
                      'xla_flops': 'per step (whole support batch)',
                      'temp_bytes': 'XLA temp buffer bytes',
                      'bwd_macs': 'analytic, per sample',
                      'bwd_bytes_per_sample': 'analytic fp32, batch 1'
                  },
                  'rows': rows
              }, indent=1))


if __name__ == '__main__':
  cli.run(main)
