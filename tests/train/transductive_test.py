"""Transductive fine-tuning: the loss against a hand computation, costs, run."""
from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinytrain_jax import data
from tinytrain_jax import models
from tinytrain_jax.models import protonet
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import transductive


def _softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


class TransductiveLossTest(absltest.TestCase):

  def test_toy_batch_matches_hand_computation(self):
    # 2 ways; features are the "images" themselves (identity features_fn).
    sx = np.array([[1., 0.], [0., 1.], [1., 1.]], np.float32)
    sy = np.array([0, 1, 0])
    sm = np.array([True, True, False])  # third support row is padding
    qx = np.array([[2., 1.], [0., 3.], [5., 5.]], np.float32)
    qm = np.array([True, True, False])
    batch = {
        'support_x': jnp.asarray(sx),
        'support_y': jnp.asarray(sy),
        'support_mask': jnp.asarray(sm),
        'query_x': jnp.asarray(qx),
        'query_y': jnp.asarray([1, 1, 1]),  # must not matter
        'query_mask': jnp.asarray(qm),
        'way_mask': jnp.asarray([True, True])
    }
    head = {'scale': jnp.float32(10.0), 'bias': jnp.float32(0.5)}
    got = float(
        transductive.transductive_loss(lambda x: x, head, batch,
                                       jax.random.PRNGKey(0), False, 1.0))
    # By hand: prototypes = the valid support rows, (1, 0) and (0, 1).
    protos = np.array([[1., 0.], [0., 1.]])
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    logits = lambda f: 10.0 * (unit(f) @ unit(protos).T + 0.5)
    p_s = _softmax(logits(sx[:2]))
    ce = -np.mean(np.log(p_s[[0, 1], [0, 1]]))
    p_q = _softmax(logits(qx[:2]))
    ent = np.mean(-np.sum(p_q * np.log(p_q), axis=-1))
    self.assertAlmostEqual(got, ce + ent, places=5)
    batch['query_y'] = jnp.asarray([0, 0, 0])
    self.assertAlmostEqual(
        float(
            transductive.transductive_loss(lambda x: x, head, batch,
                                           jax.random.PRNGKey(0))), got,
        places=6)

  def test_entropy_of_uniform_and_one_hot(self):
    logits = jnp.array([[0., 0., 0., 0.], [100., 0., 0., 0.]])
    self.assertAlmostEqual(
        float(transductive.query_entropy(logits, jnp.array([True, False]))),
        np.log(4), places=5)
    self.assertAlmostEqual(
        float(transductive.query_entropy(logits, jnp.array([False, True]))),
        0.0, places=5)

  def test_costs_count_support_and_query(self):
    spec = models.model_spec('mcunet-5fps', 64)
    a = transductive.transductive_costs(spec, 5, 0)
    b = transductive.transductive_costs(spec, 5, 10)
    self.assertEqual(a['bwd_macs'], b['bwd_macs'])
    self.assertGreater(b['bwd_bytes'], a['bwd_bytes'])
    self.assertEqual(b, transductive.transductive_costs(spec, 15, 0))
    with self.assertRaisesRegex(ValueError, 'n_support must be >= 1'):
      transductive.transductive_costs(spec, 0, 3)

  @pytest.mark.slow  # compiles a full backward (minutes on a loaded CPU)
  def test_run_trains_every_weight(self):
    spec, params = models.load_pretrained('mcunet-5fps', 32)
    src = data.get_source('omniglot', 'test')
    es = data.sample_episode(
        src, data.SamplerConfig(mode='fixed', ways=2, shots=1, queries=1), 0, 0)
    ep = data.make_episode(src, es, 32, buckets=None, way_buckets=None)
    res = transductive.finetune_transductive(
        spec, params, protonet.init_head(), ep,
        ft.FinetuneConfig(steps=2, lr=1e-2))
    self.assertTrue(np.all(np.isfinite(res.loss_curve)))
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(res.params))
    ]
    self.assertGreater(np.mean(moved), 0.9)


if __name__ == '__main__':
  absltest.main()
