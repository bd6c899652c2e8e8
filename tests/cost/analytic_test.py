"""Tests for tinytrain_jax.cost.analytic (published integers, exact)."""
from absl.testing import absltest
from absl.testing import parameterized
import jax

from tinytrain_jax import masks
from tinytrain_jax.cost import analytic
from tinytrain_jax.cost import methods
from tinytrain_jax.masks import LayerUpdate
from tinytrain_jax.models import network
from tinytrain_jax.models.registry import model_spec

# (name, feature_mix, FullTrain 2x fwd, LastLayer, published FullTrain MB)
BACKBONES = (('mcunet-5fps', False, 44_907_008, 1_474_560,
              906), ('mbv2-w0.35', True, 34_899_456, 802_816, 1049),
             ('proxyless-w0.3', True, 38_419_456, 589_824, 857))


def _view(spec, method):
  return methods.method_layer_view(spec, method)


class BackwardMacsTest(parameterized.TestCase):

  @parameterized.parameters(*BACKBONES)
  def test_fulltrain_is_twice_forward(self, name, mix, full, last, _):
    spec = model_spec(name, feature_mix=mix)
    naive = analytic.backward_macs(spec, _view(spec, 'fulltrain'), True)
    self.assertEqual(naive.total_macs, full)
    self.assertEqual(naive.total_macs, 2 * spec.backbone_macs)
    needed = analytic.backward_macs(spec, _view(spec, 'fulltrain'))
    self.assertEqual(needed.total_macs, full - spec.convs[0].macs)
    self.assertEqual(needed.weight_grad_macs, spec.backbone_macs)

  @parameterized.parameters(*BACKBONES)
  def test_lastlayer(self, name, mix, full, last, _):
    spec = model_spec(name, feature_mix=mix)
    got = analytic.backward_macs(spec, _view(spec, 'lastlayer'))
    self.assertEqual((got.total_macs, got.input_grad_macs), (last, 0))

  def test_channel_fraction_and_input_grads(self):
    spec = model_spec('mcunet-5fps')
    view = analytic.as_layer_view(spec, {39: range(24), 41: 'bias'})
    got = analytic.backward_macs(spec, view)
    self.assertEqual(got.per_layer['blocks_13/pointwise1'], (884_736 // 4, 0))
    self.assertEqual(got.input_grad_macs, 82_944 + 1_474_560)
    self.assertEqual(got.weight_grad_macs, 884_736 // 4)

  def test_mask_and_layer_view_agree(self):
    spec = model_spec('mbv2-w0.35', feature_mix=True, num_classes=5)
    params = jax.eval_shape(
        lambda: network.init(spec, jax.random.PRNGKey(0)))[0]
    choice = {40: [0, 3, 7], 44: 'full', 47: 'bias'}
    mask = masks.mask_from_layers(spec, params, choice, train_classifier=True)
    view = analytic.as_layer_view(spec, choice, train_classifier=True)
    self.assertEqual(
        analytic.backward_macs(spec, mask), analytic.backward_macs(spec, view))
    self.assertEqual(
        analytic.backward_memory_bytes(spec, mask, 3),
        analytic.backward_memory_bytes(spec, view, 3))
    self.assertEqual(
        analytic.backward_macs(spec, view).per_layer['classifier'],
        (448 * 5, 448 * 5))

  def test_bad_layer_update_names_field(self):
    spec = model_spec('mcunet-5fps')
    with self.assertRaisesRegex(ValueError, 'n_channels=3, expected 576'):
      analytic.backward_macs(spec,
                             masks.LayerView({41: LayerUpdate((0,), 3, True)}))


class BackwardMemoryTest(absltest.TestCase):

  def test_lastlayer_by_hand(self):
    spec = model_spec('mcunet-5fps')
    got = analytic.backward_memory_bytes(spec, _view(spec, 'lastlayer'), 2)
    saved_input = 2 * 576 * 16 * 4  # f32 input of conv 41, batch 2
    self.assertEqual(got.saved_activation_bytes, saved_input)  # pw2: no ReLU
    self.assertEqual(got.param_bytes, (92_160 + 160) * 4)
    self.assertEqual(got.total_bytes, saved_input + 3 * got.param_bytes)

  def test_bias_only_keeps_no_conv_inputs(self):
    spec = model_spec('mcunet-5fps')
    got = analytic.backward_memory_bytes(spec, _view(spec, 'biasonly'))
    self.assertTrue(
        all(l.saved_input_bytes == 0 for l in got.per_layer.values()))
    relu_out = sum(
        c.output_elements for c in spec.convs if c.activation == 'relu6')
    self.assertEqual(got.saved_activation_bytes, relu_out // 8)  # 1-bit masks

  def test_classifier_only(self):
    spec = model_spec('mcunet-5fps', num_classes=10)
    view = analytic.as_layer_view(spec, {}, train_classifier=True)
    mem = analytic.backward_memory_bytes(spec, view, batch_size=4)
    self.assertEqual(mem.saved_activation_bytes, 4 * 160 * 4)
    self.assertEqual(mem.param_bytes, 161 * 10 * 4)
    macs = analytic.backward_macs(spec, view)
    self.assertEqual((macs.weight_grad_macs, macs.input_grad_macs), (1600, 0))

  def test_rejects_bad_batch(self):
    spec = model_spec('mcunet-5fps')
    with self.assertRaisesRegex(ValueError, 'batch_size must be >= 1, got 0'):
      analytic.backward_memory_bytes(spec, _view(spec, 'lastlayer'), 0)


class TinyTrainingModelTest(parameterized.TestCase):

  def test_448kb_breakdown(self):
    spec = model_spec('mcunet-5fps')
    layers = analytic.sparse_update_to_layers(spec, 12, range(30, 42), 1)
    got = analytic.tt_memory_breakdown(spec, layers)
    self.assertEqual(got.total_bits, 3_670_400)
    self.assertEqual(
        (got.input_bits // 8, got.weight_bits // 8, got.bias_bits // 8,
         got.mask_bits // 8, got.feature_bits // 8),
        (69_888, 365_616, 14_464, 8_672, 160))
    self.assertAlmostEqual(got.kb, 448.046875)
    self.assertAlmostEqual(
        analytic.sparse_update_memory_kb('mcunet-5fps', 12, list(range(30, 42)),
                                         [1.0] * 12), 448.046875)

  def test_sparseupdate_method_uses_the_searched_scheme(self):
    # The method's view is the scheme searched for this backbone (not the
    # published 448 KB one above); its cost is what the search recorded.
    spec = model_spec('mcunet-5fps')
    n_bias, idx, ratios = methods.sparse_update_scheme(spec)
    layers = analytic.sparse_update_to_layers(spec, n_bias, idx, ratios)
    view = _view(spec, 'sparseupdate')
    self.assertEqual(view, layers)
    stored = methods._load_schemes(str(methods.SCHEMES_PATH),
                                   0)['mcunet-5fps']['cost_at_128px']
    self.assertAlmostEqual(
        analytic.tt_memory_bits(spec, view) / 8 / 1024, stored['tt_memory_kb'])
    self.assertLess(analytic.tt_memory_bits(spec, view), 3_670_400)

  @parameterized.parameters((0.125, 72), (0.5, 288), (1, 576), (None, 576),
                            (10, 10))
  def test_ratio_keeps_first_channels(self, ratio, c):
    spec = model_spec('mcunet-5fps')
    layers = analytic.sparse_update_to_layers(spec, 1, '41', ratio)
    self.assertEqual(layers.layers[spec.conv(41).name].weight_channels,
                     tuple(range(c)))
    bits = 160 * 8 + 160 * 16 + 160 * 32 + 16 * c * 8 + 160 * c * 8
    self.assertEqual(analytic.tt_memory_bits(spec, layers), bits)

  def test_depthwise_counts_channels(self):
    spec = model_spec('mcunet-5fps')
    layers = analytic.sparse_update_to_layers(spec, 2, [40], 0.25)
    c = 144  # int(576 / 4); conv 40 is a 3x3 depthwise at 4x4
    bits = (160 * 8 + (160 + 576) * 16 + (160 + 576) * 32 + 16 * c * 8 +
            c * 9 * 8)
    self.assertEqual(analytic.tt_memory_bits(spec, layers), bits)

  def test_weight_outside_bias_range_raises(self):
    spec = model_spec('mcunet-5fps')
    with self.assertRaisesRegex(ValueError, 'manual_weight_idx 30 is not'):
      analytic.sparse_update_to_layers(spec, 4, [30], 1)
    with self.assertRaisesRegex(ValueError, 'weight_update_ratio has 1'):
      analytic.sparse_update_to_layers(spec, 4, [40, 41], [1.0])

  def test_package_alias(self):
    from tinytrain_jax import cost  # pylint: disable=g-import-not-at-top
    self.assertAlmostEqual(
        cost.sparse_update_memory_kb('mcunet-5fps', 12,
                                     '-'.join(map(str, range(30, 42))), 1),
        448.046875)


class FullTrainMemoryRelationTest(parameterized.TestCase):

  @parameterized.parameters(('mcunet-5fps', False, 2_347_264, 906),
                            ('mbv2-w0.35', True, 2_728_192, 1049),
                            ('proxyless-w0.3', True, 2_225_152, 857))
  def test_about_101_images(self, name, mix, s, mib):
    spec = model_spec(name, feature_mix=mix)
    self.assertEqual(analytic.fulltrain_saved_elements(spec), s)
    self.assertAlmostEqual(mib * 2**20 / (4 * s), 101.0, delta=0.3)


if __name__ == '__main__':
  absltest.main()
