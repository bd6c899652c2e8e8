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
from tinytrain_jax.models import init, model_spec


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


def _toy():
  """Hand-sized params: conv kernel, depthwise kernel, bias, classifier."""
  k = iter(jax.random.split(jax.random.PRNGKey(1), 4))
  return {'pw': jax.random.normal(next(k), (1, 1, 4, 3)),     # HWIO
          'dw': jax.random.normal(next(k), (3, 3, 1, 5)),
          'bias': jax.random.normal(next(k), (3,)),
          'cls': jax.random.normal(next(k), (4, 2))}


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
      new, _ = step(params, state,
                    mask_optax.channel_flags(m, params))
      moved = jax.tree.map(lambda a, b: np.asarray(a) != b, new, params)
      jax.tree.map(np.testing.assert_array_equal, moved,
                   masks.to_dense(m, params))

  def test_frozen_bit_identical_after_adam_steps(self):
    spec, params = _model()
    m = masks.mask_from_layers(spec, params, {40: [0, 2], 41: 'full'})
    # A -0.0 and a NaN gradient in frozen entries: p + 0.0 would flip the
    # sign bit, and a product-mask would let NaN through.
    params = dict(params, first_conv=dict(
        params['first_conv'], bias=-np.zeros_like(
            params['first_conv']['bias'])))
    rng = np.random.default_rng(2)
    grads = jax.tree.map(
        lambda p: rng.standard_normal(p.shape).astype(p.dtype), params)
    grads['first_conv']['kernel'][0] = np.nan
    # adamw adds the decay after Adam: only the zeroing after `tx` stops it.
    tx = mask_optax.dynamic_masked(optax.adamw(1e-2, weight_decay=0.1))
    new, state = _run(tx, params, mask_optax.channel_flags(m, params),
                      grads, steps=4)
    for path, old, upd, d in zip(
        masks._paths(params), jax.tree.leaves(params), jax.tree.leaves(new),
        jax.tree.leaves(masks.to_dense(m, params))):
      frozen = np.asarray(d) == 0
      np.testing.assert_array_equal(_bits(upd)[frozen], _bits(old)[frozen],
                                    path)
      self.assertTrue(np.all(np.asarray(upd)[~frozen] !=
                             np.asarray(old)[~frozen]), path)
    # Adam's moments of entries frozen since init never saw their (NaN)
    # gradient: the zeroing before `tx`.
    mu = optax.tree_utils.tree_get(state, 'mu')
    for path, v, d in zip(masks._paths(params), jax.tree.leaves(mu),
                          jax.tree.leaves(masks.to_dense(m, params))):
      self.assertEqual(float(np.abs(np.asarray(v))[d == 0].sum()), 0, path)

  def test_channel_vectors_broadcast_along_channel_axis(self):
    params = _toy()
    m = {'pw': np.array([False, True, False, True]),  # input channels (ax -2)
         'dw': np.array([True, False, False, False, True]),  # depthwise: -1
         'bias': np.array([False, False, True]),
         'cls': False}
    flags = mask_optax.channel_flags(m, params)
    self.assertEqual({k: v.shape for k, v in flags.items()},
                     {'pw': (4,), 'dw': (5,), 'bias': (3,), 'cls': (4,)})
    grads = jax.tree.map(jnp.ones_like, params)
    tx = mask_optax.dynamic_masked(optax.sgd(0.5))
    new, _ = _run(tx, params, flags, grads, steps=1)
    moved = {k: np.asarray(new[k] != params[k]) for k in params}
    np.testing.assert_array_equal(np.nonzero(moved['pw'][0, 0, :, 0])[0],
                                  [1, 3])
    self.assertTrue(np.all(moved['pw'][:, :, [1, 3], :]))
    np.testing.assert_array_equal(np.nonzero(moved['dw'][1, 2, 0])[0], [0, 4])
    self.assertTrue(np.all(moved['dw'][..., [0, 4]]))
    np.testing.assert_array_equal(moved['bias'], [False, False, True])
    self.assertFalse(moved['cls'].any())
    # The dense form (masks.to_dense) gives the same bits.
    dense, _ = _run(tx, params, masks.to_dense(m, params), grads, steps=1)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(_bits(a),
                                                            _bits(b)),
                 new, dense)

  def test_labels_with_multi_transform(self):
    params = _toy()
    m = {'pw': np.array([False, True, False, True]), 'dw': True,
         'bias': False, 'cls': False}
    labels = mask_optax.optax_labels(m, params)
    self.assertEqual(labels, {'pw': 'trainable', 'dw': 'trainable',
                              'bias': 'frozen', 'cls': 'frozen'})
    multi = optax.multi_transform(
        {'trainable': optax.adam(1e-2), 'frozen': optax.set_to_zero()},
        labels)
    grads = jax.tree.map(jnp.ones_like, params)
    # Labels alone: whole leaves; 'pw' moves in all its channels.
    alone, state = _run(multi, params, None, grads, steps=2)
    self.assertTrue(np.all(np.asarray(alone['pw'] != params['pw'])))
    self.assertEqual(alone['cls'].tolist(), params['cls'].tolist())
    adam_state = state.inner_states['trainable'].inner_state[0]
    self.assertIsInstance(adam_state.mu['cls'], optax.MaskedNode)
    # With the channel flags on top it equals dynamic_masked(adam).
    flags = mask_optax.channel_flags(m, params)
    both, _ = _run(mask_optax.dynamic_masked(multi), params, flags, grads, 2)
    ref, _ = _run(mask_optax.dynamic_masked(optax.adam(1e-2)), params, flags,
                  grads, 2)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(_bits(a),
                                                            _bits(b)),
                 both, ref)
    self.assertEqual(np.nonzero(np.asarray(
        both['pw'] != params['pw'])[0, 0, :, 0])[0].tolist(), [1, 3])

  def test_errors_name_the_leaf_and_the_fix(self):
    params = _toy()
    tx = mask_optax.dynamic_masked(optax.sgd(0.1))
    bad = dict(mask_optax.channel_flags(masks.full_mask(params), params),
               pw=np.ones((3,), bool))
    with self.assertRaisesRegex(
        ValueError, r"mask leaf \['pw'\] has shape \(3,\) .*\(1, 1, 4, 3\); "
        r'accepted shapes: \(\) or \(4,\) or \(1, 1, 4, 3\). Pass '
        r'channel_flags'):
      jax.jit(lambda g, s: tx.update(g, s, mask=bad))(params,
                                                      tx.init(params))
    with self.assertRaisesRegex(ValueError, 'mask structure does not match '
                                'the updates'):
      tx.update(params, tx.init(params), mask={'pw': True})
    with self.assertRaisesRegex(ValueError, 'structure does not match'):
      mask_optax.optax_labels({'pw': True}, params)


if __name__ == '__main__':
  absltest.main()
