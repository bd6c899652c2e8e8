"""End-to-end test of the experiments/cost.py launcher (subprocess)."""
import json
import os
import subprocess
import sys

from absl.testing import absltest

from tinytrain_jax import models
from tinytrain_jax.train import methods

_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*flags):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'experiments.cost', *flags],
                        cwd=_ROOT, env=env, capture_output=True, text=True,
                        timeout=120, check=False)


class LauncherTest(absltest.TestCase):

  def test_json_lastlayer_mbv2(self):
    out = _run('--model=mbv2-w0.35', '--feature_mix', '--method=lastlayer',
               '--json')
    self.assertEqual(out.returncode, 0, out.stderr)
    got = json.loads(out.stdout)
    self.assertEqual(got['bwd_macs'], 802_816)
    measured = got['measured']
    for key in ('fwd_macs', 'bwd_macs', 'bwd_weight_grad_macs',
                'bwd_input_grad_macs', 'saved_bytes', 'peak_bytes', 'layers'):
      self.assertIn(key, measured)
    self.assertEqual(measured['bwd_macs'], 802_816)
    self.assertLen(measured['layers'], 52)

  def test_json_is_the_evaluation_cost_columns(self):
    # The evaluation reports methods.method_costs at the support batch.
    for method in ('sparseupdate', 'tinytl'):
      out = _run('--model=mbv2-w0.35', '--feature_mix', f'--method={method}',
                 '--batch_size=25', '--json')
      self.assertEqual(out.returncode, 0, out.stderr)
      got = json.loads(out.stdout)
      want = methods.method_costs(method,
                                  models.model_spec('mbv2-w0.35', 128, True),
                                  25)
      self.assertEqual((got['bwd_macs'], got['bwd_bytes']),
                       (want['bwd_macs'], want['bwd_bytes']), method)
      self.assertEqual(got['measured'] is None, method == 'tinytl')

  def test_unknown_model_one_line_error(self):
    out = _run('--model=resnet50')
    self.assertEqual(out.returncode, 1)
    self.assertNotIn('Traceback', out.stderr)
    self.assertRegex(out.stderr.strip(),
                     r"^error: --model=resnet50 .*accepted: mbv2-w0.35")


if __name__ == '__main__':
  absltest.main()
