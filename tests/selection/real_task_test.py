"""Selection on pretrained mcunet-5fps and a real Omniglot test task."""
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from tinytrain_jax import cost
from tinytrain_jax import masks
from tinytrain_jax import selection

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class RealTaskTest(absltest.TestCase):
  """128 px, 5-way 1-shot (support padded to 8): one jit compile."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.spec, cls.params, cls.sel = selection.select_for_task(
        'mcunet-5fps', 'omniglot', seed=0, resolution=128, ways=5, shots=1)

  def test_selection_concentrates_on_late_layers(self):
    idx = [l['index'] for l in self.sel.layers]
    self.assertNotEmpty(idx)
    self.assertGreater(np.mean(idx), len(self.spec.convs) / 2)
    late = [
        i for i in idx if self.spec.convs[i].block is not None and
        self.spec.convs[i].block >= len(self.spec.blocks) - 4
    ]
    self.assertGreater(len(late), len(idx) / 2)
    # Scores are positive and in non-increasing visiting order.
    scores = [l['score'] for l in self.sel.layers]
    self.assertTrue(all(s > 0 for s in scores))
    self.assertEqual(scores, sorted(scores, reverse=True))

  def test_within_default_budgets(self):
    b, m = selection.default_budgets('mcunet-5fps')
    self.assertEqual((self.sel.budget_bytes, self.sel.budget_macs), (b, m))
    self.assertLessEqual(self.sel.bwd_bytes, b)
    self.assertLessEqual(self.sel.bwd_macs, m)
    self.assertEqual(
        cost.backward_macs(self.spec, self.sel.mask).total_macs,
        self.sel.bwd_macs)

  def test_pass_over_reachable_convs_gives_the_full_pass_mask(self):
    reach = selection.reachable_convs(self.spec, self.sel.config)
    self.assertLess(len(reach), len(self.spec.convs) / 2)
    self.assertEqual(sorted(self.sel.fisher.layer),
                     sorted(c.name for c in reach))
    for seed in (0, 1, 2):
      ep = selection.task_episode('omniglot', seed, 128, 5, 1)
      full = selection.compute_fisher(self.spec, self.params, ep)
      self.assertLen(full.layer, len(self.spec.convs))
      want = selection.select_from_scores(self.spec, self.params, full,
                                          self.sel.config)
      got = selection.select(self.spec, self.params, ep, self.sel.config)
      self.assertEqual(masks.mask_to_json(got.mask),
                       masks.mask_to_json(want.mask))
      for c in reach:
        np.testing.assert_allclose(got.fisher.out[c.name],
                                   full.out[c.name], rtol=1e-4, atol=1e-12)

  def test_deterministic_and_round_trips(self):
    ep = selection.task_episode('omniglot', 0, 128, 5, 1)
    again = selection.select(self.spec, self.params, ep, self.sel.config)
    self.assertEqual(
        masks.mask_to_json(again.mask), masks.mask_to_json(self.sel.mask))
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, 'mask.json')
      masks.save_mask(path, self.sel.mask, {'model': 'mcunet-5fps'})
      back = masks.load_mask(path, self.params, self.spec)
    self.assertEqual(
        masks.mask_to_json(back), masks.mask_to_json(self.sel.mask))
    self.assertEqual(
        masks.layer_updates(self.spec, back), dict(self.sel.view.layers))

  def test_report(self):
    rep = json.loads(json.dumps(selection.selection_report(self.sel)))
    self.assertEqual(len(rep['layers']), len(self.sel.layers))
    for key in ('index', 'name', 'channels_selected', 'channels_total',
                'score'):
      self.assertIn(key, rep['layers'][0])
    self.assertIn('budget_macs', rep)
    self.assertIn('backward memory', selection.format_selection(self.sel))


class LauncherTest(absltest.TestCase):

  def _run(self, *args):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    return subprocess.run([sys.executable, '-m', 'experiments.select', *args],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)

  def test_json_and_save(self):
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, 'm.json')
      r = self._run('--resolution=64', '--shots=1', '--ways=3', '--json',
                    '--budget_kb=300', '--budget_mmacs=1.5', f'--save={path}')
      self.assertEqual(r.returncode, 0, r.stderr[-2000:])
      rep = json.loads(r.stdout.strip().splitlines()[-1])
      saved = json.load(open(path))
    self.assertLessEqual(rep['bwd_bytes'], 300 * 1024)
    self.assertLessEqual(rep['bwd_macs'], 1.5e6)
    self.assertEqual(saved['metadata']['budget_macs'], 1.5e6)
    self.assertEqual(saved['metadata']['model'], 'mcunet-5fps')

  def test_bad_input_is_one_line(self):
    r = self._run('--model=resnet', '--budget_kb=1')
    self.assertEqual(r.returncode, 1)
    self.assertNotIn('Traceback', r.stderr)
    self.assertRegex(
        r.stderr.strip(), r"^error: --model=resnet.*accepted: "
        r'mbv2-w0.35, mcunet-5fps, proxyless-w0.3')
    r = self._run('--budget_kb=1')
    self.assertRegex(r.stderr.strip(),
                     r'^error: .*below the cheapest.*--budget_kb')


if __name__ == '__main__':
  absltest.main()
