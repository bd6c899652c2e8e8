"""Meta-training loop: learns, resumes bit for bit, is deterministic, fails
loudly."""
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tinytrain_jax import checkpoint
from tinytrain_jax import data
from tinytrain_jax.configs import dataclass_config
from tinytrain_jax.train import meta_train as mt

CFG = mt.MetaTrainConfig(resolution=32, ways=5, shots=1, queries=2, steps=6,
                         lr=1e-3, warmup_steps=2, checkpoint_every=2,
                         augment=True, log_every=2)


@functools.lru_cache(None)
def _source():
  return data.get_source('omniglot', 'train')


def _same(a, b):
  return all(
      np.array_equal(np.asarray(x), np.asarray(y))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class MetaTrainTest(absltest.TestCase):

  def _tmp(self):
    d = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, d, ignore_errors=True)
    return d

  def test_resume_is_bit_identical_and_deterministic(self):
    full = mt.run_meta_training(CFG, self._tmp(), progress=False,
                                source=_source())
    again = mt.run_meta_training(CFG, self._tmp(), progress=False,
                                 source=_source())
    self.assertTrue(_same(full, again))
    wd = self._tmp()
    part = mt.run_meta_training(CFG, wd, progress=False, stop_at=4,
                                source=_source())
    self.assertEqual(int(part.step), 4)
    self.assertEqual(checkpoint.manager(wd).latest_step(), 4)
    resumed = mt.run_meta_training(CFG, wd, progress=False, source=_source())
    self.assertEqual(int(resumed.step), CFG.steps)
    self.assertTrue(_same(full.params, resumed.params))
    self.assertTrue(_same(full, resumed))
    other = mt.run_meta_training(
        dataclasses.replace(CFG, seed=1), self._tmp(), progress=False,
        source=_source())
    self.assertFalse(_same(full.params, other.params))
    # The run is loadable by path.
    spec, params, head = mt.load_backbone(wd)
    self.assertEqual(spec.name, 'mcunet-5fps')
    self.assertTrue(_same(params, full.params))
    self.assertTrue(_same(head, full.head))

  def test_meta_training_lowers_query_loss(self):
    # lr 1e-4, the meta-training lr the validation grid chose. At 1e-3 this
    # 1-shot run raised the loss on seeds 1 and 2 and passed on seed 0 only
    # by luck (a float-level change in the pointwise gradient flipped it);
    # at 1e-4 seeds 0, 1, 2 lower it by 0.12, 0.10, 0.11.
    cfg = dataclasses.replace(CFG, steps=30, lr=1e-4, warmup_steps=0,
                              augment=False, queries=3, checkpoint_every=30)
    spec = mt.build_spec(cfg)
    batches = [mt.make_batch(_source(), cfg, i) for i in range(10)]

    def mean_loss(st):
      return np.mean([
          float(mt.eval_episode(spec, st.params, st.head, b)[0])
          for b in batches
      ])

    before = mean_loss(mt.init_state(cfg))
    st = mt.run_meta_training(cfg, self._tmp(), progress=False,
                              source=_source())
    after = mean_loss(st)
    self.assertLess(after, before - 0.05)

  def test_train_from_block_freezes_the_blocks_below(self):
    cfg = dataclasses.replace(CFG, steps=2, train_from_block=8,
                              checkpoint_every=2, weight_decay=1e-2)
    start = mt.init_state(cfg).params
    st = mt.run_meta_training(cfg, self._tmp(), progress=False,
                              source=_source())
    moved = lambda k: not _same(start[k], st.params[k])
    self.assertFalse(moved('first_conv'))
    self.assertFalse(any(moved(f'blocks_{b}') for b in range(8)))
    self.assertTrue(moved('blocks_8') and moved('blocks_13'))
    # The default is not part of the config's JSON: cache keys of runs made
    # before the field existed stay valid.
    self.assertNotIn('train_from_block', CFG.to_json())
    self.assertIn('"train_from_block": 8', cfg.to_json())
    with self.assertRaisesRegex(ValueError, r'train_from_block must be an int '
                                r'in \[0, 14\] for mcunet-5fps, got 15'):
      dataclasses.replace(CFG, train_from_block=15)

  def test_head_scale_sets_the_start_head_and_keeps_old_keys(self):
    self.assertEqual(float(mt.init_state(CFG).head['scale']), 30.0)
    old = dataclasses.replace(CFG, head_scale=10)
    self.assertEqual(float(mt.init_state(old).head['scale']), 10.0)
    self.assertIsInstance(old.head_scale, float)
    # Runs cached before the field existed (all at scale 10) keep their keys;
    # the default (30) is written out.
    self.assertNotIn('head_scale', old.to_json())
    self.assertIn('"head_scale": 30.0', CFG.to_json())
    # The scale changes the loss, so it changes the run.
    a = mt.run_meta_training(dataclasses.replace(old, steps=2), self._tmp(),
                             progress=False, source=_source())
    b = mt.run_meta_training(dataclasses.replace(CFG, steps=2), self._tmp(),
                             progress=False, source=_source())
    self.assertFalse(_same(a.params, b.params))
    for bad in (0, -1.0, float('inf'), True, 'x'):
      with self.assertRaisesRegex(ValueError, r'^MetaTrainConfig\.head_scale '
                                  r'must be a finite number > 0'):
        dataclasses.replace(CFG, head_scale=bad)

  def test_checkpoint_of_another_model_raises(self):
    wd = self._tmp()
    mngr = checkpoint.manager(wd)
    other = dataclasses.replace(CFG, model='mbv2-w0.35')
    checkpoint.save(mngr, 1, {'x': np.zeros(3)}, other.to_json(), wait=True)
    with self.assertRaisesRegex(ValueError,
                                "model='mbv2-w0.35'.*model='mcunet-5fps'"):
      mt.run_meta_training(CFG, wd, progress=False, source=_source())

  def test_non_finite_step_keeps_last_good_checkpoint(self):
    # Step 4 blows up (simulated: whether a huge lr overflows depends on the
    # compiler), either in its loss or in its update (whose loss, computed
    # before the update, is finite). The run stops there and the checkpoint
    # of step 3 stays the last one, with finite params.
    for kind, what in (('loss', 'loss'), ('update', 'parameters')):
      wd = self._tmp()
      cfg = dataclasses.replace(CFG, steps=6, checkpoint_every=1, augment=False)
      real, calls = mt.meta_train_step, []

      def blow_up(spec, hp, state, *args, kind=kind, calls=calls, real=real):
        calls.append(1)
        poison = lambda s: s._replace(
            params=jax.tree.map(lambda x: x * jnp.inf, s.params))
        if len(calls) == 4 and kind == 'loss':
          state = poison(state)
        state, metrics = real(spec, hp, state, *args)
        if len(calls) == 4 and kind == 'update':
          state = poison(state)
        return state, metrics

      with mock.patch.object(mt, 'meta_train_step', blow_up):
        with self.assertRaisesRegex(
            RuntimeError, rf'{what} became non-finite at step 4 \(lr .*\); '
            r'last good checkpoint at step 3 in .*checkpoints') as cm:
          mt.run_meta_training(cfg, wd, progress=False, source=_source())
      self._assert_last_checkpoint_good(cfg, wd, str(cm.exception))

  def _assert_last_checkpoint_good(self, cfg, wd, message):
    bad, good = map(
        int,
        __import__('re').search(r'step (\d+) .*step (\d+)', message).groups())
    self.assertEqual(good, bad - 1)
    state, step = checkpoint.restore_or_init(
        checkpoint.manager(wd), lambda: mt.init_state(cfg), cfg.to_json())
    self.assertEqual(step, good)
    self.assertTrue(
        all(
            np.isfinite(np.asarray(x)).all()
            for x in jax.tree.leaves(state.params)))

  def test_resume_under_another_config_is_refused(self):
    wd = self._tmp()
    mt.run_meta_training(CFG, wd, progress=False, stop_at=2, source=_source())
    with self.assertRaisesRegex(
        ValueError, r'written with lr=0\.001, this run '
        r'has lr=0\.01; use another workdir'):
      mt.run_meta_training(
          dataclasses.replace(CFG, lr=1e-2), wd, progress=False,
          source=_source())
    # Bookkeeping fields may change on resume.
    mt.run_meta_training(
        dataclasses.replace(CFG, log_every=3), wd, progress=False, stop_at=3,
        source=_source())

  def test_validation_keeps_the_best_step(self):
    wd = self._tmp()
    cfg = dataclasses.replace(CFG, steps=4, val_every=2, val_episodes=2,
                              val_sources=('omniglot',), checkpoint_every=2)
    mt.run_meta_training(cfg, wd, progress=False, source=_source())
    rows = [
        json.loads(l)
        for l in (pathlib.Path(wd) / 'val.jsonl').read_text().splitlines()
    ]
    self.assertEqual([r['step'] for r in rows], [0, 2, 4])
    for r in rows:
      self.assertBetween(r['none_accuracy']['omniglot'], 0.0, 100.0)
    best = mt.best_step(wd)
    self.assertEqual(best,
                     max(rows, key=lambda r: (r['mean'], -r['step']))['step'])
    spec, params, _ = mt.load_backbone(wd)
    if best == 0:  # the pretrained start was best: load_backbone returns it
      want = mt.init_state(cfg).params
    else:  # the same step from the regular checkpoints
      want = mt.load_backbone(wd, step=best)[1]
    self.assertTrue(_same(params, want))
    self.assertEqual(spec.resolution, 32)

  def test_config(self):
    cd = ml_collections.ConfigDict({
        'model': 'mcunet',
        'steps': 3,
        'val_sources': 'omniglot, mini-imagenet'
    })
    cfg = dataclass_config.meta_train_config(cd)
    self.assertEqual((cfg.steps, cfg.val_sources),
                     (3, ('omniglot', 'mini-imagenet')))
    with self.assertRaisesRegex(ValueError, r'unknown config key '
                                r'--config\.step;'):
      dataclass_config.meta_train_config({'step': 3})
    with self.assertRaisesRegex(
        ValueError, r'ways must be an int >= 1, got '
        r'0; set --config\.ways$'):
      dataclass_config.meta_train_config({'ways': 0})
    with self.assertRaisesRegex(ValueError, 'tuple of source names'):
      mt.MetaTrainConfig(val_sources='omniglot')
    with self.assertRaisesRegex(ValueError, 'ways'):
      mt.MetaTrainConfig(ways=0)
    with self.assertRaisesRegex(ValueError, 'unknown model'):
      mt.MetaTrainConfig(model='resnet')
    with self.assertRaisesRegex(ValueError, 'neither a meta-train workdir'):
      mt.load_backbone('/nonexistent/dir')


_CHILD = """
import sys
from tinytrain_jax.train import meta_train as mt
from tinytrain_jax import data
import dataclasses
cfg = mt.MetaTrainConfig(resolution=32, ways=5, shots=1, queries=2, steps=40,
                         lr=1e-3, warmup_steps=2, checkpoint_every=2,
                         augment=True, log_every=2)
mt.run_meta_training(cfg, sys.argv[1], progress=True)
"""


@pytest.mark.slow
class KillResumeTest(MetaTrainTest.__base__):

  def test_killed_subprocess_resumes_bit_identical(self):
    wd = tempfile.mkdtemp()
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen([sys.executable, '-c', _CHILD, wd], env=env,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
      if 'step 20/' in line:
        p.kill()
        break
    p.wait()
    mngr = checkpoint.manager(wd)
    self.assertLess(mngr.latest_step(), 40)
    subprocess.run([sys.executable, '-c', _CHILD, wd], env=env, check=True)
    ref = tempfile.mkdtemp()
    subprocess.run([sys.executable, '-c', _CHILD, ref], env=env, check=True)
    a = mt.load_backbone(wd)[1]
    b = mt.load_backbone(ref)[1]
    self.assertTrue(_same(a, b))


if __name__ == '__main__':
  absltest.main()
