"""Fast conv formulations equal lax convs, forward and backward."""
import os

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax.models import apply, init, layers, model_spec


class LayersTest(parameterized.TestCase):

  def test_stride2_padding_is_symmetric(self):
    # k//2 on both sides: the first output of a stride-2 3x3 sees rows -1..1.
    x = jnp.zeros((1, 4, 4, 1)).at[0, 0, 0, 0].set(1.0)
    w = jnp.zeros((3, 3, 1, 1)).at[1, 1, 0, 0].set(1.0)
    y = layers.conv_lax(x, w, 2, 1)
    self.assertEqual(y.shape, (1, 2, 2, 1))
    self.assertEqual(float(y[0, 0, 0, 0]), 1.0)


class NetworkTest(parameterized.TestCase):

  # proxyless-w0.3's layer kinds are covered by mcunet (3/5/7 depthwise) and
  # mbv2 (feature mix), and it compiles slowest: opt-in.
  @parameterized.parameters(('mcunet-5fps', False), ('mbv2-w0.35', True),
                            ('proxyless-w0.3', True, True))
  def test_cpu_formulations_equal_lax_forward_and_grad(self, name, mix, slow=False):
    if slow and os.environ.get('TINYTRAIN_SLOW') != '1':
      self.skipTest('slow; run with TINYTRAIN_SLOW=1')
    spec = model_spec(name, resolution=32, feature_mix=mix, num_classes=5)
    params, _ = init(spec, jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3), minval=-1)

    def loss(p, impl):
      return jnp.sum(apply(spec, p, x, impl=impl).logits**2)

    fwd = jax.jit(lambda p, impl: apply(spec, p, x, impl=impl),
                  static_argnums=1)
    out_fast, out_lax = fwd(params, 'cpu'), fwd(params, 'lax')
    self.assertEqual(out_fast.features.shape, (2, spec.feature_dim))
    np.testing.assert_allclose(out_fast.logits, out_lax.logits, rtol=1e-4,
                               atol=1e-4)
    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g_fast, g_lax = grad(params, 'cpu'), grad(params, 'lax')
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4),
        g_fast, g_lax)

  def test_batchnorm_variant_updates_state(self):
    spec = model_spec('mcunet-5fps', resolution=32, batchnorm=True)
    params, state = init(spec, jax.random.PRNGKey(0))
    self.assertIn('scale', params['first_conv'])
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    fwd = jax.jit(lambda s, train: apply(spec, params, x, state=s, train=train),
                  static_argnums=1)
    out = fwd(state, True)
    self.assertFalse(np.allclose(out.state['first_conv']['mean'], 0.0))
    out_eval = fwd(state, False)
    jax.tree.map(np.testing.assert_array_equal, out_eval.state, state)

  def test_capture_and_probes(self):
    spec = model_spec('mcunet-5fps', resolution=32)
    params, _ = init(spec, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    out = jax.jit(lambda p: apply(spec, p, x, capture=True))(params)
    self.assertLen(out.activations, len(spec.convs))
    c = spec.conv(10)
    self.assertEqual(out.activations[c.name]['out'].shape,
                     (2, c.h_out, c.h_out, c.c_out))
    # d loss / d probe equals d loss / d (conv output) taken by hand.
    probe = jnp.zeros_like(out.activations[c.name]['out'])
    g = jax.jit(
        jax.grad(lambda p: jnp.sum(
            apply(spec, params, x, out_probes={
                c.name: p
            }).features**2)))(
                probe)
    self.assertGreater(float(jnp.abs(g).sum()), 0.0)

  def test_delta_equals_kernel_update(self):
    spec = model_spec('mcunet-5fps', resolution=32)
    params, _ = init(spec, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    for idx in (33, 34):  # pointwise (input channels) and depthwise
      c = spec.conv(idx)
      sel = jnp.array([1, 4, 7])
      kh = c.kernel
      dk = jax.random.normal(
          jax.random.PRNGKey(2), (kh, kh, 1, 3) if c.depthwise else
          (kh, kh, 3, c.c_out)) * 0.1
      fwd = jax.jit(lambda p, d: apply(spec, p, x, deltas=d).features)
      with_delta = fwd(params, {c.name: {'index': sel, 'kernel': dk}})
      top, blk = c.name.split('/')
      w = params[top][blk]['kernel']
      w = w.at[..., sel].add(dk) if c.depthwise else w.at[:, :, sel, :].add(dk)
      p2 = {
          **params, top: {
              **params[top], blk: {
                  **params[top][blk], 'kernel': w
              }
          }
      }
      np.testing.assert_allclose(with_delta, fwd(p2, {}), rtol=1e-5, atol=1e-5)

  def test_wrong_image_shape(self):
    spec = model_spec('mcunet-5fps', resolution=32)
    params, _ = init(spec, jax.random.PRNGKey(0))
    with self.assertRaisesRegex(ValueError, r'images must be f32\[B, 32, 32'):
      apply(spec, params, jnp.zeros((1, 64, 64, 3)))


if __name__ == '__main__':
  absltest.main()
