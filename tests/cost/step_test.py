"""Tests for the jaxpr-derived step cost (tracing only, nothing compiled)."""
from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
from jax import lax

from tinytrain_jax.cost import analytic
from tinytrain_jax.cost import jaxpr_walk
from tinytrain_jax.cost import methods
from tinytrain_jax.cost import step
from tinytrain_jax.models import network
from tinytrain_jax.models.registry import model_spec
from tinytrain_jax.models.spec import BlockConfig
from tinytrain_jax.models.spec import ModelSpec

# stem 3x3/2 -> dw 3x3 -> pw2 1x1 (3 convs) at 32 px.
TOY = ModelSpec('toy', (BlockConfig(16, 1, 3, 1, 8),), resolution=32)


def _shapes(spec):
  return jax.eval_shape(lambda: network.init(spec, jax.random.PRNGKey(0)))[0]


def _analyze(spec, choice, batch=2, cls=False, flag=False):
  view = analytic.as_layer_view(spec, choice, cls)
  return step.analyze_training_step(spec, _shapes(spec), view, batch, flag)


class ToyTest(parameterized.TestCase):

  def test_top_conv_only_one_weight_grad(self):
    layers = {l['name']: l for l in _analyze(TOY, {2: 'full'}).layers}
    self.assertEqual(sum(l['n_weight_grad_ops'] for l in layers.values()), 1)
    self.assertEqual(sum(l['n_input_grad_ops'] for l in layers.values()), 0)
    self.assertEqual(layers['blocks_0/pointwise2']['bwd_weight_grad_macs'],
                     TOY.convs[2].macs)

  def test_bottom_conv_adds_input_grads_above(self):
    cost = _analyze(TOY, {0: 'full'})
    layers = {l['name']: l for l in cost.layers}
    self.assertEqual(layers['first_conv']['n_weight_grad_ops'], 1)
    self.assertEqual(layers['first_conv']['n_input_grad_ops'], 0)
    for name in ('blocks_0/depthwise', 'blocks_0/pointwise2'):
      self.assertEqual(layers[name]['n_input_grad_ops'], 1)
      self.assertEqual(layers[name]['bwd_input_grad_macs'], TOY.conv(name).macs)
    self.assertEqual(
        cost.bwd_macs,
        analytic.backward_macs(TOY,
                               analytic.as_layer_view(TOY,
                                                      {0: 'full'})).total_macs)

  def test_stride2_input_grad_undoes_lhs_dilation(self):

    def f(w1, w2, x):
      dn = ('NHWC', 'HWIO', 'NHWC')
      y = lax.conv_general_dilated(x, w1, (1, 1), 'SAME', dimension_numbers=dn)
      with jax.named_scope('top'):
        y = lax.conv_general_dilated(y, lax.stop_gradient(w2), (2, 2),
                                     ((1, 1), (1, 1)), dimension_numbers=dn)
      return jnp.sum(y)

    args = (jnp.zeros((3, 3, 4, 8)), jnp.zeros(
        (3, 3, 8, 16)), jnp.zeros((1, 16, 16, 4)))
    ops = jaxpr_walk.count_macs(
        jax.make_jaxpr(jax.grad(f))(*args), [(3, 3, 4, 8)])
    top = [o for o in ops if o.layer == 'top']
    self.assertEqual([o.role for o in top], ['fwd', 'igrad'])
    self.assertEqual(top[1].params['lhs_dilation'], (2, 2))
    self.assertEqual(top[0].macs, top[1].macs)  # 8*8*16*9*8


class BackboneCrossCheckTest(parameterized.TestCase):

  def test_fulltrain_mcunet(self):
    spec = model_spec('mcunet-5fps')
    view = methods.method_layer_view(spec, 'fulltrain')
    params = _shapes(spec)
    cost = step.analyze_training_step(spec, params, view, 1)
    self.assertEqual(cost.fwd_macs, 22_453_504)
    self.assertEqual(cost.bwd_macs, 43_137_536)
    self.assertEqual(cost.bwd_macs,
                     analytic.backward_macs(spec, view).total_macs)
    naive = step.analyze_training_step(spec, params, view, 1, True)
    self.assertEqual(naive.bwd_macs, 44_907_008)
    mem = analytic.backward_memory_bytes(spec, view)
    self.assertEqual(cost.saved_conv_input_bytes,
                     sum(l.saved_input_bytes for l in mem.per_layer.values()))

  @parameterized.parameters(('mbv2-w0.35', 34_899_456, 802_816),
                            ('proxyless-w0.3', 38_419_456, 589_824))
  def test_mix_backbones(self, name, full, last):
    spec = model_spec(name, feature_mix=True)
    params = _shapes(spec)
    for method, want in (('fulltrain', full), ('lastlayer', last)):
      view = methods.method_layer_view(spec, method)
      cost = step.analyze_training_step(spec, params, view, 1,
                                        methods.PUBLISHED_CONVENTION[method])
      self.assertEqual(cost.bwd_macs, want, method)

  @parameterized.parameters('lastlayer', 'biasonly', 'sparseupdate')
  def test_methods_match_analytic(self, method):
    spec = model_spec('mcunet-5fps')
    view = methods.method_layer_view(spec, method)
    cost = step.analyze_training_step(spec, _shapes(spec), view, 2)
    want = analytic.backward_macs(spec, view)
    # A channel-sparse kernel trains through a delta on the gathered input
    # channels, whose input gradient the traced step also computes: r · MACs
    # per such conv above the lowest updated one (the analytic rule counts an
    # ideal kernel that folds the delta in).
    ups = view.layers
    lmin = min(spec.conv(k).index for k in ups)
    delta_igrad = sum(
        spec.conv(k).macs * len(u.weight_channels) // u.n_channels
        for k, u in ups.items()
        if 0 < len(u.weight_channels) < u.n_channels and
        spec.conv(k).index > lmin)
    self.assertEqual(
        (cost.bwd_weight_grad_macs, cost.bwd_input_grad_macs),
        (want.weight_grad_macs, want.input_grad_macs + delta_igrad))
    mem = analytic.backward_memory_bytes(spec, view, batch_size=2)
    self.assertEqual(cost.saved_conv_input_bytes,
                     sum(l.saved_input_bytes for l in mem.per_layer.values()))

  def test_bias_only_saves_no_conv_input(self):
    spec = model_spec('mcunet-5fps')
    cost = step.analyze_training_step(
        spec, _shapes(spec), methods.method_layer_view(spec, 'biasonly'), 2)
    self.assertEqual(cost.saved_conv_input_bytes, 0)
    self.assertEqual(cost.bwd_weight_grad_macs, 0)

  def test_classifier_only(self):
    spec = model_spec('mcunet-5fps', num_classes=5)
    cost = _analyze(spec, {}, batch=3, cls=True)
    self.assertEqual((cost.bwd_weight_grad_macs, cost.bwd_input_grad_macs),
                     (160 * 5, 0))
    self.assertEqual(cost.saved_bytes, 3 * 160 * 4)  # the pooled feature
    self.assertEqual(cost.param_bytes, 161 * 5 * 4)

  @parameterized.parameters(1, 96, 192, 384)
  def test_channel_sparse_weight_grad_scales(self, k):
    spec = model_spec('mcunet-5fps')
    choice = {38: range(k), 39: 'full'}  # sparse layer is the lowest one
    cost = _analyze(spec, choice, batch=1)
    layers = {l['name']: l for l in cost.layers}
    self.assertEqual(layers['blocks_12/pointwise2']['bwd_weight_grad_macs'],
                     589_824 * k // 384)
    want = analytic.backward_macs(spec, analytic.as_layer_view(spec, choice))
    self.assertEqual(cost.bwd_macs, want.total_macs)
    self.assertEqual(layers['blocks_12/pointwise2']['saved_bytes'],
                     16 * k * 4)  # only the selected input slice

  def test_sparse_depthwise_below_costs_extra_delta_input_grad(self):
    spec = model_spec('mcunet-5fps')
    choice = {40: [1, 2, 3], 41: 'full', 39: 'bias'}
    cost = _analyze(spec, choice, batch=1)
    want = analytic.backward_macs(spec, analytic.as_layer_view(spec, choice))
    self.assertEqual(cost.bwd_weight_grad_macs, want.weight_grad_macs)
    self.assertEqual(cost.bwd_input_grad_macs,
                     want.input_grad_macs + 82_944 * 3 // 576)

  def test_peak_lastlayer_below_fulltrain(self):
    spec = model_spec('mcunet-5fps')
    params = _shapes(spec)
    peak = {
        m:
            step.analyze_training_step(spec, params,
                                       methods.method_layer_view(spec, m),
                                       1).peak_bytes
        for m in ('fulltrain', 'lastlayer')
    }
    self.assertLess(peak['lastlayer'], peak['fulltrain'] / 2)


class PeakWalkTest(absltest.TestCase):

  def test_hand_counted(self):

    def f(x):
      a = x * 2.0
      b = a + 1.0
      return jnp.sum(b)

    jaxpr = jax.make_jaxpr(f)(jnp.zeros((256,))).jaxpr
    self.assertEqual(jaxpr_walk.peak_live_bytes_of(jaxpr), 2 * 1024)
    self.assertEqual(jaxpr_walk.peak_live_bytes_of(jaxpr, True), 3 * 1024)

  def test_inlines_jit(self):
    g = jax.jit(lambda x: jnp.sin(x) * 2.0)
    jaxpr = jax.make_jaxpr(lambda x: jnp.sum(g(x)))(jnp.zeros((256,))).jaxpr
    self.assertEqual(jaxpr_walk.peak_live_bytes_of(jaxpr), 2 * 1024)


if __name__ == '__main__':
  absltest.main()
