"""mask_optax: the mask as jit data (one trace), exact freezing, labels."""
import functools

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinytrain_jax import mask_optax
from tinytrain_jax import masks
from tinytrain_jax import tree_paths
from tinytrain_jax.models import BlockConfig, ModelSpec, init, model_spec


@functools.lru_cache(None)
def _model():
  """32 px mcunet-5fps with random numpy params (shapes via eval_shape).

  Numpy, not a jitted init: that compile alone takes ~35 s on 2 CPU cores,
  and host-side checks on numpy leaves compile nothing.
  """
  spec = model_spec('mcunet-5fps', resolution=32)
  shapes = jax.eval_shape(lambda: init(spec, jax.random.PRNGKey(0))[0])
  rng = np.random.default_rng(0)
  return spec, jax.tree.map(
      lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


TOY = ModelSpec('toy', (BlockConfig(4, 1, 3, 1, 3),), resolution=8,
                stem_channels=4, num_classes=2)
PW, DW = 'blocks_0/pointwise2', 'blocks_0/depthwise'


def _toy():
  """Hand-sized params: stem, depthwise (3,3,1,4), pointwise (1,1,4,3),
  classifier (3,2)."""
  return init(TOY, jax.random.PRNGKey(1))[0]


def _toy_mask(pw=False, dw=False, bias=False):
  """Mask of _toy(): pointwise2 kernel, depthwise kernel, pointwise2 bias."""
  m = masks.full_mask(_toy(), False)
  m['blocks_0']['pointwise2']['kernel'] = pw
  m['blocks_0']['depthwise']['kernel'] = dw
  m['blocks_0']['pointwise2']['bias'] = bias
  return m


def _leaf(tree, name, leaf='kernel'):
  return np.asarray(tree_paths.get(tree, f'{name}/{leaf}'))


def _bits(x):
  return np.asarray(x).view(np.uint32)


def _run(tx, params, flags, grads, steps):
  """`steps` jitted updates with constant `grads` (mask=flags unless None)."""

  @jax.jit
  def step(p, state, flags):
    kw = {} if flags is None else {'mask': flags}
    upd, state = tx.update(grads, state, p, **kw)
    return optax.apply_updates(p, upd), state

  state = jax.jit(tx.init)(params)
  for _ in range(steps):
    params, state = step(params, state, flags)
  return params, state


class MaskOptaxTest(absltest.TestCase):

  def test_one_trace_serves_two_masks(self):
    spec, params = _model()
    m1 = masks.mask_from_layers(spec, params, {40: [0, 2], 41: 'full'})
    m2 = masks.mask_from_layers(spec, params, {39: 'full', 41: [5]})
    tx = mask_optax.dynamic_masked(optax.adam(1e-2))
    grads = jax.tree.map(np.ones_like, params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, state, flags):
      upd, state = tx.update(grads, state, p, mask=flags)
      return optax.apply_updates(p, upd), state

    state = jax.jit(tx.init)(params)
    for m in (m1, m2):
      new, _ = step(params, state, mask_optax.channel_flags(m, params, spec))
      moved = jax.tree.map(lambda a, b: np.asarray(a) != b, new, params)
      jax.tree.map(np.testing.assert_array_equal, moved,
                   masks.to_dense(m, params, spec))

  def test_frozen_bit_identical_after_adam_steps(self):
    spec, params = _model()
    m = masks.mask_from_layers(spec, params, {40: [0, 2], 41: 'full'})
    # A -0.0 and a NaN gradient in frozen entries: p + 0.0 would flip the
    # sign bit, and a product-mask would let NaN through.
    params = dict(
        params,
        first_conv=dict(params['first_conv'],
                        bias=-np.zeros_like(params['first_conv']['bias'])))
    rng = np.random.default_rng(2)
    grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(p.dtype),
                         params)
    grads['first_conv']['kernel'][0] = np.nan
    # adamw adds the decay after Adam: only the zeroing after `tx` stops it.
    tx = mask_optax.dynamic_masked(optax.adamw(1e-2, weight_decay=0.1))
    new, state = _run(tx, params, mask_optax.channel_flags(m, params, spec),
                      grads, steps=4)
    for path, old, upd, d in zip(
        tree_paths.leaf_paths(params), jax.tree.leaves(params),
        jax.tree.leaves(new), jax.tree.leaves(masks.to_dense(m, params, spec))):
      frozen = np.asarray(d) == 0
      np.testing.assert_array_equal(
          _bits(upd)[frozen],
          _bits(old)[frozen], path)
      self.assertTrue(
          np.all(np.asarray(upd)[~frozen] != np.asarray(old)[~frozen]), path)
    # Adam's moments of entries frozen since init never saw their (NaN)
    # gradient: the zeroing before `tx`.
    mu = optax.tree_utils.tree_get(state, 'mu')
    for path, v, d in zip(
        tree_paths.leaf_paths(params), jax.tree.leaves(mu),
        jax.tree.leaves(masks.to_dense(m, params, spec))):
      self.assertEqual(float(np.abs(np.asarray(v))[d == 0].sum()), 0, path)

  def test_channel_vectors_broadcast_along_the_specs_channel_axis(self):
    params, spec = _toy(), TOY
    m = _toy_mask(
        pw=np.array([False, True, False, True]),  # C_in (ax -2)
        dw=np.array([True, False, False, True]),  # channels (-1)
        bias=np.array([False, False, True]))
    flags = mask_optax.channel_flags(m, params, spec)
    self.assertEqual(tree_paths.get(flags, PW)['kernel'].shape, (1, 1, 4, 1))
    self.assertEqual(tree_paths.get(flags, DW)['kernel'].shape, (1, 1, 1, 4))
    self.assertEqual(tree_paths.get(flags, PW)['bias'].shape, (3,))
    self.assertEqual(flags['classifier']['kernel'].shape, (1, 1))
    # Same shapes for any mask: one compile serves all.
    other = mask_optax.channel_flags(_toy_mask(pw=True), params, spec)
    self.assertEqual(
        jax.tree.map(np.shape, other), jax.tree.map(np.shape, flags))
    grads = jax.tree.map(jnp.ones_like, params)
    tx = mask_optax.dynamic_masked(optax.sgd(0.5))
    new, _ = _run(tx, params, flags, grads, steps=1)
    moved = jax.tree.map(lambda a, b: np.asarray(a != b), new, params)
    np.testing.assert_array_equal(
        np.nonzero(_leaf(moved, PW)[0, 0, :, 0])[0], [1, 3])
    self.assertTrue(np.all(_leaf(moved, PW)[:, :, [1, 3], :]))
    np.testing.assert_array_equal(
        np.nonzero(_leaf(moved, DW)[1, 2, 0])[0], [0, 3])
    self.assertTrue(np.all(_leaf(moved, DW)[..., [0, 3]]))
    np.testing.assert_array_equal(
        _leaf(moved, PW, 'bias'), [False, False, True])
    self.assertFalse(moved['classifier']['kernel'].any())
    # The dense form (masks.to_dense) gives the same bits.
    dense, _ = _run(tx, params, masks.to_dense(m, params, spec), grads, 1)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(_bits(a), _bits(b)),
                 new, dense)

  def test_labels_with_multi_transform(self):
    params, spec = _toy(), TOY
    m = _toy_mask(pw=np.array([False, True, False, True]), dw=True)
    labels = mask_optax.optax_labels(m, params, spec)
    self.assertEqual(
        tree_paths.get(labels, PW), {
            'kernel': 'trainable',
            'bias': 'frozen'
        })
    self.assertEqual(tree_paths.get(labels, DW)['kernel'], 'trainable')
    self.assertEqual(labels['classifier']['kernel'], 'frozen')
    multi = optax.multi_transform(
        {
            'trainable': optax.adam(1e-2),
            'frozen': optax.set_to_zero()
        }, labels)
    grads = jax.tree.map(jnp.ones_like, params)
    # Labels alone: whole leaves; the pointwise kernel moves in all channels.
    alone, state = _run(multi, params, None, grads, steps=2)
    self.assertTrue(np.all(_leaf(alone, PW) != _leaf(params, PW)))
    np.testing.assert_array_equal(alone['classifier']['kernel'],
                                  params['classifier']['kernel'])
    adam_state = state.inner_states['trainable'].inner_state[0]
    self.assertIsInstance(adam_state.mu['classifier']['kernel'],
                          optax.MaskedNode)
    # With the channel flags on top it equals dynamic_masked(adam).
    flags = mask_optax.channel_flags(m, params, spec)
    both, _ = _run(mask_optax.dynamic_masked(multi), params, flags, grads, 2)
    ref, _ = _run(
        mask_optax.dynamic_masked(optax.adam(1e-2)), params, flags, grads, 2)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(_bits(a), _bits(b)),
                 both, ref)
    self.assertEqual(
        np.nonzero((_leaf(both, PW)
                    != _leaf(params, PW))[0, 0, :, 0])[0].tolist(), [1, 3])

  def test_errors_name_the_leaf_and_the_fix(self):
    params, spec = _toy(), TOY
    tx = mask_optax.dynamic_masked(optax.sgd(0.1))
    bad = mask_optax.channel_flags(masks.full_mask(params), params, spec)
    bad = tree_paths.replace(bad, f'{PW}/kernel', np.ones((4,), bool))
    with self.assertRaisesRegex(
        ValueError, r"mask leaf \['blocks_0'\]\['pointwise2'\]\['kernel'\] "
        r'has shape \(4,\) .*\(1, 1, 4, 3\); accepted: \(\), a shape that '
        r'broadcasts to it with the same rank, or the shape itself. Pass '
        r'channel_flags'):
      jax.jit(lambda g, s: tx.update(g, s, mask=bad))(params, tx.init(params))
    with self.assertRaisesRegex(ValueError, 'mask structure does not match '
                                'the updates'):
      tx.update(params, tx.init(params), mask={'pw': True})
    with self.assertRaisesRegex(ValueError, 'structure does not match'):
      mask_optax.optax_labels({'pw': True}, params, spec)


if __name__ == '__main__':
  absltest.main()
