"""Sparse fine-tuning: equal to the dense-masked reference, real savings."""
import dataclasses
import functools

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from tinytrain_jax import data
from tinytrain_jax import mask_partition
from tinytrain_jax import masks
from tinytrain_jax import models
from tinytrain_jax import tree_paths
from tinytrain_jax.configs import dataclass_config
from tinytrain_jax.cost import xla_check
from tinytrain_jax.models import protonet
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import methods
from tinytrain_jax.train import sparse_step

R = 32


@functools.lru_cache(None)
def _model():
  return models.load_pretrained('mcunet-5fps', resolution=R)


@functools.lru_cache(None)
def _episode(index=0, split='test', ways=3, shots=2, queries=2):
  src = data.get_source('omniglot', split)
  es = data.sample_episode(
      src,
      data.SamplerConfig(mode='fixed', ways=ways, shots=shots, queries=queries),
      0, index)
  return data.make_episode(src, es, resolution=R, buckets=None,
                           way_buckets=None)


def _mask(spec, params):
  # 41 pw2 full; 40 depthwise on 4 channels; 39 pointwise on 3 input channels;
  # 35 bias only.
  return masks.mask_from_layers(spec, params, {
      41: 'full',
      40: [0, 5, 7, 100],
      39: [1, 2, 3],
      35: 'bias'
  })


class FinetuneTest(absltest.TestCase):

  def test_evaluation_from_the_cached_support_prefix(self):
    spec, params = _model()
    head = protonet.init_head()
    batch = ft.episode_arrays(spec, _episode())
    start = len(spec.blocks) // 2
    # support_x zeroed: only the cached prefix can give the same numbers.
    cached = dict(batch, support_x=jnp.zeros_like(batch['support_x']),
                  support_h=models.prefix(spec, params, batch['support_x'],
                                          start))
    whole = ft.evaluate_step(spec, params, head, batch)
    reused = ft.evaluate_step(spec, params, head, cached, start)
    np.testing.assert_allclose(reused, whole, rtol=1e-5, atol=1e-6)

  def test_sparse_equals_dense_and_frozen_untouched(self):
    spec, params = _model()
    mask = _mask(spec, params)
    head = protonet.init_head()
    cfg = ft.FinetuneConfig(steps=3, lr=1e-2, weight_decay=1e-3)
    sparse = ft.finetune_task(spec, params, head, _episode(), mask, cfg)
    dense = ft.finetune_task(
        spec, params, head, _episode(), mask,
        ft.FinetuneConfig(steps=3, lr=1e-2, weight_decay=1e-3, impl='dense'))
    np.testing.assert_allclose(sparse.loss_curve, dense.loss_curve, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        sparse.params, dense.params)
    dense_mask = masks.to_dense(mask, params, spec)
    for res in (sparse, dense):
      for new, old, m in zip(
          jax.tree.leaves(res.params), jax.tree.leaves(params),
          jax.tree.leaves(dense_mask)):
        frozen = np.asarray(m) == 0
        np.testing.assert_array_equal(
            np.asarray(new)[frozen],
            np.asarray(old)[frozen])
    # Trained entries moved: the selected depthwise and pointwise channels.
    dw_new = sparse.params['blocks_13']['depthwise']['kernel']
    dw_old = params['blocks_13']['depthwise']['kernel']
    self.assertGreater(np.abs(dw_new - dw_old)[..., [0, 5, 7, 100]].max(), 0)
    pw_new = sparse.params['blocks_13']['pointwise1']['kernel']
    self.assertGreater(
        np.abs(pw_new -
               params['blocks_13']['pointwise1']['kernel'])[:, :,
                                                            [1, 2, 3]].max(), 0)
    # Fully frozen leaves are the same objects (no copy through the step).
    self.assertIs(sparse.params['first_conv']['kernel'],
                  params['first_conv']['kernel'])
    self.assertTrue(np.all(np.isfinite(sparse.loss_curve)))

  def test_one_compile_per_channel_count_signature(self):
    spec, params = _model()
    head = protonet.init_head()
    cfg = ft.FinetuneConfig(steps=1, lr=1e-3, seed=7)
    before = ft.sparse_train_loop._cache_size()  # pylint: disable=protected-access
    for task, (chans, lr) in enumerate(
        (([0, 1, 2], 1e-3), ([5, 9, 40], 1e-2), ([50, 60, 95], 3e-4))):
      mask = masks.mask_from_layers(spec, params, {39: chans})
      ft.finetune_task(spec, params, head, _episode(), mask,
                       dataclasses.replace(cfg, lr=lr), task=task)
    # Channel indices, lr and the task index are runtime data: one compile.
    self.assertEqual(ft.sparse_train_loop._cache_size() - before, 1)  # pylint: disable=protected-access

  def test_prefix_cache_gives_the_same_params(self):
    spec, params = _model()
    head = protonet.init_head()
    mask = _mask(spec, params)
    plan, _ = mask_partition.make_plan(spec, params, mask)
    self.assertEqual(ft.start_block(spec, plan), 11)  # blocks_11/pointwise2
    cfg = ft.FinetuneConfig(steps=3, lr=1e-2)
    self.assertEqual(ft.prefix_start(spec, plan, cfg), 11)
    self.assertEqual(
        ft.prefix_start(spec, plan, dataclasses.replace(cfg, augment=True)), 0)
    cached = ft.finetune_task(spec, params, head, _episode(), mask, cfg)
    full = ft.finetune_task(spec, params, head, _episode(), mask,
                            dataclasses.replace(cfg, cache_prefix=False))
    np.testing.assert_allclose(cached.loss_curve, full.loss_curve, rtol=1e-5,
                               atol=1e-6)
    for a, b in zip(
        jax.tree.leaves(cached.params), jax.tree.leaves(full.params)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    self.assertEqual(cached.accuracy, full.accuracy)
    # The cost report says which path ran and what a step's forward costs.
    fwd, ref = cached.costs['step_forward'], full.costs['step_forward']
    self.assertEqual((fwd['start_block'], ref['start_block']), (11, 0))
    self.assertEqual(ref['prefix_macs'], 0)
    self.assertEqual(fwd['step_macs'] + fwd['prefix_macs'], ref['step_macs'])
    self.assertLess(fwd['step_macs'], ref['step_macs'] / 2)

  def test_prefix_then_suffix_is_the_forward(self):
    spec, params = _model()
    x = _episode().support_x
    whole = models.apply(spec, params, x).features
    for b in (0, 5, len(spec.blocks)):
      h = models.prefix(spec, params, x, b)
      np.testing.assert_allclose(
          models.apply(spec, params, h, start_block=b).features, whole,
          rtol=1e-5, atol=1e-5)
    with self.assertRaisesRegex(ValueError, 'start_block must be in'):
      models.prefix(spec, params, x, len(spec.blocks) + 1)
    # With a feature-mix conv (trained alone by LastLayer) it runs after the
    # cached prefix of every block, once.
    mix = models.model_spec('mbv2-w0.35', resolution=R, feature_mix=True)
    mp = models.init(mix, jax.random.PRNGKey(0))[0]
    n = len(mix.blocks)
    self.assertEqual(models.block_of(mix, 'feature_mix'), n)
    np.testing.assert_allclose(
        models.apply(mix, mp, models.prefix(mix, mp, x, n),
                     start_block=n).features,
        models.apply(mix, mp, x).features, rtol=1e-5, atol=1e-5)

  def test_plan_and_fold(self):
    spec, params = _model()
    plan, idx = mask_partition.make_plan(spec, params, _mask(spec, params))
    self.assertIn('blocks_13/pointwise2/kernel', plan.full_leaves)
    self.assertIn('blocks_11/pointwise2/bias', plan.full_leaves)
    names = {d.name: (d.k, d.shape) for d in plan.delta_layers}
    self.assertEqual(names['blocks_13/depthwise'], (4, (3, 3, 1, 4)))
    self.assertEqual(names['blocks_13/pointwise1'], (3, (1, 1, 3, 576)))
    np.testing.assert_array_equal(idx['blocks_13/pointwise1'], [1, 2, 3])
    tr = mask_partition.split(params, plan)
    tr['deltas']['blocks_13/pointwise1'] += 1.0
    out = mask_partition.fold(params, plan, tr, idx)
    diff = (
        np.asarray(out['blocks_13']['pointwise1']['kernel']) -
        params['blocks_13']['pointwise1']['kernel'])
    np.testing.assert_allclose(diff[:, :, [1, 2, 3]], 1.0)
    self.assertEqual(np.abs(np.delete(diff, [1, 2, 3], axis=2)).max(), 0)

  def test_compiled_sparse_step_cheaper_than_fulltrain(self):
    spec, params = _model()
    head = protonet.init_head()
    batch = ft.episode_arrays(spec, _episode())
    cfg = ft.FinetuneConfig(steps=1)
    costs = {}
    for name, mask in (('full',
                        methods.method_mask('fulltrain', spec, params,
                                            None)), ('sparse',
                                                     _mask(spec, params))):
      plan, idx = mask_partition.make_plan(spec, params, mask)
      tr = mask_partition.split(params, plan)
      opt = sparse_step.sparse_optimizer(cfg.lr, cfg.momentum).init(tr)
      fn = functools.partial(ft.sparse_step_fn, spec, plan, cfg)
      costs[name] = xla_check.xla_costs(fn, tr, opt, params, head, {
          k: jnp.asarray(v) for k, v in idx.items()
      }, batch, jnp.int32(0))
    # The dense-masked reference (mask as runtime data) really runs the full
    # backward: it cannot be cheaper than the sparse step of the same mask.
    step, tx, full = ft.make_dense_step(spec, cfg, _mask(spec, params), head,
                                        donate=False)
    tr = {'params': params, 'head': head}
    costs['dense'] = xla_check.xla_costs(step, tr, tx.init(tr), batch,
                                         jnp.int32(0),
                                         ft.dense_step_mask(spec, full, tr))
    self.assertLess(costs['sparse']['flops'], costs['full']['flops'])
    self.assertLess(costs['sparse']['temp_bytes'], costs['full']['temp_bytes'])
    self.assertGreater(costs['dense']['flops'], 2 * costs['sparse']['flops'])

  def test_wrong_episode_shape_raises_before_jit(self):
    spec, params = _model()
    ep = _episode()
    bad = dict(vars(ep), support_x=np.zeros((6, 64, 64, 3), np.float32))
    with self.assertRaisesRegex(ValueError, r'support_x must be f32\[N, 32'):
      ft.finetune_task(spec, params, protonet.init_head(), bad, None)
    bad = dict(vars(ep), support_y=np.zeros((5,), np.int32))
    with self.assertRaisesRegex(ValueError, 'support_y'):
      ft.evaluate(spec, params, protonet.init_head(), bad)

  def test_config_errors(self):
    with self.assertRaisesRegex(ValueError, 'impl'):
      ft.FinetuneConfig(impl='fast')
    with self.assertRaisesRegex(ValueError, 'steps'):
      ft.FinetuneConfig(steps=-1)
    with self.assertRaisesRegex(
        ValueError, r'unknown config key '
        r'--config\.finetune\.stepz'):
      dataclass_config.dataclass_from_config(ft.FinetuneConfig, {'stepz': 3},
                                             'finetune.')

  def test_non_finite_loss_raises(self):
    spec, params = _model()
    mask = masks.mask_from_layers(spec, params, {41: 'full'})
    w = np.array(params['blocks_13']['pointwise2']['kernel'])
    w[0, 0, 0, 0] = np.nan
    bad = tree_paths.replace(params, 'blocks_13/pointwise2', {
        'kernel': w,
        'bias': np.zeros((160,), np.float32)
    })
    with self.assertRaisesRegex(RuntimeError, 'non-finite at step 0'):
      ft.finetune_task(spec, bad, protonet.init_head(), _episode(), mask,
                       ft.FinetuneConfig(steps=2))

  def test_real_tasks_lastlayer_not_worse_than_none(self):
    spec, params = _model()
    head = protonet.init_head()
    cfg = ft.FinetuneConfig(steps=3, lr=1e-3)
    acc = {'none': [], 'lastlayer': []}
    for i in range(3):
      ep = _episode(i, ways=5, shots=1, queries=3)
      for m in acc:
        r = methods.run_method(m, spec, params, head, ep, cfg)
        acc[m].append(r['accuracy'])
        if m == 'lastlayer':
          self.assertTrue(np.isfinite(r['final_support_loss']))
          self.assertGreater(r['bwd_macs'], 0)
        else:
          self.assertEqual(r['bwd_macs'], 0)
    self.assertGreater(np.mean(acc['none']), 0.2)  # 5-way chance
    self.assertGreaterEqual(
        np.mean(acc['lastlayer']),
        np.mean(acc['none']) - 0.15)


if __name__ == '__main__':
  absltest.main()
