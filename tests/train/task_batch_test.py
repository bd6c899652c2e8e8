"""Tasks run together (vmapped where plans agree) and over devices.

The 4-device checks run in a subprocess: the number of simulated CPU
devices is fixed when jax starts (XLA_FLAGS).
"""
import dataclasses
import functools
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import textwrap
from unittest import mock

from absl.testing import absltest
import numpy as np
import pytest

from tinytrain_jax import data
from tinytrain_jax import devices
from tinytrain_jax import models
from tinytrain_jax.models import protonet
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import methods
from tinytrain_jax.train import task_batch

ROOT = pathlib.Path(__file__).resolve().parents[2]
R = 32
CFG = ft.FinetuneConfig(steps=2, lr=1e-2)


@functools.lru_cache(None)
def _model():
  return models.load_pretrained('mcunet-5fps', R)


@functools.lru_cache(None)
def _short_model(blocks=2):
  """mcunet-5fps cut after `blocks` blocks (stem, expand, depthwise, stride 2)
  for checks of batching, not of the network: a third of the compile time."""
  spec, params = _model()
  keep = {f'blocks_{b}' for b in range(blocks)}
  return (dataclasses.replace(spec, blocks=spec.blocks[:blocks]),
          {k: v for k, v in params.items()
           if not k.startswith('blocks_') or k in keep})


def _episodes(n, sampler=None, buckets=None):
  src = data.get_source('omniglot', 'test')
  sampler = sampler or data.SamplerConfig(mode='fixed', ways=3, shots=2,
                                          queries=2)
  return [
      data.make_episode(src, es, R, buckets=buckets,
                        way_buckets=buckets and data.DEFAULT_WAY_BUCKETS)
      for es in data.sample_episodes(src, sampler, 0, n)
  ]


class TaskBatchTest(absltest.TestCase):

  def test_batched_equals_one_task_at_a_time(self):
    spec, params = _model()
    head = protonet.init_head()
    eps = _episodes(3)
    for m in ('none', 'lastlayer', 'tinytrain'):
      batched = methods.run_methods(m, spec, params, head, eps, CFG,
                                    tasks=[5, 6, 7])
      for i, (ep, b) in enumerate(zip(eps, batched)):
        one = methods.run_method(m, spec, params, head, ep, CFG, task=5 + i)
        self.assertEqual(b['accuracy'], one['accuracy'], m)
        np.testing.assert_allclose(b['query_loss'], one['query_loss'],
                                   rtol=1e-5, err_msg=m)
        self.assertEqual(b['mask'], one['mask'])
        self.assertEqual(b['bwd_macs'], one['bwd_macs'])
        if one['final_support_loss'] is not None:
          np.testing.assert_allclose(b['final_support_loss'],
                                     one['final_support_loss'], rtol=1e-5)

  def test_the_fisher_passs_block_input_replaces_the_support_prefix(self):
    spec, params = _model()
    head = protonet.init_head()
    eps = _episodes(2)
    selected = [methods.method_selection('tinytrain', spec, params, ep, head)
                for ep in eps]
    masks = [m for m, _ in selected]
    inputs = [b for _, b in selected]
    batches = [ft.episode_arrays(spec, ep) for ep in eps]
    for m, b in zip(masks, inputs):
      start = ft.start_block(spec, task_batch._plan_of(spec, params, m)[0])
      self.assertTrue(0 < b.block <= start, (b.block, start))
    want = task_batch.finetune_tasks(spec, params, head, batches, masks, CFG,
                                     [0, 1])
    # Support images zeroed: only the block inputs can give the same numbers.
    blank = [dict(b, support_x=np.zeros_like(b['support_x'])) for b in batches]
    got = task_batch.finetune_tasks(spec, params, head, blank, masks, CFG,
                                    [0, 1], support_inputs=inputs)
    for g, w in zip(got, want):
      self.assertEqual(g.accuracy, w.accuracy)
      np.testing.assert_allclose(g.loss_curve, w.loss_curve, rtol=1e-5)
      np.testing.assert_allclose(g.query_loss, w.query_loss, rtol=1e-5)
    with self.assertRaisesRegex(ValueError, '1 support inputs'):
      task_batch.finetune_tasks(spec, params, head, batches, masks, CFG,
                                [0, 1], support_inputs=inputs[:1])

  def test_module_methods_batched_equal_one_task_at_a_time(self):
    spec, params = _short_model()
    head = protonet.init_head()
    eps = _episodes(2)
    # Augmentation on: each task's key must follow its task index.
    cfg = ft.FinetuneConfig(steps=2, lr=1e-2, augment=True)
    # Transductive trains every weight: the batched convs' reassociated sums
    # (~1e-7) grow through two full-network steps to ~5e-5 of the loss.
    for m, rtol in (('tinytl', 1e-5), ('adapterdrop_50', 1e-5),
                    ('transductive', 2e-4)):
      batched = methods.run_methods(m, spec, params, head, eps, cfg,
                                    tasks=[5, 6])
      for i, (ep, b) in enumerate(zip(eps, batched)):
        one = methods.run_method(m, spec, params, head, ep, cfg, task=5 + i)
        self.assertEqual(b['accuracy'], one['accuracy'], m)
        np.testing.assert_allclose(b['query_loss'], one['query_loss'],
                                   rtol=rtol, err_msg=m)
        np.testing.assert_allclose(b['final_support_loss'],
                                   one['final_support_loss'], rtol=rtol,
                                   err_msg=m)
        self.assertEqual((b['mask'], b['bwd_macs'], b['bwd_bytes']),
                         (one['mask'], one['bwd_macs'], one['bwd_bytes']))
      self.assertNotEqual(batched[0]['final_support_loss'],
                          batched[1]['final_support_loss'])

  def test_static_plan_is_one_program_for_all_tasks(self):
    spec, params = _model()
    head = protonet.init_head()
    eps = _episodes(3)
    mask = methods.method_mask('lastlayer', spec, params, None)
    cfg = ft.FinetuneConfig(steps=1, lr=1e-3)  # a config no other test runs
    before = task_batch.programs_compiled()
    for tasks in ([0, 1, 2], [3, 4, 5]):
      outs = task_batch.finetune_tasks(
          spec, params, head, [ft.episode_arrays(spec, e) for e in eps],
          [mask] * 3, cfg, tasks, devices.make_mesh(1))
      self.assertLen(outs, 3)
      self.assertTrue(all(o.loss_curve.shape == (1,) for o in outs))
    self.assertEqual(task_batch.programs_compiled() - before, 1)

  def test_padded_variable_episodes_give_the_exact_results(self):
    spec, params = _model()
    head = protonet.init_head()
    sampler = data.SamplerConfig(mode='variable', max_support_set_size=30,
                                 max_num_query=2, max_ways_upper_bound=7)
    exact = _episodes(1, sampler)[0]
    padded = _episodes(1, sampler, data.DEFAULT_BUCKETS)[0]
    self.assertGreater(padded.support_x.shape[0], exact.support_x.shape[0])
    for m in ('none', 'tinytrain'):
      a = methods.run_methods(m, spec, params, head, [exact], CFG)[0]
      b = methods.run_methods(m, spec, params, head, [padded], CFG)[0]
      self.assertEqual(a['accuracy'], b['accuracy'])
      self.assertEqual(a['mask'], b['mask'])
      np.testing.assert_allclose(a['query_loss'], b['query_loss'], rtol=1e-5)

  def test_variable_episodes_compile_once_per_bucket_shape(self):
    """Compiles grow with the bucket shapes, not with the episode count."""
    spec, params = _model()
    head = protonet.init_head()
    sampler = data.SamplerConfig(mode='variable', max_support_set_size=40,
                                 max_num_query=3, max_ways_upper_bound=9)
    eps = _episodes(8, sampler, data.DEFAULT_BUCKETS)
    exact = {(len(e.support_y), int(e.way_mask.sum())) for e in _episodes(
        8, sampler)}
    shapes = {(e.support_x.shape, e.query_x.shape, e.way_mask.shape)
              for e in eps}
    self.assertLess(len(shapes), len(exact))  # padding merges shapes
    cfg = ft.FinetuneConfig(steps=1, lr=2e-3)  # a config no other test runs
    before = task_batch.programs_compiled()
    for i, ep in enumerate(eps):
      methods.run_methods('lastlayer', spec, params, head, [ep], cfg,
                          tasks=[i], mesh=devices.make_mesh(1))
    self.assertEqual(task_batch.programs_compiled() - before, len(shapes))

  def test_programs_past_the_limit_are_released_with_equal_results(self):
    spec, params = _model()
    head = protonet.init_head()
    eps = _episodes(2)
    cfg = ft.FinetuneConfig(steps=1, lr=3e-3)  # a config no other test runs
    first = methods.run_methods('lastlayer', spec, params, head, eps, cfg)
    self.assertGreaterEqual(task_batch.programs_held(), 1)
    with mock.patch.object(task_batch, 'MAX_PROGRAMS', 0):
      before = task_batch.programs_compiled()
      again = methods.run_methods('lastlayer', spec, params, head, eps, cfg)
      # Released first, so the same program is compiled once more.
      self.assertEqual(task_batch.programs_compiled() - before, 1)
      self.assertEqual(task_batch.programs_held(), 1)
    self.assertEqual([r['accuracy'] for r in first],
                     [r['accuracy'] for r in again])
    self.assertEqual([r['query_loss'] for r in first],
                     [r['query_loss'] for r in again])

  def test_dense_impl_is_refused_in_batches(self):
    spec, params = _model()
    with self.assertRaisesRegex(ValueError, "impl='sparse' only"):
      task_batch.finetune_tasks(spec, params, protonet.init_head(), [], [],
                                ft.FinetuneConfig(impl='dense'), [])


_FOUR_DEVICES = textwrap.dedent('''
    import json, pathlib, sys, tempfile
    import jax
    from tinytrain_jax import devices
    from tinytrain_jax.eval import protocol
    from tests.eval.pipeline_test import tiny_config
    assert jax.device_count() == 4, jax.devices()
    cfg = tiny_config(methods='none,lastlayer,tinytrain')
    out = {}
    for n in (1, 4):
      wd = tempfile.mkdtemp()
      protocol.run_evaluation(cfg, wd, progress=False,
                              mesh=devices.make_mesh(n))
      rows = [json.loads(l) for l in
              (pathlib.Path(wd) / 'episodes.jsonl').read_text().splitlines()]
      out[n] = sorted((r['method'], r['episode'], r['accuracy']) for r in rows)
    print('RESULT', json.dumps(out))
''')


def _env(n_devices):
  flags = os.environ.get('XLA_FLAGS', '')  # conftest's -O0 flag stays
  return dict(
      os.environ,
      XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count={n_devices}',
      JAX_PLATFORMS='cpu',
      PYTHONPATH=f'{ROOT}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')


class FourDevicesTest(absltest.TestCase):

  def test_evaluation_on_four_devices_equals_one(self):
    p = subprocess.run([sys.executable, '-c', _FOUR_DEVICES], cwd=ROOT,
                       env=_env(4), capture_output=True, text=True,
                       timeout=900)
    self.assertEqual(p.returncode, 0, p.stderr[-3000:])
    line = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')][-1]
    out = json.loads(line[len('RESULT '):])
    self.assertNotEmpty(out['1'])
    self.assertEqual(out['1'], out['4'])


_PROCESS = textwrap.dedent('''
    import json, pathlib, sys
    from tinytrain_jax import devices
    from tinytrain_jax.eval import protocol
    from tests.eval.pipeline_test import tiny_config_dict
    from tinytrain_jax.configs import eval_config
    port, pid, wd = sys.argv[1:]
    if pid != 'single':
      devices.initialize(f'localhost:{port}', 2, int(pid))
    d = tiny_config_dict(methods='none,lastlayer,tinytrain')
    d.episodes = 3
    d.meta_train.steps = 0
    rows = protocol.run_evaluation(eval_config.from_config_dict(d), wd,
                                   progress=False)
    print('RESULT', json.dumps(rows))
''')


@pytest.mark.slow
class TwoProcessesTest(absltest.TestCase):

  def test_two_processes_share_the_tasks_and_one_reports(self):
    with socket.socket() as sock:
      sock.bind(('localhost', 0))
      port = sock.getsockname()[1]
    wd, ref = tempfile.mkdtemp(), tempfile.mkdtemp()
    procs = [
        subprocess.Popen([sys.executable, '-c', _PROCESS,
                          str(port), str(i), wd], env=_env(2), cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True) for i in range(2)
    ]
    single = subprocess.run([sys.executable, '-c', _PROCESS, '0', 'single',
                             ref], env=_env(1), cwd=ROOT, capture_output=True,
                            text=True, check=False, timeout=900)
    self.assertEqual(single.returncode, 0, single.stderr[-3000:])
    outs = []
    for p in procs:
      out, err = p.communicate(timeout=900)
      self.assertEqual(p.returncode, 0, err[-3000:])
      outs.append(json.loads(out.split('RESULT ')[-1]))
    want = json.loads(single.stdout.split('RESULT ')[-1])
    self.assertEqual(outs[1], [])  # process 1 logs its share, 0 reports
    self.assertEqual(outs[0], want)
    logs = {
        p.name: [json.loads(l)['episode'] for l in p.read_text().splitlines()]
        for p in pathlib.Path(wd).glob('episodes*.jsonl')
    }
    # Episodes 0, 2 on process 0 and 1 on process 1, for each of 3 methods.
    self.assertEqual(sorted(logs['episodes.jsonl']), [0, 0, 0, 2, 2, 2])
    self.assertEqual(sorted(logs['episodes.p1.jsonl']), [1, 1, 1])


if __name__ == '__main__':
  absltest.main()
