"""Tests of resizing / scaling and of the P>M>F batch augmentation."""
from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from tinytrain_jax.data.preprocess import augment
from tinytrain_jax.data.preprocess import augment_jax
from tinytrain_jax.data.preprocess import preprocess


class PreprocessTest(parameterized.TestCase):

  @parameterized.parameters((1, 105, 32), (3, 32, 32), (3, 20, 48))
  def test_shape_dtype_range(self, channels, size, resolution):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, size, size, channels), dtype=np.uint8)
    y = preprocess(x, resolution)
    self.assertEqual(y.shape, (4, resolution, resolution, 3))
    self.assertEqual(y.dtype, np.float32)
    self.assertGreaterEqual(y.min(), -1.0)
    self.assertLessEqual(y.max(), 1.0)

  def test_scaling_and_polarity(self):
    # Omniglot polarity is kept: white paper (255) -> +1, ink (0) -> -1.
    x = np.full((1, 4, 4, 1), 255, np.uint8)
    x[0, 0, 0, 0] = 0
    y = preprocess(x, 4)
    self.assertEqual(y[0, 1, 1, 0], 1.0)
    np.testing.assert_array_equal(y[0, 0, 0], [-1.0, -1.0, -1.0])

  def test_grayscale_replicated(self):
    x = np.random.default_rng(1).integers(0, 256, (2, 9, 9, 1), np.uint8)
    y = preprocess(x, 16)
    np.testing.assert_array_equal(y[..., 0], y[..., 1])
    np.testing.assert_array_equal(y[..., 0], y[..., 2])

  def test_constant_image_stays_constant(self):
    x = np.full((1, 105, 105, 3), 200, np.uint8)
    np.testing.assert_allclose(preprocess(x, 128), 200 / 127.5 - 1, atol=1e-6)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, r'uint8\[n, H, W, 1 or 3\]'):
      preprocess(np.zeros((2, 8, 8, 3), np.float32), 8)
    with self.assertRaisesRegex(ValueError, 'resolution must be >= 1'):
      preprocess(np.zeros((2, 8, 8, 3), np.uint8), 0)


class AugmentTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.x = rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)

  def test_deterministic_given_seed(self):
    a = augment(self.x, np.random.default_rng(7))
    b = augment(self.x, np.random.default_rng(7))
    c = augment(self.x, np.random.default_rng(8))
    self.assertEqual(a.tobytes(), b.tobytes())
    self.assertNotEqual(a.tobytes(), c.tobytes())
    self.assertEqual(a.shape, self.x.shape)
    self.assertEqual(a.dtype, np.float32)
    self.assertGreaterEqual(a.min(), -1.0)
    self.assertLessEqual(a.max(), 1.0)

  def test_applies_with_probability_0_9(self):
    changed = [
        not np.array_equal(augment(self.x, seed), self.x) for seed in range(60)
    ]
    self.assertBetween(np.mean(changed), 0.75, 0.99)

  def test_translation_zero_pads(self):
    # Constant batch: colour ops keep each image constant (> 0), so zeros can
    # only come from translation, and then fill whole edge rows / columns.
    x = np.ones((64, 32, 32, 3), np.float32)
    key = next(
        k for k in (jax.random.key(i) for i in range(20))
        if not np.array_equal(np.asarray(augment_jax(x, k)), x))
    y = np.asarray(augment_jax(x, key))
    zero_edge = [
        any(np.all(e == 0)
            for e in (img[0], img[-1], img[:, 0], img[:, -1]))
        for img in y
    ]
    self.assertGreater(np.mean(zero_edge), 0.8)  # P(no shift) = 1/81.
    for img in y:
      self.assertLessEqual(np.unique(img).size, 2)  # Constant + zero pad.
      self.assertTrue(np.all(img[8:24, 8:24] > 0))  # Shift <= 4 px.

  def test_jittable(self):
    y = jax.jit(augment_jax)(self.x, jax.random.key(0))
    self.assertEqual(y.shape, self.x.shape)


if __name__ == '__main__':
  absltest.main()
