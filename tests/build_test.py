"""BUILD mirrors the layout: every test file has a py_test (bazel-free check)."""
import pathlib
import re

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parents[1]


class BuildTest(absltest.TestCase):

  def test_every_test_file_has_a_py_test(self):
    build = (ROOT / 'BUILD').read_text()
    mains = set(re.findall(r'main = "(tests/[^"]+_test\.py)"', build))
    files = {p.relative_to(ROOT).as_posix()
             for p in (ROOT / 'tests').rglob('*_test.py')}
    self.assertEqual(files - mains, set(),
                     'run `python scripts/update_build.py`')
    self.assertEqual(mains - files, set(), 'BUILD names missing test files')

  def test_every_subpackage_has_a_py_library(self):
    build = (ROOT / 'BUILD').read_text()
    for p in (ROOT / 'tinytrain_jax').iterdir():
      if (p / '__init__.py').exists():
        self.assertIn(f'name = "{p.name}"', build, p.name)

  def test_requirements_use_tensorflow_cpu(self):
    req = (ROOT / 'requirements.txt').read_text()
    self.assertIn('tensorflow-cpu', req)
    self.assertIsNone(re.search(r'^tensorflow==', req, re.M))


if __name__ == '__main__':
  absltest.main()
