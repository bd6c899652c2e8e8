"""mini-ImageNet source: the standard layout, decode cache, clean errors."""
import os
import pathlib
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
from PIL import Image

from tinytrain_jax import assets
from tinytrain_jax.data import episodes
from tinytrain_jax.data import minimagenet
from tinytrain_jax.data import sampler
from tinytrain_jax.data import sources

WNIDS = {
    'train': ['n01', 'n02', 'n03'],
    'valid': ['n04', 'n05'],
    'test': ['n06', 'n07', 'n08']
}


def write_fixture(root: pathlib.Path, per_class: int = 4, size: int = 84):
  """A tiny copy of the standard layout: images/ + the three CSVs."""
  rng = np.random.default_rng(0)
  (root / 'images').mkdir(parents=True)
  for split, wnids in WNIDS.items():
    lines = ['filename,label']
    for w in wnids:
      for i in range(per_class):
        name = f'{w}{i:08d}.jpg'
        Image.fromarray(rng.integers(0, 256, (size, size, 3),
                                     np.uint8)).save(root / 'images' / name,
                                                     quality=95)
        lines.append(f'{name},{w}')
    (root / minimagenet.CSV_FOR_SPLIT[split]).write_text('\n'.join(lines))


class MiniImagenetTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.root = pathlib.Path(tmp.name) / 'mini'
    write_fixture(self.root)
    env = mock.patch.dict(
        os.environ, {
            assets.CACHE_ENV_VAR: str(pathlib.Path(tmp.name) / 'cache'),
            assets.ENV_VAR: str(pathlib.Path(tmp.name) / 'assets')
        })
    env.start()
    self.addCleanup(env.stop)

  def test_splits_classes_and_pixels(self):
    for split, wnids in WNIDS.items():
      src = sources.get_source(f'mini-imagenet:{self.root}', split)
      self.assertEqual(src.classes, wnids)
      self.assertEqual(src.split, split)
      self.assertEqual(src.num_images(1), 4)
      x = src.images(1, [0, 3])
      self.assertEqual(x.shape, (2, 84, 84, 3))
      want = np.asarray(
          Image.open(self.root / 'images' /
                     f'{wnids[1]}00000003.jpg').convert('RGB'))
      np.testing.assert_array_equal(x[1], want)

  def test_decoded_once_then_cached(self):
    sources.get_source(f'mini-imagenet:{self.root}', 'train')
    with mock.patch.object(minimagenet, '_decode_split') as decode:
      src = sources.get_source(f'mini-imagenet:{self.root}', 'train')
      decode.assert_not_called()
    self.assertEqual(src.images(0, [0]).shape, (1, 84, 84, 3))
    cached = list((assets.derived_cache_dir() / 'mini-imagenet').glob('*.npy'))
    self.assertLen(cached, 1)

  def test_asset_cache_default_and_episodes(self):
    data = pathlib.Path(os.environ[assets.ENV_VAR]) / 'data'
    data.mkdir(parents=True)
    (data / 'mini-imagenet').symlink_to(self.root)
    src = sources.get_source('mini-imagenet', 'test')
    cfg = sampler.SamplerConfig(mode='fixed', ways=3, shots=1, queries=2)
    a = sampler.sample_episode(src, cfg, seed=0, index=5)
    b = sampler.sample_episode(src, cfg, seed=0, index=5)
    self.assertEqual(a, b)
    ep = episodes.make_episode(src, a, resolution=32, buckets=None,
                               way_buckets=None)
    self.assertEqual(ep.support_x.shape, (3, 32, 32, 3))

  def test_errors_name_the_file(self):
    (self.root / 'images' / 'n0100000002.jpg').unlink()
    with self.assertRaisesRegex(ValueError, r'n0100000002\.jpg .*missing'):
      sources.get_source(f'mini-imagenet:{self.root}', 'train')
    (self.root / 'val.csv').write_text('file,class\nx.jpg,n04\n')
    with self.assertRaisesRegex(ValueError, r'val\.csv: first line must be'):
      sources.get_source(f'mini-imagenet:{self.root}', 'valid')
    (self.root / 'test.csv').write_text('filename,label\nx.jpg\n')
    with self.assertRaisesRegex(ValueError, r'test\.csv:2: expected'):
      sources.get_source(f'mini-imagenet:{self.root}', 'test')
    with self.assertRaisesRegex(
        ValueError, r'mini-ImageNet not found .*'
        r'TINYTRAIN_ASSETS'):
      sources.get_source('mini-imagenet', 'test')


if __name__ == '__main__':
  absltest.main()
