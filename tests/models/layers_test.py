"""The depthwise formulation and its hand-written VJP equal lax convs."""
from unittest import mock

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax.models import layers


def _data(k, stride, size, n=4, c=5, seed=0):
  kx, kw, kd = jax.random.split(jax.random.PRNGKey(seed + 31 * k + stride), 3)
  x = jax.random.normal(kx, (n, size, size, c))
  w = jax.random.normal(kw, (k, k, 1, c))
  ho = (size + 2 * (k // 2) - k) // stride + 1
  dy = jax.random.normal(kd, (n, ho, ho, c))
  return x, w, dy


class DepthwiseTest(parameterized.TestCase):

  @parameterized.product(k=(3, 5, 7), stride=(1, 2), size=(1, 4, 7, 8))
  def test_vjp_halves_match_lax(self, k, stride, size):
    x, w, dy = _data(k, stride, size)
    _, vjp = jax.vjp(lambda x, w: layers.conv_lax(x, w, stride, 5), x, w)
    dx_ref, dw_ref = vjp(dy)
    # Jitted: op-by-op eager dispatch compiled every op and was 3x slower.
    dx = jax.jit(layers.depthwise_input_grad,
                 static_argnums=(2, 3, 4))(dy, w, stride, size, size)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    # chunk sizes: whole batch, 2 chunks of 2, 4 chunks of 1.
    per_image = dy[0].size * 4
    kernel_grad = jax.jit(layers.depthwise_kernel_grad,
                          static_argnums=(2, 3, 4))
    for chunk in (1 << 30, 2 * per_image, per_image):
      dw = kernel_grad(x, dy, k, stride, chunk)
      np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-4)

  @parameterized.product(k=(3, 7), stride=(1, 2), size=(8, 9))
  def test_forward_and_grad_match_lax_under_jit(self, k, stride, size):
    x, w, _ = _data(k, stride, size)
    ref = jax.jit(layers.conv_lax, static_argnums=(2, 3))(x, w, stride, 5)
    got = jax.jit(layers.depthwise_shift, static_argnums=2)(x, w, stride)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    f = lambda fn: jax.jit(
        jax.grad(lambda x, w: jnp.sum(jnp.sin(fn(x, w))), (0, 1)))
    g_ref = f(lambda x, w: layers.conv_lax(x, w, stride, 5))(x, w)
    g_got = f(lambda x, w: layers.depthwise_shift(x, w, stride))(x, w)
    for a, b in zip(g_got, g_ref):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

  def test_frozen_kernel_drops_the_kernel_gradient(self):
    # A big batch forces the chunked scan; with the kernel frozen XLA must
    # remove it (the sparse fine-tune step relies on this).
    x, w, _ = _data(3, 1, 8, n=8)
    loss = lambda x, w: jnp.sum(layers.depthwise_shift(x, w, 1)**2)
    with mock.patch.object(layers, 'DW_GRAD_CHUNK_BYTES', 8 * 8 * 5 * 4):
      frozen = jax.jit(jax.grad(loss)).lower(x, w).compile().as_text()
      both = jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile().as_text()
    self.assertTrue('while' in both, 'the kernel gradient is not chunked')
    self.assertFalse('while' in frozen, 'frozen kernel still gets a gradient')

  def test_batch_chunk_is_largest_fitting_divisor(self):
    self.assertEqual(layers._batch_chunk(100, 10, 250), 25)  # pylint: disable=protected-access
    self.assertEqual(layers._batch_chunk(7, 10, 60), 1)  # pylint: disable=protected-access
    self.assertEqual(layers._batch_chunk(6, 10, 10**9), 6)  # pylint: disable=protected-access

  def test_stride_3_input_grad_raises(self):
    with self.assertRaisesRegex(ValueError, 'stride must be 1 or 2'):
      layers.depthwise_input_grad(
          jnp.zeros((1, 2, 2, 1)), jnp.zeros((3, 3, 1, 1)), 3, 6, 6)


class DepthwiseDenseTest(parameterized.TestCase):

  def test_tap_index_links_each_input_to_its_tap(self):
    # 3x3 stride 2 on 4x4 (2x2 out): output (0, 0) sees input rows/cols
    # -1..1, so input (0, 0) is its centre tap (4), input (1, 1) its last
    # (8) and input (2, 2) no tap of it; output (1, 1) sees rows 1..3.
    idx = layers._tap_index(4, 4, 3, 2)
    self.assertEqual(idx.shape, (16, 4))
    self.assertEqual(idx[0, 0], 4)
    self.assertEqual(idx[1 * 4 + 1, 0], 8)
    self.assertEqual(idx[2 * 4 + 2, 0], 9)  # k*k: no tap
    self.assertEqual(idx[1 * 4 + 1, 3], 0)  # top-left tap of output (1, 1)

  @parameterized.product(k=(3, 5, 7), stride=(1, 2), size=(1, 2, 4, 5, 8))
  def test_forward_and_gradients_match_lax(self, k, stride, size):
    x, w, dy = _data(k, stride, size)
    f = jax.jit(lambda x, w: jax.vjp(
        lambda x, w: layers.depthwise_dense(x, w, stride), x, w))
    y, vjp = f(x, w)
    y_ref, vjp_ref = jax.vjp(lambda x, w: layers.conv_lax(x, w, stride, 5), x,
                             w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(vjp(dy), vjp_ref(dy)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

  def test_conv_picks_it_on_small_maps_only(self):
    self.assertTrue(layers.dense_depthwise_wins(4, 4, 5, 1))
    self.assertTrue(layers.dense_depthwise_wins(8, 8, 7, 2))
    self.assertFalse(layers.dense_depthwise_wins(4, 4, 3, 1))
    self.assertFalse(layers.dense_depthwise_wins(8, 8, 7, 1))
    x, w, _ = _data(5, 1, 4)
    with mock.patch.object(layers, 'depthwise_shift') as shift:
      layers.conv(x, w, 1, True)
    shift.assert_not_called()


class ResolveImplTest(parameterized.TestCase):

  @parameterized.parameters(('fast', 'cpu', 'cpu'), ('fast', 'gpu', 'lax'),
                            ('fast', 'tpu', 'lax'), ('cpu', 'gpu', 'cpu'),
                            ('lax', 'cpu', 'lax'))
  def test_resolve(self, impl, backend, want):
    self.assertEqual(layers.resolve_impl(impl, backend), want)

  def test_fast_on_a_gpu_runs_lax(self):
    x, w, _ = _data(5, 1, 4)
    with mock.patch.object(jax, 'default_backend', return_value='gpu'), \
        mock.patch.object(layers, 'conv_lax', wraps=layers.conv_lax) as lax_conv:
      layers.conv(x, w, 1, True)
    lax_conv.assert_called_once()

  def test_unknown_impl_is_one_line(self):
    with self.assertRaisesRegex(ValueError, 'conv impl must be one of'):
      layers.resolve_impl('cudnn')


class DenseConvTest(parameterized.TestCase):

  @parameterized.product(k=(1, 3, 5), stride=(1, 2), size=(7, 8))
  def test_conv_dense_and_its_gradients_match_lax(self, k, stride, size):
    kx, kw = jax.random.split(jax.random.PRNGKey(k * 10 + stride))
    x = jax.random.normal(kx, (3, size, size, 4))
    w = jax.random.normal(kw, (k, k, 4, 6))
    ref = layers.conv_lax(x, w, stride)
    got = jax.jit(layers.conv_dense, static_argnums=2)(x, w, stride)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    g = lambda f: jax.jit(
        jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w, stride))), (0, 1)))(x, w)
    for a, b in zip(g(layers.conv_dense), g(layers.conv_lax)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # The kernel gradient in chunks of one image, and over the whole batch.
    dy = jax.random.normal(kx, ref.shape)
    want = jax.vjp(lambda w: layers.conv_lax(x, w, stride), w)[1](dy)[0]
    per_image = ref.shape[1] * ref.shape[2] * k * k * 4 * 4
    grad = jax.jit(layers.dense_kernel_grad, static_argnums=(2, 3, 4))
    for chunk in (per_image, 3 * per_image, 1 << 30):
      np.testing.assert_allclose(grad(x, dy, k, stride, chunk), want,
                                 rtol=1e-4, atol=1e-4)

  @parameterized.parameters(2, 4, 8, 16)
  def test_space_to_depth_equals_the_strided_conv(self, size):
    kx, kw = jax.random.split(jax.random.PRNGKey(size))
    x = jax.random.normal(kx, (2, size, size, 3))
    w = jax.random.normal(kw, (3, 3, 3, 5))
    np.testing.assert_allclose(
        jax.jit(layers.conv_space_to_depth)(x, w), layers.conv_lax(x, w, 2),
        rtol=1e-5, atol=1e-5)

  def test_scanned_kernel_gradient_is_a_matmul(self):
    # Inside a loop XLA CPU keeps a convolution's kernel gradient on its slow
    # generic path; conv_dense's has none (the stem's step: 2 s -> 82 ms).
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 8))

    def steps(conv):
      grad = jax.grad(lambda w: jnp.sum(conv(x, w, 2)**2))
      return jax.jit(lambda w: jax.lax.scan(
          lambda c, _: (c - 1e-3 * grad(c), None), w, None, length=3)[0])

    got, want = steps(layers.conv_dense), steps(layers.conv_lax)
    np.testing.assert_allclose(got(w), want(w), rtol=1e-5, atol=1e-5)
    hlo = got.lower(w).compile().as_text()
    body = hlo[hlo.index('while'):] if 'while' in hlo else hlo
    self.assertEqual(body.count('f01b_i01o->01bf'), 0)
    self.assertIn('f01b_i01o->01bf', want.lower(w).compile().as_text())


if __name__ == '__main__':
  absltest.main()
