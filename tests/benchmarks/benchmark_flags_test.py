"""Benchmarks: bad input is one `error:` line (the runs themselves are tested
at tiny scale by tests/readme_test.py, which runs the README's commands)."""
import os
import pathlib
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

ROOT = pathlib.Path(__file__).resolve().parents[2]


class BenchmarkBadInputTest(parameterized.TestCase):

  @parameterized.parameters(
      ('throughput', ['--tasks=1'],
       r'--tasks=1 must be >= 2 x the largest --devices .*--tasks=8'),
      ('throughput', ['--tasks_per_device=2', '--tasks=2'],
       r'--tasks=2 must be >= 2 x .* --tasks_per_device \(2\).*--tasks=16'),
      ('throughput', ['--tasks_per_device=0'],
       r'--tasks_per_device=0 must be >= 1'),
      ('throughput', ['--devices=9'], r'--devices=9 but only 1 cpu device'),
      ('throughput', ['--models=resnet50'],
       r"--models: unknown \['resnet50'\]; accepted: mcunet-5fps"),
      ('throughput', ['--methods=magic'],
       r"unknown method 'magic'; accepted: none"),
      ('throughput', ['--resolution=100'],
       r'--resolution=100 must be a multiple of 32'),
      ('step_costs', ['--methods=tinytl'],
       r"--methods: 'tinytl' is not a mask method; accepted: fulltrain.*"
       r'benchmarks.throughput'),
      ('step_costs', ['--methods=magic_dense'],
       r"--methods: 'magic_dense' is not a mask"),
      ('step_costs', ['--resolution=100'],
       r'--resolution=100 must be a multiple of 32'))
  def test_one_error_line(self, module, args, pattern):
    env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, '-m', f'benchmarks.{module}', '--out=/dev/null'] +
        args, cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        timeout=300)
    self.assertNotEqual(out.returncode, 0)
    self.assertNotIn('Traceback', out.stderr)
    lines = [l for l in out.stderr.splitlines() if l.startswith('error:')]
    self.assertLen(lines, 1, out.stderr)
    self.assertRegex(lines[0], pattern)


if __name__ == '__main__':
  absltest.main()
