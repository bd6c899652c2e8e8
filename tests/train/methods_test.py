"""Method registry: masks of the baselines, errors, TinyTrain (if present)."""
import functools

from absl.testing import absltest
import jax
import numpy as np

from tinytrain_jax import data
from tinytrain_jax import masks
from tinytrain_jax import models
from tinytrain_jax.models import network
from tinytrain_jax.train import methods


@functools.lru_cache(None)
def _shapes(name='mcunet-5fps', mix=False):
  spec = models.model_spec(name, 32, mix)
  return spec, jax.eval_shape(lambda: network.init(spec,
                                                   jax.random.PRNGKey(0)))[0]


class MethodsTest(absltest.TestCase):

  def test_unknown_method_lists_accepted(self):
    spec, params = _shapes()
    with self.assertRaisesRegex(ValueError, "unknown method 'foo'.*lastlayer"):
      methods.method_mask('foo', spec, params, None)

  def test_static_masks(self):
    spec, params = _shapes()
    self.assertIsNone(methods.method_mask('none', spec, params, None))
    full = methods.method_mask('fulltrain', spec, params, None)
    self.assertTrue(all(jax.tree.leaves(full)))
    last = masks.layer_updates(spec, methods.method_mask('lastlayer', spec,
                                                         params, None))
    self.assertEqual(list(last), ['blocks_13/pointwise2'])
    self.assertEqual(len(last['blocks_13/pointwise2'].weight_channels), 576)
    spec_mix, params_mix = _shapes('mbv2-w0.35', True)
    last = masks.layer_updates(spec_mix, methods.method_mask(
        'lastlayer', spec_mix, params_mix, None))
    self.assertEqual(list(last), ['feature_mix'])
    bias = masks.layer_updates(spec, methods.method_mask('biasonly', spec,
                                                         params, None))
    self.assertLen(bias, len(spec.convs))
    self.assertFalse(any(u.trains_weight for u in bias.values()))

  def test_sparseupdate_scheme(self):
    spec, params = _shapes()
    ups = masks.layer_updates(spec, methods.method_mask('sparseupdate', spec,
                                                        params, None))
    self.assertLen(ups, 20)  # biases of the last 20 convs
    self.assertEqual(min(spec.conv(n).index for n in ups), 22)
    w = {n: len(u.weight_channels) for n, u in ups.items() if u.trains_weight}
    self.assertEqual(w, {'blocks_13/pointwise2': 576,
                         'blocks_13/pointwise1': 96,
                         'blocks_12/pointwise2': 192,
                         'blocks_12/pointwise1': 48})

  def test_tinytrain_if_selection_available(self):
    try:
      from tinytrain_jax import selection  # pylint: disable=g-import-not-at-top
      selection.select  # pylint: disable=pointless-statement
    except (ImportError, AttributeError):
      self.skipTest('tinytrain_jax.selection not available')
    spec, params = models.load_pretrained('mcunet-5fps', 32)
    src = data.get_source('omniglot', 'test')
    es = data.sample_episode(src, data.SamplerConfig(mode='fixed', ways=3,
                                                     shots=1, queries=1), 0, 0)
    ep = data.make_episode(src, es, 32, buckets=None, way_buckets=None)
    mask = methods.method_mask('tinytrain', spec, params, ep)
    masks.check_mask(mask, params)
    self.assertGreater(masks.count_trained(mask, params), 0)
    self.assertLess(masks.count_trained(mask, params),
                    sum(np.size(x) for x in jax.tree.leaves(params)))


class TinyTLTest(absltest.TestCase):

  def test_branches_start_as_no_op_and_train(self):
    from tinytrain_jax.train import finetune as ft  # pylint: disable=g-import-not-at-top
    from tinytrain_jax.train import tinytl  # pylint: disable=g-import-not-at-top
    spec, params = models.load_pretrained('mcunet-5fps', 32)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(
        np.float32)
    lite = tinytl.init_lite_residual(spec, jax.random.PRNGKey(0))
    f = jax.jit(lambda p, l, x: tinytl.features(spec, p, l, x))
    np.testing.assert_allclose(f(params, lite, x),
                               network.apply(spec, params, x).features,
                               rtol=1e-4, atol=1e-5)
    src = data.get_source('omniglot', 'test')
    es = data.sample_episode(src, data.SamplerConfig(mode='fixed', ways=3,
                                                     shots=1, queries=1), 0, 0)
    ep = data.make_episode(src, es, 32, buckets=None, way_buckets=None)
    res = methods.run_method('tinytl', spec, params,
                             models.protonet.init_head(), ep,
                             ft.FinetuneConfig(steps=2, lr=1e-2))
    self.assertTrue(np.isfinite(res['final_support_loss']))
    self.assertGreater(res['bwd_macs'], 0)


if __name__ == '__main__':
  absltest.main()
