"""Seconds per fine-tuned task, compiles and XLA FLOPs per method and device count.

  python -m benchmarks.throughput --models=mcunet-5fps --tasks=8
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m \
      benchmarks.throughput --devices=1,2,4 --tasks=8
  python -m benchmarks.throughput --tasks=0 --variable_episodes=600

For each backbone, method and device count N this runs --tasks real 5-way
5-shot Omniglot test tasks (--steps fine-tune steps) as the evaluation runs
them: chunks of N x --tasks_per_device tasks through
`train.methods.run_methods`, the tasks of a chunk spread over a mesh of N
devices (`train.task_batch`; tasks whose plans agree vmapped on a device,
the frozen prefix once per task, all steps in one compiled `lax.scan`). It
records:
  seconds_per_task    median wall seconds per task over chunks 2..n
                      (TinyTrain's Fisher selection included), steady state;
  warm_seconds_per_task  the same over the chunks 2..n that compiled nothing
                      (None if all did): TinyTrain compiles a program per new
                      plan, and where a compile costs 100 tasks (a GPU) the
                      median above can be a compile;
  compiling_chunks    chunks 2..n that compiled;
  first_task_seconds  the first chunk, mostly compiling;
  compiles            XLA backend compiles over all tasks (jax.monitoring);
  xla_flops_per_task  XLA's FLOPs of the task's fine-tuning: steps x the
                      compiled step + the cached prefix (mask methods; None
                      for None and the module methods);
  start_block         first block each step runs (0 = the whole network);
  selection_seconds   TinyTrain: median seconds of the selection pass alone.
With --variable_episodes=N it also counts, per method, the compiles of an
evaluation of N Meta-Dataset variable-way variable-shot Omniglot episodes
(padded as the evaluation pads them: `data.episode_padding`), at
--variable_resolution with 2 steps: the
count is bounded by the bucket shapes and plans, not by N.
Prints tables and merges rows into --out (benchmarks/results/throughput.json),
keyed by (model, method, devices, resolution, tasks_per_device).
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
from tinytrain_jax import devices
from tinytrain_jax import mask_partition
from tinytrain_jax import models
from tinytrain_jax import progress
from tinytrain_jax.configs import cli
from tinytrain_jax.cost import xla_check
from tinytrain_jax.models import protonet
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import methods
from tinytrain_jax.train import task_batch

_MODELS = flags.DEFINE_list('models',
                            ['mcunet-5fps', 'mbv2-w0.35', 'proxyless-w0.3'],
                            'Backbones.')
_METHODS = flags.DEFINE_list(
    'methods', ['none', 'lastlayer', 'sparseupdate', 'tinytrain', 'fulltrain'],
    'Methods (train.methods names).')
_RES = flags.DEFINE_integer('resolution', 128, 'Input resolution.')
_TASKS = flags.DEFINE_integer(
    'tasks', 8, 'Tasks per (model, method, devices), >= 2 x the largest '
    '--devices; 0 = only the variable-episode compile count.')
_DEVICES = flags.DEFINE_list(
    'devices', ['1'], 'Device counts to run at (tasks spread over a mesh of '
    'the first N devices; on a CPU host simulate them with XLA_FLAGS='
    '--xla_force_host_platform_device_count=4).')
_VAR_EPISODES = flags.DEFINE_integer(
    'variable_episodes', 0, 'Also count the compiles of an evaluation of this '
    'many Meta-Dataset variable-way variable-shot episodes per method (0 = '
    'skip).')
_VAR_RES = flags.DEFINE_integer(
    'variable_resolution', 32, 'Resolution of the variable-episode compile '
    'count (counts do not depend on it).')
_STEPS = flags.DEFINE_integer('steps', 40, 'Fine-tune steps per task.')
_PER_DEVICE = flags.DEFINE_integer(
    'tasks_per_device', 1, 'Tasks per device in one chunk (as '
    'experiments.evaluate --tasks_per_device): on an accelerator several '
    'vmapped tasks fill what one small task leaves idle.')
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


def _steady(times, sizes, compiled=None):
  """Median seconds per task over chunks 2..n (chunk 1 compiles); with
  `compiled` (compiles per chunk), over those of them that compiled nothing
  (None if none)."""
  per = [t / n for i, (t, n) in enumerate(zip(times, sizes))
         if i and (compiled is None or not compiled[i])]
  return statistics.median(per) if per else None


def _run_chunks(method, spec, params, head, eps, cfg, mesh, chunk_size,
                select_times, counter):
  """Runs `eps` in chunks of `chunk_size` tasks; (wall s per chunk, sizes,
  compiles per chunk)."""
  times, sizes, compiled = [], [], []
  for c0 in range(0, len(eps), chunk_size):
    chunk = eps[c0:c0 + chunk_size]
    before = counter.count
    t = time.perf_counter()
    if method == 'tinytrain' and select_times is not None:
      for ep in chunk:  # the selection pass alone (Fisher + criterion)
        t1 = time.perf_counter()
        methods.method_mask(method, spec, params, ep, head)
        select_times.append(time.perf_counter() - t1)
      t = time.perf_counter()
    methods.run_methods(method, spec, params, head, chunk, cfg,
                        tasks=list(range(c0, c0 + len(chunk))), mesh=mesh)
    times.append(time.perf_counter() - t)
    sizes.append(len(chunk))
    compiled.append(counter.count - before)
  return times, sizes, compiled


def _variable_compiles(name, counter, rows, write):
  """Compiles of a --variable_episodes Meta-Dataset evaluation per method;
  `write()` saves the rows after each method (nothing finished is lost)."""
  res, steps = _VAR_RES.value, 2  # compile counts depend on neither
  spec, params = models.load_pretrained(name, res, MIX[name])
  head = protonet.init_head()
  src = data.get_source('omniglot', 'test')
  cfg = ft.FinetuneConfig(steps=steps, lr=1e-3)
  sampler = data.SamplerConfig(mode='variable')
  # The evaluation's padding and order (grouped by bucket shape; protocol.py).
  pad = data.episode_padding(sampler)
  specs = sorted(data.sample_episodes(src, sampler, 0, _VAR_EPISODES.value),
                 key=lambda es: data.bucket_shape(es, **pad))
  eps = [data.make_episode(src, es, res, **pad) for es in specs]
  shapes = len({(e.support_x.shape, e.query_x.shape, e.way_mask.shape)
                for e in eps})
  mesh = devices.make_mesh(1)
  for method in _METHODS.value:
    before, programs = counter.count, task_batch.programs_compiled()
    t = time.perf_counter()
    bar = progress.Progress(len(eps), f'{name} {method} variable', unit='task')
    for i, ep in enumerate(eps):
      methods.run_methods(method, spec, params, head, [ep], cfg, tasks=[i],
                          mesh=mesh)
      bar.update()
    bar.close()
    row = {
        'model': spec.name + ('+mix' if spec.feature_mix else ''),
        'method': method,
        'episodes': len(eps),
        'bucket_shapes': shapes,
        'resolution': res,
        'compiles': counter.count - before,
        'finetune_programs': task_batch.programs_compiled() - programs,
        'seconds': time.perf_counter() - t
    }
    key = lambda r: (r['model'], r['method'], r['episodes'])
    rows[:] = [r for r in rows if key(r) != key(row)] + [row]
    write()
    print(f"variable | {row['model']} | {method} | {len(eps)} episodes, "
          f"{shapes} bucket shapes | {row['compiles']} compiles "
          f"({row['finetune_programs']} fine-tune programs)", flush=True)


def _write(path, rows, variable):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(
      json.dumps(
          {
              'command': 'python -m benchmarks.throughput',
              **common.device_info(), 'units': {
                  'seconds_per_task': 'median wall s per task over chunks '
                                      '2..n (a chunk = tasks_per_device '
                                      'tasks per device)',
                  'warm_seconds_per_task': 'the same over the chunks 2..n '
                                           'that compiled nothing',
                  'xla_flops_per_task': 'XLA FLOPs, steps x step + prefix',
                  'selection_seconds': 'median wall s of TinyTrain\'s '
                                       'selection pass (Fisher + criterion)'
              },
              'rows': rows,
              'variable_compiles': variable
          }, indent=1))


def main(argv):
  del argv
  dev_counts = [int(d) for d in _DEVICES.value]
  if not dev_counts or min(dev_counts) < 1:
    raise ValueError(f'--devices={",".join(_DEVICES.value)}: give device '
                     'counts >= 1, e.g. --devices=1,2,4')
  for d in dev_counts:
    devices.device_list(d)  # one line when more than visible
  if _PER_DEVICE.value < 1:
    raise ValueError(f'--tasks_per_device={_PER_DEVICE.value} must be >= 1')
  per = _PER_DEVICE.value
  if _TASKS.value < 2 * max(dev_counts) * per and not (_TASKS.value == 0 and
                                                       _VAR_EPISODES.value):
    raise ValueError(f'--tasks={_TASKS.value} must be >= 2 x the largest '
                     f'--devices ({max(dev_counts)}) x --tasks_per_device '
                     f'({per}): the first chunk compiles; use e.g. '
                     f'--tasks={8 * per} (or --tasks=0 with '
                     '--variable_episodes)')
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
  old = json.loads(path.read_text()) if path.exists() else {}
  rows, variable = old.get('rows', []), old.get('variable_compiles', [])
  print('| model | method | devices | s/task | warm s/task | first chunk s | '
        'compiles | GFLOP/task |')
  for name in _MODELS.value:
    if _VAR_EPISODES.value:
      _variable_compiles(name, counter, variable,
                         lambda: _write(path, rows, variable))
    if not _TASKS.value:
      continue
    spec, params = models.load_pretrained(name, _RES.value, MIX[name])
    eps = [
        data.make_episode(src, data.sample_episode(src, sampler, 0, i),
                          resolution=_RES.value, buckets=None, way_buckets=None)
        for i in range(_TASKS.value)
    ]
    for method in _METHODS.value:
      flops = start = None
      if methods.get_method(method).mask_fn is not None:
        mask = methods.method_mask(method, spec, params, eps[0], head)
        got = task_flops(spec, params, head, eps[0], mask, cfg)
        if got is not None:
          flops, start = got
      for n_dev in dev_counts:
        before, sel = counter.count, []
        times, sizes, compiled = _run_chunks(method, spec, params, head, eps,
                                             cfg, devices.make_mesh(n_dev),
                                             n_dev * per, sel, counter)
        row = {
            'model': spec.name + ('+mix' if spec.feature_mix else ''),
            'method': method,
            'devices': n_dev,
            'resolution': _RES.value,
            'steps': _STEPS.value,
            'tasks': _TASKS.value,
            'tasks_per_device': per,
            'seconds_per_task': _steady(times, sizes),
            'warm_seconds_per_task': _steady(times, sizes, compiled),
            'compiling_chunks': sum(1 for c in compiled[1:] if c),
            'first_task_seconds': times[0],
            'compiles': counter.count - before,
            'xla_flops_per_task': flops,
            'start_block': start,
            'selection_seconds': (statistics.median(sel[1:])
                                  if len(sel) > 1 else None)
        }
        key = lambda r: (r['model'], r['method'], r['devices'], r[
            'resolution'], r.get('tasks_per_device', 1))
        rows = [r for r in rows if key(r) != key(row)] + [row]
        gf = f'{flops / 1e9:.2f}' if flops else '-'
        warm = row['warm_seconds_per_task']
        warm = '-' if warm is None else f'{warm:.2f}'
        print(
            f"| {row['model']} | {method} | {n_dev} | "
            f"{row['seconds_per_task']:.2f} | {warm} | "
            f"{row['first_task_seconds']:.1f} | {row['compiles']} | {gf} |",
            flush=True)
        _write(path, rows, variable)


if __name__ == '__main__':
  cli.run(main)
