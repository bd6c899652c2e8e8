"""lr choice on dev tasks: the grid grows past the edge the best lr sits on."""
import math
from unittest import mock

from absl.testing import absltest

from tinytrain_jax import devices
from tinytrain_jax.eval import lr_choice
from tinytrain_jax.train import finetune as ft


def _fake_run(acc_of_lr):
  """run_methods stand-in: every task's accuracy is acc_of_lr(lr)."""

  def run(method, spec, params, head, episodes, cfg, *a, **k):
    del method, spec, params, head, a, k
    acc = acc_of_lr(cfg.lr)
    if acc is None:
      raise RuntimeError('non-finite support loss')
    return [{'accuracy': acc} for _ in episodes]

  return run


def _choose(acc_of_lr, grid=(1e-3, 1e-2), extend=2):
  with mock.patch.object(lr_choice.methods_lib, 'run_methods',
                         _fake_run(acc_of_lr)):
    return lr_choice.choose_lr('lastlayer', None, None, None, [0, 1],
                               ft.FinetuneConfig(), None, grid,
                               devices.make_mesh(1), extend)


class ChooseLrTest(absltest.TestCase):

  def test_best_on_the_low_edge_extends_down_until_interior(self):
    # Peak at 1e-4: the grid grows to 1e-4, then 1e-5 shows 1e-4 is interior.
    got = _choose(lambda lr: -abs(math.log10(lr) + 4), extend=3)
    self.assertAlmostEqual(got['lr'], 1e-4)
    self.assertEqual(list(got['dev_accuracy']), ['1e-05', '0.0001', '0.001',
                                                 '0.01'])

  def test_extension_continues_a_one_three_grid(self):
    grid = (3e-4, 1e-3, 3e-3, 1e-2)
    got = _choose(lambda lr: -lr, grid=grid)
    self.assertEqual(got['lr'], 3e-5)  # exactly: rounded to 6 digits
    self.assertEqual(list(got['dev_accuracy'])[:2], ['3e-05', '0.0001'])
    got = _choose(lambda lr: lr, grid=grid)
    self.assertEqual(list(got['dev_accuracy'])[-2:], ['0.03', '0.1'])

  def test_a_plateau_is_not_extended(self):
    got = _choose(lambda lr: 50.0 if lr < 5e-3 else 40.0,
                  grid=(1e-3, 3e-3, 1e-2))
    self.assertAlmostEqual(got['lr'], 1e-3)  # ties: the smaller lr
    self.assertLen(got['dev_accuracy'], 3)
    got = _choose(lambda lr: 50.0 if lr < 5e-3 else 40.0,
                  grid=(3e-3, 1e-2))  # a strict edge, then a tie: one step
    self.assertEqual(list(got['dev_accuracy']), ['0.0009', '0.003', '0.01'])
    self.assertAlmostEqual(got['lr'], 9e-4)

  def test_extension_is_bounded(self):
    got = _choose(lambda lr: -lr, extend=1)  # always better lower
    self.assertAlmostEqual(got['lr'], 1e-4)
    self.assertLen(got['dev_accuracy'], 3)

  def test_high_edge_extends_up_and_a_diverged_lr_is_recorded_as_none(self):
    got = _choose(lambda lr: None if lr > 0.05 else lr)
    self.assertAlmostEqual(got['lr'], 1e-2)
    self.assertIsNone(got['dev_accuracy']['0.1'])
    self.assertLen(got['dev_accuracy'], 3)  # nothing past the diverged lr

  def test_interior_best_and_extend_zero_keep_the_grid(self):
    got = _choose(lambda lr: -abs(math.log10(lr) + 2.5), grid=(1e-3, 3e-3,
                                                               1e-2))
    self.assertAlmostEqual(got['lr'], 3e-3)
    self.assertLen(got['dev_accuracy'], 3)
    got = _choose(lambda lr: -lr, extend=0)
    self.assertEqual((got['lr'], len(got['dev_accuracy'])), (1e-3, 2))


if __name__ == '__main__':
  absltest.main()
