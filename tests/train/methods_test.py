"""Method registry: masks of the baselines, errors, TinyTrain (if present)."""
import functools

from absl.testing import absltest
import jax
import numpy as np
import pytest

from tinytrain_jax import data
from tinytrain_jax import masks
from tinytrain_jax import models
from tinytrain_jax.cost import methods as cost_methods
from tinytrain_jax.models import network
from tinytrain_jax.models import protonet
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import methods


@functools.lru_cache(None)
def _shapes(name='mcunet-5fps', mix=False):
  spec = models.model_spec(name, 32, mix)
  return spec, jax.eval_shape(
      lambda: network.init(spec, jax.random.PRNGKey(0)))[0]


def _model_and_episode(ways, shots, queries):
  """Pretrained mcunet-5fps at 32 px and Omniglot test episode 0."""
  spec, params = models.load_pretrained('mcunet-5fps', 32)
  src = data.get_source('omniglot', 'test')
  es = data.sample_episode(
      src, data.SamplerConfig(mode='fixed', ways=ways, shots=shots,
                              queries=queries), 0, 0)
  return spec, params, data.make_episode(src, es, 32, buckets=None,
                                         way_buckets=None)


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
    last = masks.layer_updates(
        spec, methods.method_mask('lastlayer', spec, params, None))
    self.assertEqual(list(last), ['blocks_13/pointwise2'])
    self.assertEqual(len(last['blocks_13/pointwise2'].weight_channels), 576)
    spec_mix, params_mix = _shapes('mbv2-w0.35', True)
    last = masks.layer_updates(
        spec_mix, methods.method_mask('lastlayer', spec_mix, params_mix, None))
    self.assertEqual(list(last), ['feature_mix'])
    bias = masks.layer_updates(
        spec, methods.method_mask('biasonly', spec, params, None))
    self.assertLen(bias, len(spec.convs))
    self.assertFalse(any(u.trains_weight for u in bias.values()))

  def test_sparseupdate_is_the_cached_scheme(self):
    spec, params = _shapes()
    n_bias, idx, ratios = cost_methods.sparse_update_scheme(spec)
    ups = masks.layer_updates(
        spec, methods.method_mask('sparseupdate', spec, params, None))
    self.assertLen(ups, n_bias)
    self.assertEqual(
        min(spec.conv(n).index for n in ups),
        len(spec.convs) - n_bias)
    w = {
        spec.conv(n).index: len(u.weight_channels)
        for n, u in ups.items()
        if u.trains_weight
    }
    self.assertEqual(sorted(w), sorted(idx))
    for i, r in zip(idx, ratios):
      c = spec.convs[i]
      self.assertEqual(w[i], int((c.c_out if c.depthwise else c.c_in) * r))

  def test_module_methods_have_no_mask(self):
    spec, params = _shapes()
    for name in ('tinytl', 'transductive', 'adapterdrop_50'):
      with self.assertRaisesRegex(ValueError, 'trains extra modules'):
        methods.method_mask(name, spec, params, None)

  def test_tinytrain_if_selection_available(self):
    try:
      from tinytrain_jax import selection  # pylint: disable=g-import-not-at-top
      selection.select  # pylint: disable=pointless-statement
    except (ImportError, AttributeError):
      self.skipTest('tinytrain_jax.selection not available')
    spec, params, ep = _model_and_episode(3, 1, 1)
    mask = methods.method_mask('tinytrain', spec, params, ep)
    masks.check_mask(mask, params, spec)
    self.assertGreater(masks.count_trained(mask, params, spec), 0)
    self.assertLess(
        masks.count_trained(mask, params, spec),
        sum(np.size(x) for x in jax.tree.leaves(params)))


class VariantTest(absltest.TestCase):

  def test_variant_names_parse_to_selection_settings(self):
    self.assertEqual(
        methods.parse_variant('tinytrain:potential=inp:layer_order=fisher'),
        {'potential': 'inp', 'layer_order': 'fisher'})
    self.assertEqual(
        methods.parse_variant('tinytrain:ratios=1/0.5:candidates=4:'
                              'stop_at_first_misfit=true'),
        {'ratios': (1.0, 0.5), 'candidates': 4, 'stop_at_first_misfit': True})
    m = methods.get_method('tinytrain:ratios=any')
    self.assertEqual((m.name, m.start), ('tinytrain:ratios=any', 'metatrained'))

  def test_bad_variant_names_get_one_line(self):
    for name, regex in (('tinytrain:foo=1', "bad setting 'foo=1'.*potential"),
                        ('tinytrain:potential', "bad setting 'potential'"),
                        ('tinytrain:potential=grad', 'potential must be one'),
                        ('tinytrain:candidates=x', 'bad value for candidates'),
                        ('tinytrain:budget=0', 'bad value for budget.*> 0'),
                        ('fulltrain:ratios=any', 'only tinytrain takes')):
      with self.assertRaisesRegex(ValueError, regex):
        methods.get_method(name) if name.startswith('tinytrain') else (
            methods.parse_variant(name))

  def test_variant_selects_like_its_config(self):
    spec, params, ep = _model_and_episode(3, 1, 1)
    budgets = methods.tinytrain_budgets(spec)
    from tinytrain_jax import selection  # pylint: disable=g-import-not-at-top
    for name, cfg in (
        ('tinytrain:potential=inp:layer_order=fisher',
         selection.SelectionConfig(*budgets, potential='inp',
                                   layer_order='fisher')),
        ('tinytrain:budget=4',
         selection.SelectionConfig(4 * budgets[0], 4 * budgets[1]))):
      want = selection.select(spec, params, ep, cfg).mask
      got = methods.method_mask(name, spec, params, ep, budgets=budgets)
      self.assertTrue(
          all(
              jax.tree.leaves(
                  jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), got,
                               want))), name)
    self.assertEqual(methods.parse_variant('tinytrain:budget=4'),
                     {'budget': 4.0})


class CostsTest(absltest.TestCase):

  def test_every_method_reports_the_launcher_costs(self):
    """run_method's cost columns == experiments.cost's report, per method."""
    spec, params, ep = _model_and_episode(2, 2, 3)
    cfg = ft.FinetuneConfig(steps=0)
    for m in methods.STATIC_COST_METHODS:
      # steps=0: no training, one compiled forward per method (eager op-by-op
      # dispatch was 3x slower here).
      r = methods.run_method(m, spec, params, protonet.init_head(), ep, cfg)
      rep = methods.cost_report('mcunet-5fps', m, 32, False, batch_size=4,
                                query_size=6)
      self.assertEqual((r['bwd_macs'], r['bwd_bytes']),
                       (rep['bwd_macs'], rep['bwd_bytes']), m)
      if rep['measured'] is not None:  # the jaxpr-derived step agrees
        self.assertEqual(rep['measured']['analytic']['fp32_total_bytes'],
                         rep['bwd_bytes'], m)
    self.assertEqual(
        methods.cost_report('mcunet-5fps', 'transductive', 32, batch_size=4,
                            query_size=6)['cost_batch'], 10)

  def test_published_scale_costs(self):
    spec = models.model_spec('mcunet-5fps', 128)
    full = methods.method_costs('fulltrain', spec, 1)
    self.assertEqual(full['bwd_macs'], 43_137_536)  # §2 rule, stem skipped
    tl = methods.method_costs('tinytl', spec, 1)
    bias = methods.method_costs('biasonly', spec, 1)
    self.assertGreater(tl['bwd_macs'], bias['bwd_macs'])
    self.assertLess(tl['bwd_macs'], full['bwd_macs'])
    with self.assertRaisesRegex(ValueError, 'selects per task'):
      methods.method_costs('tinytrain', spec, 1)
    with self.assertRaisesRegex(ValueError, 'selects per task'):
      methods.cost_report('mcunet-5fps', 'tinytrain')


class TinyTLTest(absltest.TestCase):

  @pytest.mark.slow  # compiles the TinyTL step (minutes on a loaded CPU)
  def test_run_trains_branches_and_biases(self):
    spec, params, ep = _model_and_episode(3, 1, 1)
    res = methods.run_method('tinytl', spec, params, protonet.init_head(), ep,
                             ft.FinetuneConfig(steps=2, lr=1e-2))
    self.assertTrue(np.isfinite(res['final_support_loss']))
    self.assertGreater(res['bwd_macs'], 0)


if __name__ == '__main__':
  absltest.main()
