"""benchmarks.step_costs: bad input is one line (the run itself is tested at
tiny scale by tests/readme_test.py, which runs the README's command)."""
import os
import pathlib
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

ROOT = pathlib.Path(__file__).resolve().parents[2]


class StepCostsBadInputTest(parameterized.TestCase):

  @parameterized.parameters(
      (['--methods=tinytl'], r"--methods: 'tinytl' is not a mask method; "
       r'accepted: fulltrain.*benchmarks.throughput'),
      (['--methods=magic_dense'], r"--methods: 'magic_dense' is not a mask"),
      (['--resolution=100'], r'--resolution=100 must be a multiple of 32'))
  def test_one_error_line(self, args, pattern):
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, '-m', 'benchmarks.step_costs', '--out=/dev/null'] +
        args, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        timeout=300)
    self.assertNotEqual(out.returncode, 0)
    self.assertNotIn('Traceback', out.stderr)
    lines = [l for l in out.stderr.splitlines() if l.startswith('error:')]
    self.assertLen(lines, 1, out.stderr)
    self.assertRegex(lines[0], pattern)


if __name__ == '__main__':
  absltest.main()
