"""docs/masks.md runs as written: its select command, then its optax example."""
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / 'docs' / 'masks.md'


def _blocks(lang):
  """The doc's ```lang fenced blocks, in order."""
  return re.findall(rf'^```{lang}\n(.*?)^```', DOC.read_text(), re.M | re.S)


class DocsMasksTest(absltest.TestCase):

  def test_example_trains_with_a_mask_saved_by_select(self):
    (cmd,), (code,) = _blocks('bash'), _blocks('python')
    argv = shlex.split(cmd)
    self.assertEqual(argv[:3], ['python', '-m', 'experiments.select'])
    self.assertIn('--save=mask.json', argv)
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, 'mask.json')
      argv = [sys.executable] + [
          f'--save={path}' if a == '--save=mask.json' else a for a in argv[1:]
      ]
      run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                           timeout=600, check=False)
      self.assertEqual(run.returncode, 0, run.stderr[-3000:])
      self._check_format_sketch(json.loads(pathlib.Path(path).read_text()))
      with mock.patch.dict(os.environ, {'MASK_JSON': path}):
        exec(compile(code, str(DOC), 'exec'), {'__name__': '__docs__'})  # pylint: disable=exec-used

  def _check_format_sketch(self, blob):
    """The doc's JSON sketch has the real file's fields, keys, leaf kinds."""
    (sketch,) = [json.loads(b) for b in _blocks('json')]
    self.assertEqual(sketch['format'], blob['format'])
    self.assertEqual(set(sketch['metadata']), set(blob['metadata']))
    self.assertContainsSubset(set(sketch['mask']) - {'...'}, set(blob['mask']))
    for value in list(sketch['mask'].values()) + list(blob['mask'].values()):
      if not isinstance(value, (bool, str)):
        self.assertEqual(set(value), {'channels', 'of'})


if __name__ == '__main__':
  absltest.main()
