"""Published parameter and MAC counts, computed from our block tables."""
from absl.testing import absltest, parameterized

from tinytrain_jax.models import model_spec


class PublishedCountsTest(parameterized.TestCase):

  @parameterized.parameters(
      # name, mix, convs, fwd conv MACs @128, BN-folded backbone params
      ('mcunet-5fps', False, 42, 22_453_504, 469_224),
      ('mbv2-w0.35', False, 51, 16_646_912, 244_448),
      ('proxyless-w0.3', False, 60, 18_619_904, 326_232),
      ('mbv2-w0.35', True, 52, 16_646_912 + 802_816, 295_072),
      ('proxyless-w0.3', True, 61, 18_619_904 + 589_824, 363_480),
  )
  def test_backbone_at_128(self, name, mix, n_convs, macs, params):
    spec = model_spec(name, feature_mix=mix)
    self.assertLen(spec.convs, n_convs)
    self.assertEqual(spec.backbone_macs, macs)
    self.assertEqual(spec.backbone_params, params)

  @parameterized.parameters(
      # Zoo table: MACs (M) and params (M) with a 1000-class head; the zoo
      # counts BN weight+bias (2/channel) where folding leaves 1 bias/channel,
      # so folded params sit 5.8k-6.2k below the table (docs/reference/backbones.md §5).
      ('mcunet-5fps', False, 96, 12_790_096, 630_224, 12.8, 0.64),
      ('mbv2-w0.35', True, 144, 23_499_152, 744_072, 23.5, 0.75),
      ('proxyless-w0.3', True, 176, 38_282_216, 748_480, 38.3, 0.75),
  )
  def test_zoo_resolution(self, name, mix, res, macs, params, zoo_mmacs,
                          zoo_mparams):
    spec = model_spec(name, resolution=res, feature_mix=mix, num_classes=1000)
    self.assertEqual(spec.total_macs, macs)
    self.assertEqual(spec.total_params, params)
    self.assertEqual(round(spec.total_macs / 1e6, 1), zoo_mmacs)
    bn_extra = sum(c.c_out for c in spec.convs)  # BN has scale AND shift
    self.assertEqual(
        round((spec.total_params + bn_extra) / 1e6, 2), zoo_mparams)

  def test_mcunet_per_conv_table(self):
    spec = model_spec('mcunet-5fps')
    # docs/reference/backbones.md §4 rows (spot checks incl. stride-2 7x7 and the last conv).
    rows = {
        0: (432, 1_769_472),
        10: (2352, 602_112),
        31: (11760, 188_160),
        41: (92160, 1_474_560)
    }
    for idx, (w, m) in rows.items():
      c = spec.conv(idx)
      self.assertEqual((c.n_weights, c.macs), (w, m), c.name)
    self.assertEqual(spec.conv(41).name, 'blocks_13/pointwise2')
    self.assertEqual(spec.conv('blocks_0/depthwise').index, 1)

  def test_mix_layer_index_and_normalisers(self):
    mb = model_spec('mbv2-w0.35', feature_mix=True)
    px = model_spec('proxyless-w0.3', feature_mix=True)
    self.assertEqual(mb.conv(51).name, 'feature_mix')
    self.assertEqual(px.conv(60).name, 'feature_mix')
    self.assertEqual(max(c.n_weights for c in mb.convs), 50_176)
    self.assertEqual(max(c.n_weights for c in px.convs), 36_864)
    self.assertEqual(max(c.macs for c in mb.convs), 1_769_472)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, 'unknown model .*accepted'):
      model_spec('resnet50')
    with self.assertRaisesRegex(ValueError, 'no feature-mix'):
      model_spec('mcunet-5fps', feature_mix=True)
    with self.assertRaisesRegex(ValueError, 'resolution must be'):
      model_spec('mcunet-5fps', resolution=16)
    with self.assertRaisesRegex(ValueError, 'out of range'):
      model_spec('mcunet-5fps').conv(42)

  def test_spec_is_hashable(self):
    self.assertEqual(
        hash(model_spec('mcunet-5fps')), hash(model_spec('mcunet-in1')))


if __name__ == '__main__':
  absltest.main()
