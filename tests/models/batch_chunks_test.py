"""Chunked forward passes equal the whole-batch pass, forward and gradient."""
from unittest import mock

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax import models
from tinytrain_jax.models import batch_chunks


class ChunkSizeTest(parameterized.TestCase):

  @parameterized.parameters(
      # (n, bytes per image, budget, images per chunk)
      (100, 1, 1000, 100),  # fits: one chunk
      (100, 10, 100, 10),  # 1000 bytes over 100: 10 chunks of 10
      (100, 10, 150, 15),  # 7 chunks, the last one padded (105 rows)
      (7, 10, 30, 3),  # 3 chunks of 3, 2 rows padded
      (5, 1000, 10, 1),  # even one image is over budget: one per chunk
      (0, 10, 100, 1),
  )
  def test_chunk_size(self, n, per_image, budget, want):
    self.assertEqual(batch_chunks.chunk_size(n, per_image, budget), want)

  def test_one_chunk_off_the_cpu_backend(self):
    with mock.patch.object(jax, 'default_backend', return_value='gpu'):
      self.assertEqual(batch_chunks.chunk_size(100, 10, 100), 100)

  def test_image_bytes_counts_only_the_convs_that_run(self):
    spec = models.model_spec('mcunet-5fps', resolution=64)
    whole = batch_chunks.image_bytes(spec)
    late = batch_chunks.image_bytes(spec, len(spec.blocks) - 1)
    self.assertEqual(
        whole, 4 * max(max(c.input_elements, c.output_elements)
                       for c in spec.convs))
    self.assertLess(late, whole)


class OverChunksTest(absltest.TestCase):

  def test_padded_chunks_equal_the_batch_with_gradient(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (7, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    fn = lambda w, x: jnp.tanh(x @ w)
    whole = fn(w, x)
    for chunk in (1, 3, 7, 9):
      np.testing.assert_allclose(
          batch_chunks.over_chunks(lambda x: fn(w, x), x, chunk), whole,
          rtol=1e-6, atol=1e-6)
      # Padded rows get no gradient: the sums agree.
      loss = lambda w: jnp.sum(
          batch_chunks.over_chunks(lambda x: fn(w, x), x, chunk)**2)
      np.testing.assert_allclose(
          jax.grad(loss)(w), jax.grad(lambda w: jnp.sum(fn(w, x)**2))(w),
          rtol=1e-5, atol=1e-6)


class FeaturesTest(parameterized.TestCase):

  @parameterized.parameters(0, 5)
  def test_features_and_prefix_equal_the_whole_batch(self, start):
    spec = models.model_spec('mcunet-5fps', resolution=32)
    params, _ = models.init(spec, jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (5, 32, 32, 3), minval=-1)
    h = models.prefix(spec, params, x, start)
    ref = models.apply(spec, params, h, start_block=start).features
    per_image = batch_chunks.image_bytes(spec, start)
    # chunks of 2 (the last one padded) and of 1.
    for budget in (2 * per_image, per_image):
      got = jax.jit(lambda p, h, b=budget: models.features(
          spec, p, h, start_block=start, chunk_bytes=b))(params, h)
      np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # The prefix itself runs over chunks: force 2 images per chunk.
    with mock.patch.object(batch_chunks, 'CHUNK_BYTES',
                           2 * batch_chunks.image_bytes(spec)):
      np.testing.assert_allclose(models.prefix(spec, params, x, start), h,
                                 rtol=1e-5, atol=1e-5)
    # Continued from an earlier block's input (the Fisher pass's).
    if start > 1:
      mid = start // 2
      got = models.prefix(spec, params, models.prefix(spec, params, x, mid),
                          start, from_block=mid)
      np.testing.assert_allclose(got, h, rtol=1e-5, atol=1e-5)
    with self.assertRaisesRegex(ValueError, r'^from_block must be in \[0, '):
      models.prefix(spec, params, x, start, from_block=start + 1)

  def test_batchnorm_variant_uses_its_running_statistics(self):
    spec = models.model_spec('mcunet-5fps', resolution=32, batchnorm=True)
    params, state = models.init(spec, jax.random.PRNGKey(0))
    state = jax.tree.map(lambda v: v + 0.5, state)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    ref = models.apply(spec, params, x, state=state).features
    got = models.features(spec, params, x, state=state,
                          chunk_bytes=batch_chunks.image_bytes(spec))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


if __name__ == '__main__':
  absltest.main()
