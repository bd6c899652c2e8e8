"""The sweep launcher at tiny scale: two points, results, curves, skip-if-done."""
import json
import pathlib
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parents[2]

_CONFIG = textwrap.dedent('''
    from tinytrain_jax.configs import default

    def get_config(arg=''):
      c = default.get_config('quick')
      c.resolution, c.episodes, c.methods = 32, 1, 'tinytrain'
      c.sampler.ways, c.sampler.shots, c.sampler.queries = 3, 1, 1
      c.domains, c.ablation = 'omniglot', False
      c.meta_train.steps = 0
      c.finetune.steps, c.finetune.lr_grid = 1, ''
      return c

    def get_sweep(h):
      return h.product([h.sweep('selection.budget_scale', [0.5, 1.0])])
''')


class SweepTest(absltest.TestCase):

  def test_two_point_sweep(self):
    with tempfile.TemporaryDirectory() as d:
      cfg = pathlib.Path(d) / 'tiny_sweep.py'
      cfg.write_text(_CONFIG)
      cmd = [
          sys.executable, '-m', 'experiments.sweep', f'--config={cfg}',
          f'--workdir={d}/out'
      ]
      out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           check=False)
      self.assertEqual(out.returncode, 0, out.stderr[-2000:])
      points = json.loads((pathlib.Path(d) / 'out/sweep.json').read_text())
      self.assertLen(points, 2)
      self.assertEqual(sorted(p['budget_scale'] for p in points), [0.5, 1.0])
      small, big = sorted(points, key=lambda p: p['budget_scale'])
      self.assertLessEqual(small['bwd_macs'], big['bwd_macs'])
      self.assertTrue((pathlib.Path(d) / 'out/sweep.png').exists())
      # Rerun: every point's results exist, so nothing is recomputed.
      again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                             check=False)
      self.assertEqual(again.returncode, 0, again.stderr[-2000:])
      self.assertEqual(
          json.loads((pathlib.Path(d) / 'out/sweep.json').read_text()), points)


if __name__ == '__main__':
  absltest.main()
