"""Tests of the Meta-Dataset episode sampler on synthetic sources."""
import collections

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tinytrain_jax.data import sampler
from tinytrain_jax.data import sources


def make_source(sizes, groups=None, name='synthetic', split='test'):
  """An ArraySource with len(sizes) classes of 1x1 images (pixel = row id)."""
  total = int(sum(sizes))
  pixels = (np.arange(total) % 256).astype(np.uint8).reshape(total, 1, 1, 1)
  starts = np.concatenate([[0], np.cumsum(sizes)])
  return sources.ArraySource(
      name=name, split=split, classes=[f'c{i}' for i in range(len(sizes))],
      class_groups=groups, pixels=pixels, positions=[
          np.arange(starts[i], starts[i + 1]) for i in range(len(sizes))
      ])


def check_invariants(test, spec, source, cfg):
  w = spec.ways
  test.assertLen(set(spec.classes), w)
  test.assertBetween(w, cfg.min_ways,
                     min(cfg.max_ways_upper_bound, len(source.classes)))
  test.assertLen(spec.support_indices, w)
  test.assertLen(spec.query_indices, w)
  for c, s, q in zip(spec.classes, spec.support_indices, spec.query_indices):
    n = source.num_images(c)
    test.assertGreaterEqual(len(s), 1)
    test.assertEmpty(set(s) & set(q))
    test.assertLen(set(s) | set(q), len(s) + len(q))
    test.assertTrue(all(0 <= i < n for i in s + q))
  test.assertLessEqual(
      sum(len(s) for s in spec.support_indices), cfg.max_support_set_size)


class SamplerTest(parameterized.TestCase):

  def test_same_seed_same_episodes_different_seed_differs(self):
    src = make_source([30] * 40)
    cfg = sampler.SamplerConfig()
    a = sampler.sample_episodes(src, cfg, seed=3, n=20)
    b = sampler.sample_episodes(src, cfg, seed=3, n=20)
    c = sampler.sample_episodes(src, cfg, seed=4, n=20)
    self.assertEqual(a, b)
    self.assertEqual(repr(a).encode(), repr(b).encode())
    self.assertNotEqual(a, c)
    # Episode i does not depend on which other episodes were drawn.
    self.assertEqual(sampler.sample_episode(src, cfg, 3, 17), a[17])
    self.assertEqual(sampler.sample_episodes(src, cfg, 3, 5, start=15), a[15:])

  def test_sources_and_splits_get_independent_streams(self):
    cfg = sampler.SamplerConfig()
    a = sampler.sample_episodes(make_source([30] * 40, name='a'), cfg, 0, 5)
    b = sampler.sample_episodes(make_source([30] * 40, name='b'), cfg, 0, 5)
    c = sampler.sample_episodes(
        make_source([30] * 40, name='a', split='train'), cfg, 0, 5)
    self.assertNotEqual(a, b)
    self.assertNotEqual(a, c)

  def test_ways_uniform_over_range(self):
    k = 30
    src = make_source([20] * k)
    cfg = sampler.SamplerConfig()
    ways = [s.ways for s in sampler.sample_episodes(src, cfg, 0, 2600)]
    counts = collections.Counter(ways)
    self.assertEqual(sorted(counts), list(range(5, k + 1)))
    expected = len(ways) / (k - 4)
    chi2 = sum((counts[w] - expected)**2 / expected for w in counts)
    self.assertLess(chi2, 52.6)  # chi2(25 dof) at p = 0.001.

  def test_ways_capped_at_50(self):
    src = make_source([4] * 120)
    ways = [
        s.ways
        for s in sampler.sample_episodes(src, sampler.SamplerConfig(), 1, 400)
    ]
    self.assertEqual(max(ways), 50)
    self.assertEqual(min(ways), 5)

  @parameterized.named_parameters(
      ('omniglot_like', [20] * 50, 10),
      ('fungi_like', [6, 442, 30, 100, 7] + [50] * 20, None),
      ('tiny_classes', [3, 4, 5, 8, 9, 2, 7], None),
      ('large_classes', [3000] * 12, 10),
  )
  def test_invariants_and_query_rule(self, sizes, expected_q):
    src = make_source(sizes)
    cfg = sampler.SamplerConfig()
    for spec in sampler.sample_episodes(src, cfg, 0, 300):
      check_invariants(self, spec, src, cfg)
      n = [src.num_images(c) for c in spec.classes]
      q = min(10, min(x // 2 for x in n))
      if expected_q is not None:
        self.assertEqual(q, expected_q)
      self.assertEqual({len(x) for x in spec.query_indices}, {q})

  def test_support_size_matches_algorithm_bounds(self):
    # With n_c - q <= 100 the per-class cap of the support-set size is also a
    # cap on the shots of a class; total support never exceeds 500.
    src = make_source([110] * 60)
    cfg = sampler.SamplerConfig()
    sizes, maxshots = [], []
    for spec in sampler.sample_episodes(src, cfg, 0, 400):
      shots = [len(s) for s in spec.support_indices]
      sizes.append(sum(shots))
      maxshots.append(max(shots))
      # S <= sum_c floor(beta * min(100, n_c - q) + 1) <= 101 * W.
      self.assertLessEqual(sum(shots), 101 * spec.ways)
    self.assertLessEqual(max(sizes), 500)
    self.assertLessEqual(max(maxshots), 100)
    self.assertGreater(max(sizes), 400)  # beta near 1 reaches the cap.
    self.assertLess(min(sizes), 50)  # beta near 0 gives ~1 shot per class.

  def test_shots_follow_class_size_weights(self):
    # Big classes get more shots on average (w_c proportional to n_c).
    src = make_source([40] * 5 + [400] * 5)
    cfg = sampler.SamplerConfig(ways=10)
    small, big = [], []
    for spec in sampler.sample_episodes(src, cfg, 0, 300):
      for c, s in zip(spec.classes, spec.support_indices):
        (big if c >= 5 else small).append(len(s))
    self.assertGreater(np.mean(big), 3 * np.mean(small))

  def test_bilevel_ways_from_one_group(self):
    groups, sizes = [], []
    for g, n_chars in enumerate([3, 14, 26, 55, 20]):
      groups += [f'alphabet{g}'] * n_chars
      sizes += [20] * n_chars
    src = make_source(sizes, groups=groups)
    group_size = collections.Counter(groups)
    seen = set()
    for spec in sampler.sample_episodes(src, sampler.SamplerConfig(), 0, 300):
      g = {groups[c] for c in spec.classes}
      self.assertLen(g, 1)
      g = g.pop()
      seen.add(g)
      self.assertBetween(spec.ways, 5, min(50, group_size[g]))
    # The 3-character group is too small for 5 ways and never drawn.
    self.assertEqual(seen, {'alphabet1', 'alphabet2', 'alphabet3', 'alphabet4'})

  def test_bilevel_off_mixes_groups(self):
    groups = [f'g{i % 10}' for i in range(100)]
    src = make_source([20] * 100, groups=groups)
    cfg = sampler.SamplerConfig(bilevel=False)
    mixed = [
        len({groups[c]
             for c in s.classes}) > 1
        for s in sampler.sample_episodes(src, cfg, 0, 20)
    ]
    self.assertTrue(all(mixed))

  def test_images_shuffled_within_class(self):
    # Traffic-sign style: consecutive images are near-duplicates, so an
    # episode must not take a contiguous run of them.
    src = make_source([300] * 10)
    cfg = sampler.SamplerConfig(mode='fixed', shots=5, queries=10)
    runs, ordered = 0, 0
    for spec in sampler.sample_episodes(src, cfg, 0, 50):
      for s, q in zip(spec.support_indices, spec.query_indices):
        ids = list(s + q)
        runs += ids == list(range(ids[0], ids[0] + len(ids)))
        ordered += list(s) == sorted(s)
    self.assertEqual(runs, 0)
    self.assertLess(ordered, 10)  # 250 classes drawn; P(sorted) = 1/120.

  @parameterized.parameters((5, 1, 15), (5, 5, 15), (3, 2, 4))
  def test_fixed_mode_exact_counts(self, ways, shots, queries):
    src = make_source([20] * 12)
    cfg = sampler.SamplerConfig(mode='fixed', ways=ways, shots=shots,
                                queries=queries, min_ways=1)
    for spec in sampler.sample_episodes(src, cfg, 0, 20):
      self.assertEqual(spec.ways, ways)
      self.assertEqual({len(s) for s in spec.support_indices}, {shots})
      self.assertEqual({len(q) for q in spec.query_indices}, {queries})

  def test_fixed_defaults_are_5_5_15(self):
    cfg = sampler.SamplerConfig(mode='fixed').resolved()
    self.assertEqual((cfg.ways, cfg.shots, cfg.queries), (5, 5, 15))

  def test_error_too_few_classes(self):
    src = make_source([20] * 4, name='small')
    with self.assertRaisesRegex(ValueError, r"'small'.*4 classes.*5 ways"):
      sampler.sample_episode(src, sampler.SamplerConfig(), 0, 0)

  def test_error_class_with_too_few_images(self):
    src = make_source([20, 20, 20, 20, 1], name='s')
    with self.assertRaisesRegex(ValueError, r"class 'c4' of source 's' has 1"):
      sampler.sample_episode(src, sampler.SamplerConfig(), 0, 0)
    src = make_source([20] * 4 + [12], name='s')
    cfg = sampler.SamplerConfig(mode='fixed')
    with self.assertRaisesRegex(ValueError, r"class 'c4'.*12 images.*20"):
      sampler.sample_episode(src, cfg, 0, 0)

  def test_error_bad_config(self):
    with self.assertRaisesRegex(ValueError, 'mode'):
      sampler.SamplerConfig(mode='random')
    with self.assertRaisesRegex(ValueError, r'ways must be >= 1.*got 0'):
      sampler.SamplerConfig(ways=0)


if __name__ == '__main__':
  absltest.main()
