"""Meta-training over several devices: a step's episodes split over a mesh
give the numbers of one device, E=1 is today's step, and checkpoints move
between device counts.

The device count is fixed when jax starts, so the 4-device checks run in one
subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4; it prints
JSON and the assertions are made here.
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

from absl.testing import absltest
import numpy as np
import pytest

from tinytrain_jax.train import meta_train as mt

_ROOT = pathlib.Path(__file__).resolve().parents[2]

_CHILD = r'''
import dataclasses, json, tempfile
import jax
import jax.numpy as jnp
import numpy as np
from tinytrain_jax import data
from tinytrain_jax.data.preprocess import augment_jax
from tinytrain_jax.train import finetune as finetune_lib
from tinytrain_jax.train import meta_train as mt

# Natural images: on Omniglot's flat backgrounds a 1-ulp change in step 1
# moves step 3's momentum by ~1e-2 (a recompile at another XLA optimisation
# level does it on one device), so no device-count check could hold there.
src = data.get_source('mini-imagenet', 'valid')
cfg = mt.MetaTrainConfig(resolution=32, ways=5, shots=1, queries=2, steps=3,
                         lr=1e-3, warmup_steps=1, checkpoint_every=1,
                         augment=True, log_every=1, episodes_per_step=4)


def run(c, wd=None, **kw):
  return mt.run_meta_training(c, wd or tempfile.mkdtemp(), progress=False,
                              source=src, **kw)


def leaves(s):
  return [np.asarray(x) for x in jax.tree.leaves(s)]


def max_diff(a, b):
  # per leaf, relative to the leaf's scale (the momentum trace is O(1-10),
  # the head's scalar traces ~1e-9, where absolute is what counts)
  return max(float(np.max(np.abs(x - y), initial=0.0)) /
             max(float(np.max(np.abs(x), initial=0.0)), 1.0)
             for x, y in zip(leaves(a), leaves(b)))


def n_devices(s):
  return len(jax.tree.leaves(s.params)[0].sharding.device_set)


out = {'device_count': jax.device_count()}
full4 = run(cfg)  # all 4 visible devices
full1 = run(cfg, num_devices=1)
out['devices_used'] = [n_devices(full4), n_devices(full1)]
out['sharded_vs_one'] = max_diff(full4, full1)
out['update_size'] = max_diff(full1.params, mt.init_state(cfg).params)

wd = tempfile.mkdtemp()  # written on 4 devices, resumed on 1
out['stopped_at'] = int(run(cfg, wd, stop_at=2).step)
resumed = run(cfg, wd, num_devices=1)
out['resume_4_to_1'] = [int(resumed.step), n_devices(resumed),
                        max_diff(resumed, full4)]
wd = tempfile.mkdtemp()  # and the other way round
run(cfg, wd, stop_at=2, num_devices=1)
resumed = run(cfg, wd)
out['resume_1_to_4'] = [int(resumed.step), n_devices(resumed),
                        max_diff(resumed, full4)]


def old_step(spec, hp, state, batch, lr):  # the one-episode step before E
  if hp.augment:
    k = jax.random.fold_in(state.key, state.step)
    ks, kq = jax.random.split(k)
    batch = dict(batch, support_x=augment_jax(batch['support_x'], ks),
                 query_x=augment_jax(batch['query_x'], kq))

  def f(tr):
    return finetune_lib.episode_loss(spec, tr['params'], tr['head'], batch)

  tr = {'params': state.params, 'head': state.head}
  (loss, acc), grads = jax.value_and_grad(f, has_aux=True)(tr)
  updates, opt_state = mt.optimizer(hp).update(grads, state.opt_state, tr)
  tr = jax.tree.map(lambda p, u: p - lr * u, tr, updates)
  return mt.TrainState(tr['params'], tr['head'], opt_state, state.step + 1,
                       state.key)


c1 = dataclasses.replace(cfg, episodes_per_step=1)
new = run(c1)
spec, hp, sched = mt.build_spec(c1), mt.step_hparams(c1), mt.schedule(c1)
ref = mt.init_state(c1)
step = jax.jit(old_step, static_argnums=(0, 1))
for i in range(c1.steps):
  ref = step(spec, hp, ref, mt.make_batch(src, c1, i),
             jnp.asarray(sched(i), jnp.float32))
out['e1_devices'] = n_devices(new)
out['e1_bitwise'] = all(
    np.array_equal(x, y) for x, y in zip(leaves(new), leaves(ref)))

try:
  run(cfg, num_devices=5)
except ValueError as e:
  out['too_many_devices'] = str(e)
print('RESULT ' + json.dumps(out))
'''


def _env(n_devices):
  flags = os.environ.get('XLA_FLAGS', '')
  return dict(
      os.environ, JAX_PLATFORMS='cpu',
      XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count={n_devices}'
      .strip(), PYTHONPATH=os.pathsep.join(
          p for p in (str(_ROOT), os.environ.get('PYTHONPATH', '')) if p))


@functools.lru_cache(None)
def _child_results():
  proc = subprocess.run([sys.executable, '-c', _CHILD], env=_env(4),
                        cwd=_ROOT, capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode or not lines:
    raise AssertionError(f'child failed ({proc.returncode}):\n'
                         f'{proc.stderr[-4000:]}')
  return json.loads(lines[-1][len('RESULT '):])


# The state after 3 steps on one device and on four differs only by the order
# of the float sums (the all-reduce of the episode gradients): measured
# <= 5e-6 of each leaf's scale, at XLA optimisation levels 0 and 3 alike. A
# wrong episode or a missing reduction moves the momentum by O(1) of its
# scale and the params by ~1e-3 or more.
_TOL = 1e-4


class ShardedMetaTrainTest(absltest.TestCase):

  def test_four_devices_equal_one(self):
    r = _child_results()
    self.assertEqual(r['device_count'], 4)
    self.assertEqual(r['devices_used'], [4, 1])
    self.assertLess(r['sharded_vs_one'], _TOL)
    self.assertGreater(r['update_size'], 10 * _TOL)

  def test_checkpoint_resumes_on_another_device_count(self):
    r = _child_results()
    self.assertEqual(r['stopped_at'], 2)
    for key in ('resume_4_to_1', 'resume_1_to_4'):
      step, used, diff = r[key]
      self.assertEqual(step, 3, key)
      self.assertEqual(used, 1 if key == 'resume_4_to_1' else 4, key)
      self.assertLess(diff, _TOL, key)

  def test_one_episode_per_step_is_todays_step(self):
    r = _child_results()
    self.assertEqual(r['e1_devices'], 1)  # E=1 runs on one of the 4
    self.assertTrue(r['e1_bitwise'])

  def test_too_many_devices_is_one_line(self):
    self.assertRegex(
        _child_results()['too_many_devices'],
        r'^--devices=5 but only 4 cpu device\(s\) are visible; ask for fewer'
        r'[^\n]*$')


class EpisodesPerStepConfigTest(absltest.TestCase):

  def test_validation(self):
    with self.assertRaisesRegex(
        ValueError, r'^MetaTrainConfig\.episodes_per_step must be an int >= '
        r'1, got 0; set --config\.episodes_per_step$'):
      mt.MetaTrainConfig(episodes_per_step=0)

  def test_default_leaves_json_and_cache_key_unchanged(self):
    cfg = mt.MetaTrainConfig()
    self.assertNotIn('episodes_per_step', json.loads(cfg.to_json()))
    cfg4 = dataclasses.replace(cfg, episodes_per_step=4)
    self.assertEqual(json.loads(cfg4.to_json())['episodes_per_step'], 4)
    # A stored config without the field was written with E=1.
    old = json.loads(cfg.to_json())
    self.assertEqual(mt.MetaTrainConfig(**old), cfg)
    mt.check_resumable(old, cfg, 'wd')
    with self.assertRaisesRegex(
        ValueError, r'written with episodes_per_step=1, this run has '
        r'episodes_per_step=4; use another workdir'):
      mt.check_resumable(old, cfg4, 'wd')
    with self.assertRaisesRegex(ValueError, 'episodes_per_step=4, this run '
                                'has episodes_per_step=1'):
      mt.check_resumable(json.loads(cfg4.to_json()), cfg, 'wd')


class LauncherFlagsTest(absltest.TestCase):

  def test_bad_device_flags_are_one_line(self):
    wd = tempfile.mkdtemp()
    for launcher, config, flag, regex in (
        ('meta_train', 'meta_train.py:quick', '--devices=9',
         r'^error: --devices=9 but only 1 cpu device\(s\) are visible'),
        ('evaluate', 'default.py:quick', '--num_processes=2',
         r'^error: --num_processes > 1 needs --coordinator_address=HOST:PORT')):
      proc = subprocess.run([
          sys.executable, '-m', f'experiments.{launcher}',
          f'--config=tinytrain_jax/configs/{config}', f'--workdir={wd}/x',
          flag
      ], env=_env(1), cwd=_ROOT, capture_output=True, text=True, check=False)
      self.assertEqual(proc.returncode, 1, proc.stderr)
      self.assertRegex(proc.stderr.strip(), regex + r'[^\n]*$')
      self.assertFalse(os.path.exists(f'{wd}/x'))


_PROCESS = r'''
import sys
import jax
import numpy as np
from tinytrain_jax import data, devices
from tinytrain_jax.train import meta_train as mt
port, pid, wd = sys.argv[1:]
if pid != 'single':
  devices.initialize(f'localhost:{port}', 2, int(pid))
# Natural images, as in _CHILD (why: its comment).
src = data.get_source('mini-imagenet', 'valid')
cfg = mt.MetaTrainConfig(resolution=32, ways=5, shots=1, queries=2, steps=3,
                         lr=1e-3, warmup_steps=1, checkpoint_every=1,
                         augment=True, log_every=1, episodes_per_step=4)
if pid != 'single':  # stopped and resumed, as a preempted job would be
  mt.run_meta_training(cfg, wd, progress=False, source=src, stop_at=2)
st = mt.run_meta_training(cfg, wd, progress=False, source=src)
np.savez(f'{wd}/final_{pid}.npz', *jax.tree.leaves(mt.host_state(st)))
'''


@pytest.mark.slow
class MultiProcessTest(absltest.TestCase):

  def test_two_processes_equal_one(self):
    # 2 processes x 2 CPU devices (jax.distributed, gloo) vs 1 x 4 devices.
    with socket.socket() as sock:
      sock.bind(('localhost', 0))
      port = sock.getsockname()[1]
    wd, ref = tempfile.mkdtemp(), tempfile.mkdtemp()
    procs = [
        subprocess.Popen(
            [sys.executable, '-c', _PROCESS, str(port), str(i), wd],
            env=_env(2), cwd=_ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True) for i in range(2)
    ]
    subprocess.run([sys.executable, '-c', _PROCESS, '0', 'single', ref],
                   env=_env(4), cwd=_ROOT, check=True, capture_output=True)
    for p in procs:
      _, err = p.communicate(timeout=600)
      self.assertEqual(p.returncode, 0, err[-3000:])
    a, b, c = (np.load(f) for f in (f'{wd}/final_0.npz', f'{wd}/final_1.npz',
                                    f'{ref}/final_single.npz'))
    for k in c.files:
      np.testing.assert_array_equal(a[k], b[k])
      np.testing.assert_allclose(a[k], c[k], rtol=0, atol=_TOL)


if __name__ == '__main__':
  absltest.main()
