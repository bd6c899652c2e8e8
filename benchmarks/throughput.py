"""Seconds per fine-tuned task, compiles and XLA FLOPs per method (one device).

  python -m benchmarks.throughput --models=mcunet-5fps --tasks=6

For each backbone and method this runs `train.methods.run_method` on --tasks
real 5-way 5-shot Omniglot test tasks (--steps fine-tune steps, as the
evaluation runs them: the frozen prefix computed once per task and all steps
in one compiled `lax.scan`, `train.finetune`) and records:
  seconds_per_task    median wall seconds of tasks 2..n (TinyTrain's Fisher
                      selection included), the steady state;
  first_task_seconds  task 1, mostly compiling;
  compiles            XLA backend compiles over all tasks (jax.monitoring);
  xla_flops_per_task  XLA's FLOPs of the task's fine-tuning: steps x the
                      compiled step + the cached prefix (mask methods; None
                      for None and the module methods);
  start_block         first block each step runs (0 = the whole network).
Prints a table and merges rows into --out (benchmarks/results/throughput.json),
keyed by (model, method, devices, resolution). Several devices (tasks spread over a
mesh) are not built yet: `devices` is always 1 here.
"""
import functools
import json
import pathlib
import statistics
import time

from absl import flags
import jax
import jax.numpy as jnp

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
    'methods', ['none', 'lastlayer', 'sparseupdate', 'tinytrain', 'fulltrain'],
    'Methods (train.methods names).')
_RES = flags.DEFINE_integer('resolution', 128, 'Input resolution.')
_TASKS = flags.DEFINE_integer('tasks', 6, 'Tasks per (model, method), >= 2.')
_STEPS = flags.DEFINE_integer('steps', 40, 'Fine-tune steps per task.')
_OUT = flags.DEFINE_string('out', str(common.RESULTS_DIR / 'throughput.json'),
                           'Results JSON (rows merged into an existing file).')

MIX = {'mcunet-5fps': False, 'mbv2-w0.35': True, 'proxyless-w0.3': True}


class CompileCounter:
  """Counts XLA backend compiles (jax.monitoring duration events)."""

  def __init__(self):
    self.count = 0
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event, duration, **kwargs):
    del duration, kwargs
    if event.endswith('backend_compile_duration'):
      self.count += 1


def task_flops(spec, params, head, episode, mask, cfg):
  """(XLA FLOPs of one task's fine-tuning, start_block), None without a mask.

  steps x the compiled step + the prefix run once (XLA's cost analysis counts
  a scan body once, so the loop is not analysed as a whole).
  """
  if mask is None:
    return None
  plan, idx = mask_partition.make_plan(spec, params, mask)
  t = ft.sparse_task(spec, params, plan, idx, ft.episode_arrays(spec, episode),
                     cfg)
  prefix = 0.0
  if t.start:
    prefix = xla_check.xla_costs(
        lambda x: models.prefix(spec, params, x, t.start),
        t.batch['support_x'])['flops']
  step = functools.partial(ft.sparse_step_fn, spec, plan, cfg,
                           start_block=t.start)
  got = xla_check.xla_costs(step, t.trainable, t.opt_state, params, head,
                            t.indices, t.batch, jnp.int32(0))
  return cfg.steps * got['flops'] + prefix, t.start


def main(argv):
  del argv
  if _TASKS.value < 2:
    raise ValueError(f'--tasks={_TASKS.value} must be >= 2 (task 1 is the '
                     'compile); use e.g. --tasks=6')
  if _STEPS.value < 1:
    raise ValueError(f'--steps={_STEPS.value} must be >= 1')
  cli.check_resolution(_RES.value)
  unknown = sorted(set(_MODELS.value) - set(MIX))
  if unknown:
    raise ValueError(f'--models: unknown {unknown}; accepted: '
                     f'{", ".join(MIX)}')
  for m in _METHODS.value:
    methods.get_method(m)  # one line naming the accepted methods
  counter = CompileCounter()
  src = data.get_source('omniglot', 'test')
  sampler = data.SamplerConfig(mode='fixed', ways=5, shots=5, queries=5)
  cfg = ft.FinetuneConfig(steps=_STEPS.value, lr=1e-3)
  head = protonet.init_head()
  path = pathlib.Path(_OUT.value)
  rows = json.loads(path.read_text())['rows'] if path.exists() else []
  print('| model | method | s/task | first task s | compiles | GFLOP/task |')
  for name in _MODELS.value:
    spec, params = models.load_pretrained(name, _RES.value, MIX[name])
    eps = [
        data.make_episode(src, data.sample_episode(src, sampler, 0, i),
                          resolution=_RES.value, buckets=None, way_buckets=None)
        for i in range(_TASKS.value)
    ]
    for method in _METHODS.value:
      before, times = counter.count, []
      for i, ep in enumerate(eps):
        t = time.perf_counter()
        methods.run_method(method, spec, params, head, ep, cfg, task=i)
        times.append(time.perf_counter() - t)
      compiles = counter.count - before
      flops = start = None
      if methods.get_method(method).mask_fn is not None:
        mask = methods.method_mask(method, spec, params, eps[0], head)
        got = task_flops(spec, params, head, eps[0], mask, cfg)
        if got is not None:
          flops, start = got
      row = {
          'model': spec.name + ('+mix' if spec.feature_mix else ''),
          'method': method,
          'devices': 1,
          'resolution': _RES.value,
          'steps': _STEPS.value,
          'tasks': _TASKS.value,
          'seconds_per_task': statistics.median(times[1:]),
          'first_task_seconds': times[0],
          'compiles': compiles,
          'xla_flops_per_task': flops,
          'start_block': start
      }
      key = lambda r: (r['model'], r['method'], r['devices'], r['resolution'])
      rows = [r for r in rows if key(r) != key(row)] + [row]
      gf = f'{flops / 1e9:.2f}' if flops else '-'
      print(
          f"| {row['model']} | {method} | {row['seconds_per_task']:.2f} | "
          f"{row['first_task_seconds']:.1f} | {compiles} | {gf} |", flush=True)
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(
          json.dumps(
              {
                  'command': 'python -m benchmarks.throughput',
                  **common.device_info(), 'units': {
                      'seconds_per_task': 'median wall s, tasks 2..n',
                      'xla_flops_per_task': 'XLA FLOPs, steps x step + prefix'
                  },
                  'rows': rows
              }, indent=1))


if __name__ == '__main__':
  cli.run(main)
