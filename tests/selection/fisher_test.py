"""Tests for tinytrain_jax.selection.fisher (brute force, probes, scaling)."""
import types

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax.models import network
from tinytrain_jax.models import protonet
from tinytrain_jax.models.spec import BlockConfig, ModelSpec
from tinytrain_jax.selection import fisher

# Tiny backbone at 16 px; the last block is not residual (16 -> 24), so the
# pooled feature is the mean of the last conv's output.
TINY = ModelSpec('tiny',
                 (BlockConfig(16, 1, 3, 1, 8), BlockConfig(8, 3, 3, 2, 16),
                  BlockConfig(16, 2, 3, 1, 16), BlockConfig(16, 2, 3, 1, 24)),
                 resolution=16)


def tiny_episode(n=6, ways=3, pad=2, seed=0):
  rng = np.random.default_rng(seed)
  x = np.zeros((n + pad, 16, 16, 3), np.float32)
  x[:n] = rng.uniform(-1, 1, (n, 16, 16, 3))
  y = np.zeros((n + pad,), np.int32)
  y[:n] = np.arange(n) % ways
  valid = np.arange(n + pad) < n
  return types.SimpleNamespace(support_x=x, support_y=y, support_mask=valid,
                               way_mask=np.ones((ways,), bool))


def tiny_params():
  params, _ = network.init(TINY, jax.random.PRNGKey(0))
  # Non-zero biases so pre-activations are not symmetric around 0.
  return jax.tree.map(lambda p: p + 0.05 if p.ndim == 1 else p, params)


@jax.jit
def _grads_and_acts(params, ep):
  """Independent probe pass: (d loss / d probes, activations)."""
  head = protonet.init_head()
  zeros = lambda shape: jnp.zeros(shape, jnp.float32)
  b = ep['x'].shape[0]
  inp = {c.name: zeros((b, c.h_in, c.h_in, c.c_in)) for c in TINY.convs}
  out = {c.name: zeros((b, c.h_out, c.h_out, c.c_out)) for c in TINY.convs}

  def loss(probes):
    o = network.apply(TINY, params, ep['x'], in_probes=probes[0],
                      out_probes=probes[1], capture=True)
    return fisher.support_loss(head, o.features, ep['y'], ep['m'],
                               ep['w']), o.activations

  return jax.grad(loss, has_aux=True)((inp, out))


def _as_dict(ep):
  return {
      'x': ep.support_x,
      'y': ep.support_y,
      'm': ep.support_mask,
      'w': ep.way_mask
  }


class FisherPerChannelTest(absltest.TestCase):

  def test_matches_per_sample_loop(self):
    rng = np.random.default_rng(1)
    a, g = rng.normal(size=(2, 5, 3, 4, 7))
    valid = np.array([True, True, False, True, True])
    got = jax.jit(fisher.fisher_per_channel)(a, g, valid)
    want = np.zeros(7)
    for n in range(5):
      if valid[n]:
        s = np.einsum('hwc,hwc->c', a[n], g[n])
        want += s * s
    np.testing.assert_allclose(got, want / (2 * valid.sum()), rtol=1e-5)


class ComputeFisherTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.params = tiny_params()
    cls.ep = tiny_episode()
    cls.fs = fisher.compute_fisher(TINY, cls.params, cls.ep)

  def test_equals_brute_force(self):
    (g_in, g_out), acts = _grads_and_acts(self.params, _as_dict(self.ep))
    valid = self.ep.support_mask
    n_valid = valid.sum()
    for c in TINY.convs:
      for side, g, got in (('out', g_out, self.fs.out), ('in', g_in,
                                                         self.fs.inp)):
        a, gr = np.asarray(acts[c.name][side]), np.asarray(g[c.name])
        want = np.zeros(a.shape[-1])
        for n in np.flatnonzero(valid):  # explicit per-sample sums
          s = (a[n] * gr[n]).sum(axis=(0, 1))
          want += s * s
        want /= 2 * n_valid
        np.testing.assert_allclose(got[c.name], want, rtol=2e-4, atol=1e-12,
                                   err_msg=f'{c.name} {side}')
      self.assertAlmostEqual(self.fs.layer[c.name],
                             float(self.fs.out[c.name].sum()), places=6)
    self.assertEqual(self.fs.n_support, 6)
    self.assertGreater(sum(self.fs.layer.values()), 0)

  def test_probe_grads_equal_grads_of_exposed_intermediates(self):
    ep = _as_dict(self.ep)
    (g_in, g_out), acts = _grads_and_acts(self.params, ep)
    head = protonet.init_head()
    last = TINY.convs[-1].name

    # Exposed intermediate 1: the images (input of the stem).
    def from_images(x):
      f = network.apply(TINY, self.params, x).features
      return fisher.support_loss(head, f, ep['y'], ep['m'], ep['w'])

    # Exposed intermediate 2: the last conv's output (features = its mean).
    def from_last_out(y):
      return fisher.support_loss(head, jnp.mean(y, axis=(1, 2)), ep['y'],
                                 ep['m'], ep['w'])

    gx = jax.jit(jax.grad(from_images))(ep['x'])
    gy = jax.jit(jax.grad(from_last_out))(acts[last]['out'])
    np.testing.assert_allclose(g_in['first_conv'], gx, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g_out[last], gy, rtol=1e-4, atol=1e-7)
    self.assertGreater(float(jnp.abs(gy).max()), 0)

  def test_loss_scale_scales_by_square(self):
    fs3 = fisher.compute_fisher(TINY, self.params, self.ep, loss_scale=3.0)
    for c in TINY.convs:
      np.testing.assert_allclose(fs3.out[c.name], 9 * self.fs.out[c.name],
                                 rtol=1e-4, atol=1e-12)
      np.testing.assert_allclose(fs3.inp[c.name], 9 * self.fs.inp[c.name],
                                 rtol=1e-4, atol=1e-12)
    rank = lambda f: sorted(f.layer, key=f.layer.get)
    self.assertEqual(rank(fs3), rank(self.fs))

  def test_padding_rows_do_not_matter(self):
    unpadded = fisher.compute_fisher(TINY, self.params, tiny_episode(pad=0))
    for c in TINY.convs:
      np.testing.assert_allclose(unpadded.out[c.name], self.fs.out[c.name],
                                 rtol=1e-4, atol=1e-12)

  def test_deterministic(self):
    again = fisher.compute_fisher(TINY, self.params, self.ep)
    for c in TINY.convs:
      np.testing.assert_array_equal(again.inp[c.name], self.fs.inp[c.name])

  def test_device_images_give_the_same_scores(self):
    on_device = types.SimpleNamespace(
        **{**vars(self.ep), 'support_x': jnp.asarray(self.ep.support_x)})
    got = fisher.compute_fisher(TINY, self.params, on_device)
    for c in TINY.convs:
      np.testing.assert_array_equal(got.out[c.name], self.fs.out[c.name])
      np.testing.assert_array_equal(got.inp[c.name], self.fs.inp[c.name])

  def test_some_convs_equal_the_full_pass(self):
    names = [c.name for c in TINY.convs[5:]]
    part = fisher.compute_fisher(TINY, self.params, self.ep, convs=names)
    self.assertEqual(sorted(part.layer), sorted(names))
    self.assertEqual(sorted(part.out), sorted(names))
    for n in names:
      np.testing.assert_allclose(part.out[n], self.fs.out[n], rtol=1e-5,
                                 atol=1e-12, err_msg=n)
      np.testing.assert_allclose(part.inp[n], self.fs.inp[n], rtol=1e-5,
                                 atol=1e-12, err_msg=n)
    self.assertAlmostEqual(part.loss, self.fs.loss, places=6)
    with self.assertRaisesRegex(
        ValueError, r"^convs must name convs of tiny, got \['nope'\]"):
      fisher.compute_fisher(TINY, self.params, self.ep, convs=['nope'])

  def test_a_partial_pass_keeps_its_lowest_block_input(self):
    names = [c.name for c in TINY.convs[5:]]
    block = min(network.block_of(TINY, n) for n in names)
    self.assertGreater(block, 0)
    part = fisher.compute_fisher(TINY, self.params, self.ep, convs=names)
    self.assertEqual(part.block_input.block, block)
    want = network.prefix(TINY, self.params, self.ep.support_x, block)
    np.testing.assert_allclose(part.block_input.activation, want, rtol=1e-6,
                               atol=1e-6)
    # The whole pass starts at the images: nothing to keep.
    self.assertIsNone(self.fs.block_input)

  def test_errors(self):
    ep = tiny_episode()
    ep.support_x = ep.support_x[:, :8, :8]
    with self.assertRaisesRegex(ValueError, r'support_x must be .*16'):
      fisher.compute_fisher(TINY, self.params, ep)
    ep = tiny_episode()
    ep.support_mask = np.zeros_like(ep.support_mask)
    with self.assertRaisesRegex(ValueError, 'no valid support image'):
      fisher.compute_fisher(TINY, self.params, ep)
    ep = tiny_episode()
    ep.support_x[0, 0, 0, 0] = np.nan
    with self.assertRaisesRegex(ValueError, 'non-finite'):
      fisher.compute_fisher(TINY, self.params, ep)


if __name__ == '__main__':
  absltest.main()
