"""collapse: loss at ln(ways) with exploded weights is flagged, nothing else."""
import math

from absl.testing import absltest
import numpy as np

from tinytrain_jax.train import collapse


class CollapseTest(absltest.TestCase):

  def test_check(self):
    ln5 = math.log(5)
    msg = collapse.check('fine-tuning (method fulltrain)', 1e6, 5, ln5, 227.6,
                         3.6e7)
    self.assertRegex(
        msg, r'^fine-tuning \(method fulltrain\) with lr 1e\+06 '
        r'collapsed: loss 1.6094 = ln\(5\) \(chance\) while the '
        r'weight norm grew 1.58e\+05x')
    self.assertNotIn('\n', msg)
    # Chance loss without exploding weights: an honest hard task.
    self.assertIsNone(collapse.check('m', 1e-2, 5, ln5, 227.6, 228.0))
    # Exploding weights but a loss away from chance: not this failure.
    self.assertIsNone(collapse.check('m', 1.0, 5, 0.3, 1.0, 1e4))
    self.assertIsNone(collapse.check('m', 1.0, 5, float('nan'), 1.0, 1e4))
    self.assertIsNone(collapse.check('m', 1.0, 1, 0.0, 1.0, 1e4))

  def test_warn_once_per_run_and_norm(self):
    before = {'a': np.ones((3,), np.float32)}
    after = {'a': np.full((3,), 1e3, np.float32)}
    self.assertAlmostEqual(collapse.param_norm(before), math.sqrt(3))
    with self.assertLogs(level='WARNING') as logs:
      for _ in range(3):
        msg = collapse.warn_if_collapsed('t', 5.0, 2, math.log(2),
                                         collapse.param_norm(before), after)
        self.assertIsNotNone(msg)
    self.assertLen([l for l in logs.output if 'collapsed' in l], 1)


if __name__ == '__main__':
  absltest.main()
