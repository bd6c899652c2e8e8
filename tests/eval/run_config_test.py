"""run_config.json: a rerun must match the pinned, number-affecting config."""
import json
import pathlib
import shutil
import tempfile

from absl.testing import absltest

from tinytrain_jax.configs import default
from tinytrain_jax.configs import eval_config
from tinytrain_jax.eval import run_config

TESTDATA = pathlib.Path(__file__).resolve().parent / 'testdata'


def _json(**changes):
  cd = default.get_config()
  for key, value in changes.items():
    *path, leaf = key.split('__')
    node = cd
    for p in path:
      node = node[p]
    node[leaf] = value
  return eval_config.from_config_dict(cd).to_json_dict()


class RunConfigTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.wd = pathlib.Path(tempfile.mkdtemp())
    self.addCleanup(shutil.rmtree, self.wd)

  def test_pin_then_check(self):
    run_config.check(self.wd, _json())
    stored = json.loads((self.wd / 'run_config.json').read_text())
    self.assertEqual(stored['format'], run_config.FORMAT)
    self.assertNotIn('methods', stored)
    # Row-selecting fields may change; the same numbers spelled otherwise
    # are the same config.
    run_config.check(
        self.wd,
        _json(methods='none', episodes=3,
              finetune__lr_grid='0.0003,1e-3,3e-3,.01'))
    with self.assertRaisesRegex(
        ValueError, r'holds results of another config \(finetune\.'
        r'weight_decay: stored 0\.0, now 0\.1\); use another --workdir$'):
      run_config.check(self.wd, _json(finetune__weight_decay=0.1))

  def test_pin_written_before_episodes_per_step_resumes(self):
    # Pins written before the field existed lack it; they ran with 1.
    run_config.check(self.wd, _json())
    path = self.wd / 'run_config.json'
    stored = json.loads(path.read_text())
    del stored['meta_train']['episodes_per_step']
    path.write_text(json.dumps(stored))
    run_config.check(self.wd, _json())
    with self.assertRaisesRegex(
        ValueError, r'\(meta_train\.episodes_per_step: stored 1, now 4\)'):
      run_config.check(self.wd, _json(meta_train__episodes_per_step=4))

  def test_format1_file_of_an_unchanged_config_resumes(self):
    # Written by the evaluation before EvalConfig (comma strings, fewer
    # fields, meta_train.resolution 0): the default config resumes it.
    shutil.copy(TESTDATA / 'run_config_format1_default.json',
                self.wd / 'run_config.json')
    # The default config of that time: no grid extension, one meta lr, the
    # head at scale 10.
    then = dict(finetune__lr_grid_extend=0, meta_train__lr_per_backbone='',
                meta_train__head_scale=10.0)
    run_config.check(self.wd, _json(**then))
    run_config.check(self.wd, _json(meta_train__resolution=64, **then))
    for change, field in (({
        'finetune__lr_grid_extend': 2
    }, 'finetune.lr_grid_extend'), ({
        'meta_train__lr_per_backbone': 'proxyless=3e-5'
    }, 'meta_train.lr_per_backbone.proxyless-w0.3'), ({
        'finetune__lr_grid': '1e-3'
    }, 'finetune.lr_grid'), ({
        'meta_train__momentum': 0.5
    }, 'meta_train.momentum'), ({
        'sampler__max_num_query': 3
    }, 'sampler.max_num_query'), ({
        'finetune__lr_per_method': 'none=1e-2'
    }, 'finetune.lr_per_method.none')):
      with self.assertRaisesRegex(ValueError, rf'\({field}: stored'):
        run_config.check(self.wd, _json(**dict(then, **change)))
    # The file is read, never rewritten.
    self.assertEqual((self.wd / 'run_config.json').read_text(),
                     (TESTDATA / 'run_config_format1_default.json').read_text())

  def test_format1_file_without_meta_training(self):
    shutil.copy(TESTDATA / 'run_config_format1_no_meta.json',
                self.wd / 'run_config.json')
    same = dict(
        meta_train__steps=0, finetune__dev_episodes=6,
        finetune__lr_grid_extend=0,
        starts__tinytrain='pretrained',
        finetune__lr_per_method=('tinytrain=1e-2,sparseupdate=1e-2,tinytl=1e-2,'
                                 'adapterdrop_25=1e-2,adapterdrop_50=1e-2,'
                                 'adapterdrop_75=1e-2,transductive=1e-3'))
    # Without meta-training the meta_train block changes no number.
    run_config.check(self.wd, _json(meta_train__lr=1.0, **same))
    with self.assertRaisesRegex(
        ValueError, r'\(meta_train\.augment: stored '
        r'null, now true\)'):
      run_config.check(self.wd, _json(**dict(same, meta_train__steps=5)))

  def test_results_without_run_config_are_refused(self):
    (self.wd / 'episodes.jsonl').write_text('{}\n')
    with self.assertRaisesRegex(ValueError, 'has no run_config.json beside '
                                'it'):
      run_config.check(self.wd, _json())


if __name__ == '__main__':
  absltest.main()
