"""Tests of the embedded (Omniglot, CIFAR subset) and folder sources."""
import collections
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
# Default asset cache for tests: the repository's sibling shared/ folder.
if not os.environ.get('TINYTRAIN_ASSETS') and (REPO.parent / 'shared' /
                                               'data').is_dir():
  os.environ['TINYTRAIN_ASSETS'] = str(REPO.parent / 'shared')

from tinytrain_jax import assets  # pylint: disable=g-import-not-at-top
from tinytrain_jax.data import embedded  # pylint: disable=g-import-not-at-top
from tinytrain_jax.data import episodes  # pylint: disable=g-import-not-at-top
from tinytrain_jax.data import sampler  # pylint: disable=g-import-not-at-top
from tinytrain_jax.data import sources  # pylint: disable=g-import-not-at-top

HAVE_OMNIGLOT = assets.asset_path('data', 'omniglot.npz').exists()
HAVE_CIFAR = assets.asset_path('data', 'cifar10_subset.npz').exists()
NO_ASSETS = ('shared data not found; set TINYTRAIN_ASSETS to the folder '
             'holding data/omniglot.npz and data/cifar10_subset.npz')


@absltest.skipUnless(HAVE_OMNIGLOT, NO_ASSETS)
class OmniglotTest(parameterized.TestCase):

  @parameterized.parameters(('train', 883, 25), ('valid', 81, 5),
                            ('test', 659, 20))
  def test_meta_dataset_split_sizes(self, split, chars, alphabets):
    src = sources.get_source('omniglot', split)
    self.assertIsInstance(src, sources.Source)
    self.assertLen(src.classes, chars)
    self.assertLen(set(src.class_groups), alphabets)
    self.assertEqual({src.num_images(i) for i in range(chars)}, {20})
    for name, group in zip(src.classes, src.class_groups):
      self.assertTrue(name.startswith(group + '/'))

  def test_valid_alphabets_and_disjoint_splits(self):
    split_classes = {
        s: set(sources.get_source('omniglot', s).classes) for s in sources.SPLITS
    }
    valid = sources.get_source('omniglot', 'valid')
    self.assertEqual(set(valid.class_groups), set(embedded.VALID_ALPHABETS))
    self.assertEmpty(split_classes['train'] & split_classes['valid'])
    self.assertEmpty(split_classes['train'] & split_classes['test'])
    self.assertLen(set.union(*split_classes.values()), 1623)

  def test_loaded_once(self):
    a = sources.get_source('omniglot', 'train')
    b = sources.get_source('omniglot', 'test')
    self.assertIs(a.pixels, b.pixels)

  def test_real_episodes_from_one_alphabet(self):
    src = sources.get_source('omniglot', 'test')
    cfg = sampler.SamplerConfig()
    specs = sampler.sample_episodes(src, cfg, seed=0, n=50)
    for spec in specs:
      self.assertLen({src.class_groups[c] for c in spec.classes}, 1)
      self.assertEqual({len(q) for q in spec.query_indices}, {10})
      self.assertLessEqual(max(len(s) for s in spec.support_indices), 10)
    ep = episodes.make_episode(src, specs[0], resolution=32)
    real = ep.support_x[ep.support_mask]
    # Real drawings: mostly white paper (+1) with some dark ink strokes.
    self.assertGreater(np.mean(real > 0.9), 0.5)
    self.assertTrue(np.all(real.min(axis=(1, 2, 3)) < -0.5))
    self.assertEqual(ep.class_names[0], src.classes[specs[0].classes[0]])

  def test_image_indices_checked(self):
    src = sources.get_source('omniglot', 'test')
    with self.assertRaisesRegex(ValueError, r"class 'Angelic/character01'.*"
                                r'\[0, 20\)'):
      src.images(0, [20])


@absltest.skipUnless(HAVE_CIFAR, NO_ASSETS)
class CifarTest(absltest.TestCase):

  def test_splits(self):
    train = sources.get_source('cifar10_subset', 'train')
    test = sources.get_source('cifar10_subset', 'test')
    self.assertEqual(train.classes,
                     ['airplane', 'automobile', 'bird', 'cat', 'deer'])
    self.assertEqual(test.classes, ['dog', 'frog', 'horse', 'ship', 'truck'])
    self.assertEqual(test.num_images(0), 600)
    self.assertEqual(test.images(0, [0, 1]).shape, (2, 32, 32, 3))
    with self.assertRaisesRegex(ValueError, "no 'valid' classes"):
      sources.get_source('cifar10_subset', 'valid')


def make_tempdir(test) -> pathlib.Path:
  """A temporary folder removed after the test (works under pytest too)."""
  tmp = tempfile.TemporaryDirectory()
  test.addCleanup(tmp.cleanup)
  return pathlib.Path(tmp.name)


def write_folder(root: pathlib.Path, sizes: dict[str, int]) -> None:
  rng = np.random.default_rng(0)
  for cls, n in sizes.items():
    (root / cls).mkdir(parents=True)
    for i in range(n):
      img = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
      ext = 'png' if i % 2 else 'jpg'
      Image.fromarray(img).save(root / cls / f'{i:03d}.{ext}')


class FolderTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = make_tempdir(self)
    write_folder(self.root, {f'cls{i}': 6 for i in range(6)})
    (self.root / 'empty').mkdir()
    (self.root / 'notes.txt').write_text('not a class')

  def test_classes_and_episodes(self):
    src = sources.get_source(f'dir:{self.root}', 'test', image_size=16)
    self.assertEqual(src.classes, [f'cls{i}' for i in range(6)])
    self.assertEqual(src.num_images(0), 6)
    self.assertEqual(src.images(1, [0, 3]).shape, (2, 16, 16, 3))
    spec = sampler.sample_episode(src, sampler.SamplerConfig(), 0, 0)
    ep = episodes.make_episode(src, spec, resolution=16)
    self.assertEqual(ep.ways, spec.ways)

  def test_flat_folder_serves_every_split(self):
    for split in sources.SPLITS:
      src = sources.get_source(f'dir:{self.root}', split, image_size=16)
      self.assertEqual(src.classes, [f'cls{i}' for i in range(6)])
      self.assertEqual(src.split, split)

  def test_split_folders(self):
    root = make_tempdir(self)
    write_folder(root / 'train', {'a': 3, 'b': 3})
    write_folder(root / 'test', {'c': 3})
    self.assertEqual(
        sources.get_source(f'dir:{root}', 'train').classes, ['a', 'b'])
    self.assertEqual(sources.get_source(f'dir:{root}', 'test').classes, ['c'])
    with self.assertRaisesRegex(ValueError,
                                r'per-split folders but no .*valid'):
      sources.get_source(f'dir:{root}', 'valid')

  def test_bad_paths(self):
    with self.assertRaisesRegex(ValueError, 'is not a directory'):
      sources.get_source(f'dir:{self.root}/missing', 'test')

  def test_unreadable_image_names_file(self):
    bad = self.root / 'cls0' / '000.jpg'
    bad.write_bytes(b'this is not a jpeg')
    src = sources.get_source(f'dir:{self.root}', 'test')
    with self.assertRaisesRegex(ValueError, r'cannot read image .*000\.jpg'):
      src.images(0, [0])


class RegistryTest(parameterized.TestCase):

  @parameterized.parameters('imagenet', 'tfds:', 'dir:', 'Omniglot')
  def test_unknown_source_lists_names(self, name):
    with self.assertRaisesRegex(
        ValueError, r"unknown source.*omniglot, "
        r'cifar10_subset, mini-imagenet, .*'
        r'tfds:<name>, dir:<path>'):
      sources.get_source(name, 'test')

  def test_unknown_split(self):
    with self.assertRaisesRegex(ValueError, r"split must be one of.*'val'"):
      sources.get_source('omniglot', 'val')


class LauncherTest(absltest.TestCase):

  def run_launcher(self, *flags):
    env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
    return subprocess.run(
        [sys.executable, '-m', 'experiments.episodes', *flags], cwd=REPO,
        env=env, capture_output=True, text=True, timeout=120, check=False)

  def test_json_and_contact_sheet(self):
    root = make_tempdir(self)
    write_folder(root / 'data', {f'cls{i}': 4 for i in range(7)})
    sheet = root / 'sheet.png'
    out = self.run_launcher(f'--source=dir:{root / "data"}', '--json',
                            '--num_episodes=3', '--seed=1',
                            f'--contact_sheet={sheet}')
    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    self.assertLen(lines, 3)
    for ep in lines:
      self.assertLen(ep['classes'], ep['ways'])
      self.assertLen(ep['support_per_class'], ep['ways'])
      self.assertLen(ep['query_per_class'], ep['ways'])
      self.assertEqual(
          collections.Counter(ep['query_per_class']), {2: ep['ways']})
    self.assertTrue(sheet.exists())

  def test_bad_source_is_one_line(self):
    out = self.run_launcher('--source=nope')
    self.assertNotEqual(out.returncode, 0)
    self.assertNotIn('Traceback', out.stderr)
    self.assertIn("error: unknown source 'nope'", out.stderr)


if __name__ == '__main__':
  absltest.main()
