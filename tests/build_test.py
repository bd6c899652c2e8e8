"""BUILD mirrors the layout: every test file has a py_test (bazel-free check)."""
import importlib.util
import pathlib
import re
import tempfile

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _update_build():
  spec = importlib.util.spec_from_file_location(
      'update_build', ROOT / 'scripts' / 'update_build.py')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


class BuildTest(absltest.TestCase):

  def test_every_test_file_has_a_py_test(self):
    build = (ROOT / 'BUILD').read_text()
    mains = set(re.findall(r'main = "(tests/[^"]+_test\.py)"', build))
    files = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / 'tests').rglob('*_test.py')
    }
    self.assertEqual(files - mains, set(),
                     'run `python scripts/update_build.py`')
    self.assertEqual(mains - files, set(), 'BUILD names missing test files')

  def test_test_files_have_unique_basenames(self):
    # tests/ has no __init__.py, so pytest imports each file by its basename;
    # two files with one name fail collection on whichever worker gets both.
    names = {}
    for p in (ROOT / 'tests').rglob('*_test.py'):
      names.setdefault(p.name, []).append(p.relative_to(ROOT).as_posix())
    self.assertEqual({n: ps for n, ps in names.items() if len(ps) > 1}, {})

  def test_every_subpackage_has_a_py_library(self):
    build = (ROOT / 'BUILD').read_text()
    for p in (ROOT / 'tinytrain_jax').iterdir():
      if (p / '__init__.py').exists():
        self.assertIn(f'name = "{p.name}"', build, p.name)

  def test_build_is_current_and_layers_have_no_back_edge(self):
    ub = _update_build()
    self.assertEqual((ROOT / 'BUILD').read_text(), ub.generate(),
                     'run `python scripts/update_build.py`')
    _, deps = ub.layer_deps()
    order = [name for name, _ in ub.LAYERS]
    for layer, lower in deps.items():
      for d in lower:
        self.assertLess(order.index(d), order.index(layer), (layer, d))
    self.assertIn('models', deps['masks'])
    self.assertNotIn('train', deps['cost'])

  def test_a_back_edge_is_refused(self):
    ub = _update_build()
    with tempfile.TemporaryDirectory() as d:
      root = pathlib.Path(d)
      for sub in ('tinytrain_jax/models', 'tinytrain_jax/train'):
        (root / sub).mkdir(parents=True)
        (root / sub / '__init__.py').write_text('')
      (root / 'tinytrain_jax/__init__.py').write_text('')
      (root / 'tinytrain_jax/models/net.py'
      ).write_text('from tinytrain_jax.train import finetune\n')
      (root / 'tinytrain_jax/train/finetune.py'
      ).write_text('from tinytrain_jax.models import net\n')
      ub.ROOT = root
      with self.assertRaisesRegex(
          ub.LayerError, 'tinytrain_jax/models/net.py imports '
          'tinytrain_jax.train.finetune .*back-edge'):
        ub.layer_deps()

  def test_requirements_use_tensorflow_cpu(self):
    req = (ROOT / 'requirements.txt').read_text()
    self.assertIn('tensorflow-cpu', req)
    self.assertIsNone(re.search(r'^tensorflow==', req, re.M))


if __name__ == '__main__':
  absltest.main()
