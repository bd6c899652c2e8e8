"""The whole pipeline at tiny scale: meta-train, methods, table, JSON, plot."""
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np

from tinytrain_jax.configs import default
from tinytrain_jax.configs import eval_config
from tinytrain_jax.eval import protocol, report

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_config_dict(methods='none,lastlayer,tinytrain', domains='omniglot',
                     ablation=False):
  cfg = default.get_config('quick')
  cfg.resolution = 32
  cfg.episodes = 2
  cfg.methods = methods
  cfg.domains = domains
  cfg.ablation = ablation
  cfg.sampler.ways, cfg.sampler.shots, cfg.sampler.queries = 3, 1, 2
  cfg.meta_train.steps = 2
  cfg.meta_train.ways, cfg.meta_train.shots, cfg.meta_train.queries = 3, 1, 2
  cfg.meta_train.val_every = 0
  cfg.finetune.steps = 2
  cfg.finetune.lr_grid = ''
  return cfg


def tiny_config(**kwargs):
  return eval_config.from_config_dict(tiny_config_dict(**kwargs))


class ReportTest(absltest.TestCase):

  def test_mean_ci95(self):
    mean, ci = report.mean_ci95([50.0, 100.0])
    self.assertEqual(mean, 75.0)
    self.assertAlmostEqual(ci, 1.96 * 25.0 / np.sqrt(2))
    with self.assertRaisesRegex(ValueError, 'no episode'):
      report.mean_ci95([])

  def test_paired_ci95(self):
    d, ci = report.paired_ci95([60.0, 80.0, 70.0], [50.0, 70.0, 70.0])
    self.assertAlmostEqual(d, 20.0 / 3)
    self.assertAlmostEqual(ci, 1.96 * np.std([10.0, 10.0, 0.0]) / np.sqrt(3))
    # A constant gap is resolved exactly, however spread the tasks are.
    self.assertEqual(report.paired_ci95([10.0, 90.0], [5.0, 85.0]), (5.0, 0.0))

  def test_missing_keys(self):
    with self.assertRaisesRegex(ValueError, 'lacks'):
      report.markdown_tables([{'method': 'x'}])


class PipelineTest(absltest.TestCase):

  def test_end_to_end_tiny(self):
    with tempfile.TemporaryDirectory() as wd:
      rows = protocol.run_evaluation(tiny_config(), wd, progress=False)
      wd = pathlib.Path(wd)
      for f in ('results.json', 'results.md', 'pareto.png', 'episodes.jsonl'):
        self.assertTrue((wd / f).exists(), f)
      self.assertGreater((wd / 'pareto.png').stat().st_size, 1000)
      stored = json.loads((wd / 'results.json').read_text())
      first_cache = stored['config']['meta_trained']['mcunet-5fps']['cache']
      self.assertEqual(stored['results'], rows)
      self.assertEqual([r['method'] for r in rows],
                       ['none', 'lastlayer', 'tinytrain'])
      md = (wd / 'results.md').read_text()
      for r in rows:
        self.assertEqual(r['episodes'], 2)
        self.assertBetween(r['accuracy_mean'], 0.0, 100.0)
        cell = f"{r['accuracy_mean']:.1f} ± {r['accuracy_ci95']:.1f}"
        self.assertRegex(md, rf"\| {r['method']} \| {re.escape(cell)} \|")
      by = {r['method']: r for r in rows}
      # TinyTrain's paired gap to each method, over the same tasks.
      log = [json.loads(l) for l in (wd / 'episodes.jsonl').open()]
      acc = lambda m: [x['accuracy'] for x in sorted(
          (x for x in log if x['method'] == m), key=lambda x: x['episode'])]
      self.assertNotIn('tinytrain_minus', by['tinytrain'])
      for m in ('none', 'lastlayer'):
        self.assertEqual(by[m]['tinytrain_minus'],
                         list(report.paired_ci95(acc('tinytrain'), acc(m))))
      self.assertIn('TinyTrain minus method, paired', md)
      self.assertEqual(by['none']['bwd_macs'], 0)
      self.assertGreater(by['lastlayer']['bwd_macs'], 0)
      self.assertTrue(by['tinytrain']['meta_trained'])
      self.assertFalse(by['lastlayer']['meta_trained'])
      # Resume: a rerun reads every episode back and gives identical rows.
      again = protocol.run_evaluation(tiny_config(), wd, progress=False)
      self.assertEqual(again, rows)
      self.assertLen((wd / 'episodes.jsonl').read_text().splitlines(), 6)
      # A config that would change stored numbers is refused, not mixed in.
      other = tiny_config_dict()
      other.finetune.steps = 3
      with self.assertRaisesRegex(
          ValueError, r'holds results of another '
          r'config \(finetune\.steps: stored 2, now '
          r'3\); use another --workdir$'):
        protocol.run_evaluation(
            eval_config.from_config_dict(other), wd, progress=False)
      # Only row-selecting fields may change: fewer methods reads them back.
      fewer = tiny_config(methods='none,tinytrain')
      self.assertEqual(
          protocol.run_evaluation(fewer, wd, progress=False),
          [rows[0], rows[2]])
      # A cut last line (kill -9 mid-write) is repaired, and redone once.
      log = wd / 'episodes.jsonl'
      lines = log.read_text().splitlines(keepends=True)
      log.write_text(''.join(lines[:-1]) + lines[-1][:25])
      again = protocol.run_evaluation(tiny_config(), wd, progress=False)
      self.assertEqual(again, rows)
      self.assertEqual(log.read_text(), ''.join(lines))
      # The meta-trained backbone was cached once and reused by the reruns
      # (other tests may add cache entries of other configs meanwhile).
      info = json.loads((wd / 'results.json').read_text())['config']
      name = info['meta_trained']['mcunet-5fps']['cache']
      self.assertEqual(name, first_cache)
      self.assertTrue((pathlib.Path(os.environ['TINYTRAIN_CACHE']) /
                       'meta_train' / name / 'checkpoints').is_dir())

  def test_ablation_rows_and_checkpoint_per_backbone(self):
    with tempfile.TemporaryDirectory() as wd:
      cfg = tiny_config(methods='none,tinytrain', ablation=True)
      rows = protocol.run_evaluation(cfg, wd, progress=False)
      self.assertEqual([(r['method'], r['start']) for r in rows],
                       [('none', 'pretrained'), ('tinytrain', 'metatrained'),
                        ('none@metatrained', 'metatrained'),
                        ('tinytrain@pretrained', 'pretrained')])
      # The variants ran two at a time; one at a time gives the same rows.
      with mock.patch.object(protocol, 'STUDY_THREADS', 1):
        serial = protocol.run_evaluation(cfg, pathlib.Path(wd) / 'serial',
                                         progress=False)
      self.assertEqual(serial, rows)
      by = {r['method']: r for r in rows}
      # The same weights give the same None accuracy, whatever the label.
      self.assertNotEqual(by['none']['start'], by['none@metatrained']['start'])
      # An existing workdir for another backbone is refused before any work.
      cached = next(
          p for p in (pathlib.Path(os.environ['TINYTRAIN_CACHE']) /
                      'meta_train').glob('mcunet-5fps-*') if p.is_dir())
      cfg2 = tiny_config_dict(methods='tinytrain')
      cfg2.backbones = 'mcunet-5fps,mbv2-w0.35'
      cfg2.meta_train.checkpoint = str(cached)
      with self.assertRaisesRegex(ValueError, r"has no workdir for "
                                  r"\['mbv2-w0.35'\]"):
        protocol.run_evaluation(
            eval_config.from_config_dict(cfg2),
            pathlib.Path(wd) / 'b', progress=False)
      self.assertFalse((pathlib.Path(wd) / 'b' / 'episodes.jsonl').exists())

  def test_config_dict_is_refused(self):
    # The library reads only EvalConfig; launchers convert at the edge.
    with self.assertRaisesRegex(
        TypeError, 'takes an eval.config.EvalConfig, '
        'got ConfigDict; build it with'):
      protocol.run_evaluation(tiny_config_dict(), '/nonexistent/never')

  def test_bad_method_is_one_line_error(self):
    with tempfile.TemporaryDirectory() as wd:
      out = subprocess.run([
          sys.executable, '-m', 'experiments.evaluate',
          '--config=tinytrain_jax/configs/default.py:quick',
          '--config.methods=none,magic', f'--workdir={wd}'
      ], cwd=ROOT, capture_output=True, text=True, check=False)
      self.assertNotEqual(out.returncode, 0)
      self.assertIn("--config.methods: unknown ['magic']", out.stderr)
      self.assertNotIn('Traceback', out.stderr)


if __name__ == '__main__':
  absltest.main()
