"""Tests for tinytrain_jax.cost.xla_check (small shapes only)."""
import math

from absl.testing import absltest
import jax
import jax.numpy as jnp

from tinytrain_jax.cost import analytic
from tinytrain_jax.cost import xla_check
from tinytrain_jax.models import network
from tinytrain_jax.models.spec import BlockConfig
from tinytrain_jax.models.spec import ModelSpec


class XlaCostsTest(absltest.TestCase):

  def test_matmul_flops_and_bytes(self):
    a = jax.ShapeDtypeStruct((8, 16), jnp.float32)
    b = jax.ShapeDtypeStruct((16, 4), jnp.float32)
    got = xla_check.xla_costs(jnp.matmul, a, b)
    self.assertSetEqual(
        set(got), {
            'flops', 'bytes_accessed', 'temp_bytes', 'argument_bytes',
            'output_bytes'
        })
    self.assertEqual(got['flops'], 2 * 8 * 16 * 4)
    self.assertEqual(got['argument_bytes'], (8 * 16 + 16 * 4) * 4)
    self.assertEqual(got['output_bytes'], 8 * 4 * 4)

  def test_toy_step_lastlayer_near_two_macs(self):
    spec = ModelSpec('toy', (BlockConfig(16, 1, 3, 1, 8),), resolution=32)
    params = jax.eval_shape(
        lambda: network.init(spec, jax.random.PRNGKey(0)))[0]
    view = analytic.as_layer_view(spec, {2: 'full'})
    got = xla_check.step_xla_costs(spec, params, view, batch_size=2)
    self.assertTrue(math.isfinite(got['temp_bytes']))
    self.assertEqual(got['bwd_macs'], spec.convs[2].macs)
    self.assertBetween(got['ratio'], 0.8, 2.0)


if __name__ == '__main__':
  absltest.main()
