"""Tests of padded episodes (bucketed static shapes, masks, labels)."""
from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tinytrain_jax.data import episodes
from tinytrain_jax.data import sampler
from tinytrain_jax.data import sources


def random_source(num_classes=12, per_class=30, size=10, channels=3):
  """ArraySource of random uint8 images."""
  rng = np.random.default_rng(0)
  n = num_classes * per_class
  pixels = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
  return sources.ArraySource(
      name='random', split='test',
      classes=[f'class{i}' for i in range(num_classes)], class_groups=None,
      pixels=pixels, positions=[
          np.arange(i * per_class, (i + 1) * per_class)
          for i in range(num_classes)
      ])


def masked_prototypes(x, y, mask, w_max):
  """f32[W_max, D] class means of the real rows (D = flattened image)."""
  flat = x.reshape(x.shape[0], -1) * mask[:, None]
  sums = np.zeros((w_max, flat.shape[1]))
  np.add.at(sums, y, flat)
  counts = np.bincount(y, weights=mask, minlength=w_max)
  return sums / np.maximum(counts, 1)[:, None]


class BucketTest(parameterized.TestCase):

  @parameterized.parameters((1, 8), (8, 8), (9, 16), (75, 128), (500, 512))
  def test_default_buckets(self, n, expected):
    self.assertEqual(
        episodes.bucket_size(n, episodes.DEFAULT_BUCKETS), expected)

  @parameterized.parameters((5, 5), (6, 10), (43, 50), (50, 50))
  def test_way_buckets(self, n, expected):
    self.assertEqual(
        episodes.bucket_size(n, episodes.DEFAULT_WAY_BUCKETS), expected)

  def test_none_means_exact(self):
    self.assertEqual(episodes.bucket_size(77, None), 77)

  def test_too_large_raises(self):
    with self.assertRaisesRegex(ValueError, r'size 600 exceeds.*buckets=None'):
      episodes.bucket_size(600, episodes.DEFAULT_BUCKETS)


class EpisodeTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.src = random_source()
    self.spec = sampler.sample_episode(self.src, sampler.SamplerConfig(),
                                       seed=0, index=2)

  def test_shapes_masks_and_labels(self):
    ep = episodes.make_episode(self.src, self.spec, resolution=16)
    stats = episodes.episode_stats(self.spec)
    s, q, w = stats['support_size'], stats['query_size'], stats['ways']
    s_max = episodes.bucket_size(s, episodes.DEFAULT_BUCKETS)
    q_max = episodes.bucket_size(q, episodes.DEFAULT_BUCKETS)
    self.assertEqual(ep.support_x.shape, (s_max, 16, 16, 3))
    self.assertEqual(ep.query_x.shape, (q_max, 16, 16, 3))
    self.assertEqual(ep.support_x.dtype, np.float32)
    self.assertEqual(ep.support_y.dtype, np.int32)
    self.assertEqual(int(ep.support_mask.sum()), s)
    self.assertEqual(int(ep.query_mask.sum()), q)
    self.assertEqual(ep.way_mask.shape,
                     (episodes.bucket_size(w, episodes.DEFAULT_WAY_BUCKETS),))
    self.assertEqual(int(ep.way_mask.sum()), w)
    self.assertEqual(ep.ways, w)
    self.assertEqual(ep.class_names,
                     tuple(self.src.classes[c] for c in self.spec.classes))
    np.testing.assert_array_equal(
        np.bincount(ep.support_y[ep.support_mask], minlength=w),
        stats['support_per_class'])
    np.testing.assert_array_equal(
        np.bincount(ep.query_y[ep.query_mask], minlength=w),
        stats['query_per_class'])
    self.assertTrue(np.all(ep.support_x[~ep.support_mask] == 0))
    self.assertTrue(np.all(ep.support_y[~ep.support_mask] == 0))
    self.assertLessEqual(ep.support_x.max(), 1.0)
    self.assertGreaterEqual(ep.support_x.min(), -1.0)

  def test_rows_hold_the_spec_images(self):
    ep = episodes.make_episode(self.src, self.spec, resolution=10)
    c0 = self.spec.classes[0]
    first = self.src.images(c0, self.spec.support_indices[0][:1])
    np.testing.assert_allclose(ep.support_x[0], first[0] / 127.5 - 1.0,
                               atol=1e-6)

  def test_padded_prototypes_equal_unpadded(self):
    padded = episodes.make_episode(self.src, self.spec, resolution=8)
    exact = episodes.make_episode(self.src, self.spec, resolution=8,
                                  buckets=None, way_buckets=None)
    self.assertTrue(exact.support_mask.all())
    w = self.spec.ways
    p_pad = masked_prototypes(padded.support_x, padded.support_y,
                              padded.support_mask, padded.way_mask.size)
    p_exact = masked_prototypes(exact.support_x, exact.support_y,
                                exact.support_mask, w)
    np.testing.assert_allclose(p_pad[:w], p_exact, atol=1e-6)
    self.assertTrue(np.all(p_pad[w:] == 0))

  def test_fixed_episode_exact_shapes(self):
    cfg = sampler.SamplerConfig(mode='fixed')
    spec = sampler.sample_episode(self.src, cfg, 0, 0)
    ep = episodes.make_episode(self.src, spec, 8, buckets=None,
                               way_buckets=None)
    self.assertEqual(ep.support_x.shape[0], 25)
    self.assertEqual(ep.query_x.shape[0], 75)
    self.assertEqual(ep.way_mask.shape, (5,))
    np.testing.assert_array_equal(ep.support_y, np.repeat(np.arange(5), 5))

  def test_evaluation_padding_keys_on_the_support_bucket(self):
    cfg = sampler.SamplerConfig(max_ways_upper_bound=12, max_num_query=4)
    pad = episodes.episode_padding(cfg)
    specs = sampler.sample_episodes(self.src, cfg, 0, 12)
    shapes = {episodes.bucket_shape(s, **pad) for s in specs}
    self.assertEqual({(q, w) for _, q, w in shapes}, {(48, 12)})
    ep = episodes.make_episode(self.src, specs[0], 8, **pad)
    self.assertEqual(ep.query_x.shape[0], 48)
    self.assertEqual(ep.way_mask.shape, (12,))
    self.assertEqual(int(ep.query_mask.sum()),
                     episodes.episode_stats(specs[0])['query_size'])
    self.assertEqual(
        episodes.episode_padding(sampler.SamplerConfig(mode='fixed')),
        dict(buckets=None, way_buckets=None, query_rows=None))

  def test_query_rows_too_small_is_one_line(self):
    q = episodes.episode_stats(self.spec)['query_size']
    with self.assertRaisesRegex(ValueError, f'{q} query images.*query_rows'):
      episodes.bucket_shape(self.spec, query_rows=q - 1)

  def test_same_seed_same_bytes(self):
    a = episodes.make_episode(self.src, self.spec, 8, augment=True, seed=5)
    b = episodes.make_episode(self.src, self.spec, 8, augment=True, seed=5)
    c = episodes.make_episode(self.src, self.spec, 8, augment=True, seed=6)
    self.assertEqual(a.support_x.tobytes(), b.support_x.tobytes())
    self.assertEqual(a.query_x.tobytes(), b.query_x.tobytes())
    self.assertNotEqual(a.support_x.tobytes(), c.support_x.tobytes())
    plain = episodes.make_episode(self.src, self.spec, 8)
    self.assertTrue(np.all(a.support_x[~a.support_mask] == 0))
    self.assertNotEqual(a.support_x.tobytes(), plain.support_x.tobytes())

  def test_episode_stats_with_names(self):
    stats = episodes.episode_stats(self.spec, self.src)
    self.assertEqual(stats['classes'],
                     [self.src.classes[c] for c in self.spec.classes])
    self.assertLen(stats['support_per_class'], stats['ways'])
    self.assertLen(stats['query_per_class'], stats['ways'])


if __name__ == '__main__':
  absltest.main()
