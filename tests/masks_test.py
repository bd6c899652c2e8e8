"""Mask pytrees: golden dense masks, save/load, errors.

The optax wrapping (dynamic_masked, optax_labels) is in mask_optax_test.py.
"""
import functools
import json
import os
import tempfile

from absl.testing import absltest
import jax
import numpy as np

from tinytrain_jax import masks
from tinytrain_jax.models import BlockConfig, ModelSpec, init, model_spec


@functools.lru_cache(None)
def _model():
  spec = model_spec('mcunet-5fps', resolution=32)
  return spec, jax.jit(init, static_argnums=0)(spec, jax.random.PRNGKey(0))[0]


class MasksTest(absltest.TestCase):

  def test_golden_dense_mask_input_channels_and_depthwise(self):
    spec, params = _model()
    m = masks.mask_from_layers(spec, params, {
        39: [1, 3],
        40: [0, 2],
        41: 'bias'
    })
    self.assertEqual(jax.tree.structure(m), jax.tree.structure(params))
    d = masks.to_dense(m, params, spec)
    pw1 = np.asarray(d['blocks_13']['pointwise1']['kernel'])  # [1,1,96,576]
    self.assertEqual(pw1[0, 0, :, 0].nonzero()[0].tolist(), [1, 3])
    self.assertTrue(np.all(pw1[0, 0, 1, :] == 1))
    dw = np.asarray(d['blocks_13']['depthwise']['kernel'])  # [3,3,1,576]
    self.assertEqual(dw[0, 0, 0, :].nonzero()[0].tolist(), [0, 2])
    self.assertEqual(float(d['blocks_13']['pointwise2']['kernel'].sum()), 0)
    self.assertTrue(np.all(np.asarray(d['blocks_13']['pointwise2']['bias'])))
    self.assertEqual(
        masks.count_trained(m, params, spec), 2 * 576 + 576 + 2 * 9 + 576 + 160)
    ups = masks.layer_updates(spec, m)
    self.assertEqual(ups['blocks_13/depthwise'],
                     masks.LayerUpdate((0, 2), 576, True))
    self.assertFalse(ups['blocks_13/pointwise2'].trains_weight)

  def test_save_load_round_trip_and_errors(self):
    spec, params = _model()
    m = masks.mask_from_layers(spec, params, {5: [0, 7], 41: 'full'})
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, 'mask.json')
      masks.save_mask(path, m, {'model': spec.name})
      back = masks.load_mask(path, params, spec)
      jax.tree.map(np.testing.assert_array_equal, back, m)
      other = jax.eval_shape(lambda: init(
          model_spec('mbv2-w0.35', resolution=32), jax.random.PRNGKey(0))[0])
      with self.assertRaisesRegex(ValueError, 'does not match the params'):
        masks.load_mask(path, other, spec)
    with self.assertRaisesRegex(ValueError, 'structure does not match'):
      masks.check_mask({'a': True}, params, spec)
    bad = masks.full_mask(params)
    bad['first_conv']['kernel'] = np.ones((5,), bool)
    with self.assertRaisesRegex(ValueError, '5 channel flags'):
      masks.check_mask(bad, params, spec)
    with self.assertRaisesRegex(ValueError, 'out of range'):
      masks.mask_from_layers(spec, params, {0: [3]})

  def test_load_is_strict_about_types_and_ranges(self):
    spec, params = _model()
    m = masks.mask_from_layers(spec, params, {5: [0, 7], 41: 'full'})
    good = {'mask': masks.mask_to_json(m)}
    key = next(k for k, v in good['mask'].items() if isinstance(v, dict))
    n = good['mask'][key]['of']
    cases = {
        'negative': ({
            'channels': [-1],
            'of': n
        }, r'channel -1 .*0\.\.'),
        'too_large': ({
            'channels': [n],
            'of': n
        }, f'channel {n} .*0\\.\\.'
                      f'{n - 1}'),
        'null': ({
            'channels': [None],
            'of': n
        }, 'channel null'),
        'string': ({
            'channels': ['yes'],
            'of': n
        }, 'channel "yes"'),
        'bool_channel': ({
            'channels': [True],
            'of': n
        }, 'channel true'),
        'float': ({
            'channels': [1.0],
            'of': n
        }, 'channel 1.0'),
        'repeated': ({
            'channels': [1, 1],
            'of': n
        }, 'repeated channel'),
        'wrong_of': ({
            'channels': [1],
            'of': n + 1
        }, f'"of": {n + 1}; '
                     f'accepted: {n}'),
        'leaf_null': (None, 'is null; accepted: true, false'),
        'leaf_string': ('yes', 'is "yes"; accepted: true, false'),
        'leaf_int': (1, 'is 1; accepted: true, false'),
    }
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, 'mask.json')
      for name, (value, regex) in cases.items():
        with self.subTest(name):
          blob = {'mask': dict(good['mask'], **{key: value})}
          with open(path, 'w') as f:
            f.write(json.dumps(blob))
          with self.assertRaisesRegex(
              ValueError, f'mask file {path}: key {key!r} .*{regex}'):
            masks.load_mask(path, params, spec)
      with open(path, 'w') as f:
        f.write('[1, 2]')
      with self.assertRaisesRegex(ValueError, 'no "mask" object'):
        masks.load_mask(path, params, spec)

  def test_channel_axis_comes_from_the_conv_spec(self):
    # A dense 1x1 conv with one input channel has a kernel (1, 1, 1, C) like
    # a depthwise one; only the spec can tell them apart.
    spec = ModelSpec('one_in', (BlockConfig(1, 4, 3, 1, 8),), resolution=8,
                     stem_channels=1)
    params = init(spec, jax.random.PRNGKey(0))[0]
    axes = masks.channel_axes(spec, params)
    self.assertEqual(params['blocks_0']['pointwise1']['kernel'].shape,
                     (1, 1, 1, 4))
    self.assertEqual(axes['blocks_0/pointwise1/kernel'], 2)  # C_in = 1
    self.assertEqual(axes['blocks_0/depthwise/kernel'], 3)  # channels
    self.assertEqual(axes['blocks_0/pointwise1/bias'], 0)
    self.assertEqual(spec.conv('blocks_0/pointwise1').mask_channels, 1)
    ok = masks.mask_from_layers(spec, params, {'blocks_0/depthwise': [1]})
    d = masks.to_dense(ok, params, spec)['blocks_0']['depthwise']['kernel']
    self.assertEqual(d[0, 0, 0].tolist(), [0, 1, 0, 0])
    bad = masks.full_mask(params)
    bad['blocks_0']['pointwise1']['kernel'] = np.ones((4,), bool)
    with self.assertRaisesRegex(ValueError, '4 channel flags'):
      masks.check_mask(bad, params, spec)

  def test_layer_view_is_a_named_type_shared_with_masks(self):
    spec, params = _model()
    choice = {39: [1, 3], 40: 'full', 41: 'bias'}
    view = masks.as_layer_view(spec, choice, train_classifier=False)
    self.assertIsInstance(view, masks.LayerView)
    mask = masks.mask_from_layers(spec, params, choice)
    self.assertEqual(masks.layer_view(spec, mask), masks.layer_view(spec, view))
    jax.tree.map(np.testing.assert_array_equal,
                 masks.mask_from_view(spec, params, view), mask)
    with self.assertRaisesRegex(ValueError, 'not a mask; build a LayerView'):
      masks.layer_view(spec, dict(view.layers))


if __name__ == '__main__':
  absltest.main()
