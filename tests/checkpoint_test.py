"""checkpoint: a damaged newest step falls back to the previous intact one
(bit-identical resume), and a checkpoint for another model is refused."""
import functools
import os
import pathlib
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import pytest

from tinytrain_jax import checkpoint
from tinytrain_jax import data
from tinytrain_jax.train import meta_train as mt

CFG = mt.MetaTrainConfig(resolution=32, ways=5, shots=1, queries=2, steps=4,
                         lr=1e-3, warmup_steps=2, checkpoint_every=2,
                         augment=False, log_every=2, source='omniglot')


@functools.lru_cache(None)
def _source():
  return data.get_source('omniglot', 'train')


def _same(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


# Ways to damage a committed step folder (as a disk error or a hand edit would).
_DAMAGE = {
    'truncated_data': lambda d: os.truncate(_largest_file(d / 'state'), 100),
    'missing_metadata': lambda d: (d / 'state' / '_METADATA').unlink(),
    'missing_config': lambda d: (d / 'config' / 'metadata').unlink(),
}


def _tiny_state(step):
  return {'w': np.arange(6, dtype=np.float32) * step, 'step': np.int32(step)}


class FallbackTest(parameterized.TestCase):
  """Fast: a tiny pytree state, two steps, the newest damaged."""

  @parameterized.named_parameters(*[(k, k) for k in _DAMAGE])
  def test_damaged_latest_step_falls_back(self, damage):
    wd = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, wd, ignore_errors=True)
    mngr = checkpoint.manager(wd)
    for step in (1, 2):
      checkpoint.save(mngr, step, _tiny_state(step), {'model': 'm'})
    mngr.wait_until_finished()
    _DAMAGE[damage](pathlib.Path(wd) / 'checkpoints' / '2')
    mngr = checkpoint.manager(wd)
    self.assertEqual(checkpoint.read_config(mngr), {'model': 'm'})
    with self.assertLogs(level='WARNING') as logs:
      state, step = checkpoint.restore_or_init(mngr, lambda: _tiny_state(0),
                                               {'model': 'm'})
    self.assertEqual(step, 1)
    self.assertTrue(_same(state, _tiny_state(1)))
    self.assertRegex('\n'.join(logs.output),
                     r'step\(s\) \[2\] .* damaged .* resumed from step 1')
    self.assertEqual(checkpoint.manager(wd).all_steps(), [1])
    # The resumed run can write step 2 again.
    checkpoint.save(mngr, 2, _tiny_state(2), {'model': 'm'}, wait=True)
    self.assertEqual(checkpoint.manager(wd).all_steps(), [1, 2])
    with self.assertRaisesRegex(
        ValueError, "written for model='m', but this "
        "run uses model='x'"):
      checkpoint.restore_or_init(
          checkpoint.manager(wd), lambda: _tiny_state(0), {'model': 'x'})


@pytest.mark.slow
class CheckpointTest(parameterized.TestCase):
  """Meta-training resumed from a damaged checkpoint ends bit-identical."""

  def _tmp(self):
    d = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, d, ignore_errors=True)
    return d

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # One uninterrupted run; its checkpoints (steps 2 and 4) are copied and
    # damaged, and the copy's resumed run must end bit-identical to it.
    cls._root = tempfile.mkdtemp()
    cls.killed = os.path.join(cls._root, 'full')
    cls.full = mt.run_meta_training(CFG, cls.killed, progress=False,
                                    source=_source())

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls._root, ignore_errors=True)
    super().tearDownClass()

  @parameterized.named_parameters(*[(k, k) for k in _DAMAGE])
  def test_damaged_latest_step_resumes_from_previous(self, damage):
    wd = self._tmp()
    shutil.copytree(self.killed, wd, dirs_exist_ok=True)
    self.assertEqual(checkpoint.manager(wd).all_steps(), [2, 4])
    _DAMAGE[damage](pathlib.Path(wd) / 'checkpoints' / '4')
    with self.assertLogs(level='WARNING') as logs:
      resumed = mt.run_meta_training(CFG, wd, progress=False, source=_source())
    text = '\n'.join(logs.output)
    self.assertRegex(text, r'step\(s\) \[4\] .* damaged .* resumed from step 2')
    self.assertEqual(int(resumed.step), CFG.steps)
    self.assertTrue(_same(resumed, self.full))
    self.assertTrue((pathlib.Path(wd) / 'checkpoints_corrupt' / '4').is_dir())
    self.assertEqual(checkpoint.manager(wd).latest_step(), CFG.steps)

  def test_no_intact_step_raises_and_moves_nothing(self):
    wd = self._tmp()
    shutil.copytree(self.killed, wd, dirs_exist_ok=True)
    for s in ('2', '4'):
      shutil.rmtree(pathlib.Path(wd) / 'checkpoints' / s / 'state')
    with self.assertRaisesRegex(ValueError, r'no checkpoint in .* restores'):
      checkpoint.restore_or_init(
          checkpoint.manager(wd), lambda: mt.init_state(CFG), CFG.to_json())
    self.assertFalse((pathlib.Path(wd) / 'checkpoints_corrupt').exists())
    self.assertEqual(checkpoint.manager(wd).all_steps(), [2, 4])

  def test_check_checkpoint_for(self):
    stored = checkpoint.check_checkpoint_for(self.killed, model='mcunet-5fps')
    self.assertEqual(stored['model'], 'mcunet-5fps')
    with self.assertRaisesRegex(
        ValueError, r"meta_train.checkpoint=.* model='mcunet-5fps', but this "
        r"run needs model='mbv2-w0.35'; .*one per backbone"):
      checkpoint.check_checkpoint_for(self.killed, model='mbv2-w0.35')
    with self.assertRaisesRegex(ValueError, 'no checkpoints/ folder'):
      checkpoint.check_checkpoint_for(self._tmp(), model='mcunet-5fps')


if __name__ == '__main__':
  absltest.main()
