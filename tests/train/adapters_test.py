"""AdapterDrop and TinyTL branches: zero-init no-op, drop rule, costs."""
from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax import models
from tinytrain_jax.models import network
from tinytrain_jax.train import adapters
from tinytrain_jax.train import tinytl


def _images(res=32, n=2):
  return np.random.default_rng(0).uniform(-1, 1,
                                          (n, res, res, 3)).astype(np.float32)


class AdapterDropTest(parameterized.TestCase):

  @parameterized.parameters(0, 75)
  def test_zero_init_adapters_leave_output_unchanged(self, percent):
    spec, params = models.load_pretrained('mcunet-5fps', 32)
    x = _images()
    ad = adapters.init_adapters(spec, percent, jax.random.PRNGKey(1))
    with jax.disable_jit():  # eager: no compile, same ops
      got = adapters.features(spec, params, ad, x)
      want = network.apply(spec, params, x).features
    np.testing.assert_array_equal(got, want)

  def test_lowest_blocks_dropped(self):
    spec = models.model_spec('mcunet-5fps', 32)  # 14 blocks
    self.assertLen(spec.blocks, 14)
    self.assertEqual(
        [adapters.dropped_blocks(spec, p) for p in (0, 25, 50, 75)],
        [0, 3, 7, 10])
    self.assertEqual(adapters.adapter_blocks(spec, 75), [10, 11, 12, 13])
    with self.assertRaisesRegex(
        ValueError, r'drop_percent must be in \[0, '
        r'100\), got 100'):
      adapters.dropped_blocks(spec, 100)

  def test_costs_fall_as_more_adapters_drop(self):
    spec = models.model_spec('mcunet-5fps', 128)
    c = [adapters.adapter_costs(spec, p, 1) for p in (25, 50, 75)]
    self.assertGreater(c[0]['bwd_macs'], c[1]['bwd_macs'])
    self.assertGreater(c[1]['bwd_macs'], c[2]['bwd_macs'])
    self.assertGreater(c[0]['bwd_bytes'], c[2]['bwd_bytes'])
    # The gradient passes every conv above the lowest kept adapter.
    lowest = adapters.adapter_blocks(spec, 75)[0]
    above = sum(cv.macs
                for cv in spec.convs
                if cv.block is not None and cv.block > lowest)
    self.assertGreater(c[2]['bwd_macs'], above)
    self.assertLess(c[2]['bwd_macs'], 2 * above)
    big = adapters.adapter_costs(spec, 50, 10)
    self.assertEqual(big['bwd_macs'], c[1]['bwd_macs'])  # per sample
    self.assertGreater(big['bwd_bytes'], 5 * c[1]['bwd_bytes'] // 10)


class TinyTLBranchTest(absltest.TestCase):

  def test_zero_init_branches_leave_output_unchanged(self):
    spec, params = models.load_pretrained('mcunet-5fps', 32)
    x = _images()
    lite = tinytl.init_lite_residual(spec, 0)
    with jax.disable_jit():  # eager: no compile, same ops
      got = tinytl.features(spec, params, lite, x)
      want = network.apply(spec, params, x).features
    np.testing.assert_array_equal(got, want)

  def test_two_group_conv_equals_the_grouped_conv_with_its_gradients(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 9, 9, 8))
    w = jax.random.normal(jax.random.PRNGKey(1), (5, 5, 4, 6))
    for stride in (1, 2):

      def grouped(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), ((2, 2), (2, 2)),
            dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=2)

      def split(x, w):
        return tinytl._two_group_conv(x, w, stride)  # pylint: disable=protected-access

      np.testing.assert_allclose(split(x, w), grouped(x, w), rtol=1e-5,
                                 atol=1e-5)
      gs = jax.grad(lambda x, w: jnp.sum(jnp.sin(split(x, w))), (0, 1))(x, w)
      gg = jax.grad(lambda x, w: jnp.sum(jnp.sin(grouped(x, w))), (0, 1))(x, w)
      for a, b in zip(gs, gg):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

  def test_bilinear_upsample_equals_jax_image_resize(self):
    for p, h in ((16, 32), (4, 8), (3, 7), (2, 2), (1, 2), (5, 9)):
      y = jax.random.normal(jax.random.PRNGKey(p * h), (2, p, p, 3))
      want = jax.image.resize(y, (2, h, h, 3), 'bilinear')
      np.testing.assert_allclose(tinytl.bilinear_upsample(y, h), want,
                                 rtol=0, atol=1e-6)
      self.assertEqual(tinytl.upsample_weights(p, h).shape, (h, p))

  def test_branch_geometry_follows_tinytl(self):
    spec = models.model_spec('mcunet-5fps', 128)
    shapes = [tinytl.branch_shape(spec, b) for b in range(len(spec.blocks))]
    first, last = shapes[0], shapes[-1]
    self.assertEqual((first.pooled, first.kernel, first.global_pool),
                     (32, 5, False))
    self.assertEqual((last.pooled, last.kernel, last.global_pool),
                     (2, 1, False))
    self.assertTrue(all(s.c_mid % 8 == 0 for s in shapes))
    tiny = models.model_spec('mcunet-5fps', 32)
    self.assertTrue(tinytl.branch_shape(tiny, len(tiny.blocks) - 1).global_pool)

  def test_costs_at_one_batch(self):
    spec = models.model_spec('mcunet-5fps', 128)
    one, many = tinytl.tinytl_costs(spec, 1), tinytl.tinytl_costs(spec, 25)
    self.assertEqual(one['bwd_macs'], many['bwd_macs'])
    lc1, lc25 = tinytl.lite_costs(spec, 1), tinytl.lite_costs(spec, 25)
    self.assertEqual(lc25['saved_bytes'], 25 * lc1['saved_bytes'])
    # Everything but the parameter copies (weight, grad, momentum: 12 bytes
    # each) scales with the batch (up to one byte of 1-bit-mask rounding per
    # conv and image).
    fixed = 12 * one['n_trained']
    self.assertLessEqual(
        abs((many['bwd_bytes'] - fixed) - 25 * (one['bwd_bytes'] - fixed)),
        25 * len(spec.convs))


if __name__ == '__main__':
  absltest.main()
