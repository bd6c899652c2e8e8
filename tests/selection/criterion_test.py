"""Tests for tinytrain_jax.selection.criterion and static_masks (no JAX)."""
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from tinytrain_jax import cost
from tinytrain_jax import masks
from tinytrain_jax import tree_paths
from tinytrain_jax.models import network
from tinytrain_jax.models.registry import model_spec
from tinytrain_jax.models.spec import BlockConfig, ModelSpec
from tinytrain_jax.selection import criterion
from tinytrain_jax.selection import fisher
from tinytrain_jax.selection import static_masks

INF = math.inf
# 12 convs: 0 stem | 1 dw 2 pw2 | 3 pw1 4 dw/2 5 pw2 | 6 7 8 | 9 10 11.
# From conv 3 on everything is at 4x4: conv 11 = 1x1 32->24, conv 10 = 3x3
# depthwise on 32 channels.
TINY = ModelSpec('tiny',
                 (BlockConfig(16, 1, 3, 1, 8), BlockConfig(8, 3, 3, 2, 16),
                  BlockConfig(16, 2, 3, 1, 16), BlockConfig(16, 2, 3, 1, 24)),
                 resolution=16)


def hand_scores(spec, p=None, out=None, inp=None):
  """FisherScores with P_i = p[name] (default 1) and uniform channels."""
  p = p or {}
  out, inp = dict(out or {}), dict(inp or {})
  for c in spec.convs:
    out.setdefault(c.name, np.ones(c.c_out, np.float32))
    inp.setdefault(c.name, np.ones(c.c_in, np.float32))
  return fisher.FisherScores(
      out, inp, {c.name: float(p.get(c.index, 1.0)) for c in spec.convs})


def random_scores(spec, seed):
  rng = np.random.default_rng(seed)
  return hand_scores(spec,
                     {c.index: float(rng.uniform(1e-4, 1)) for c in spec.convs},
                     {c.name: rng.uniform(0, 1, c.c_out) for c in spec.convs},
                     {c.name: rng.uniform(0, 1, c.c_in) for c in spec.convs})


def summary(sel):
  return [(l['index'], l['channels']) for l in sel.layers]


class ScoreTest(parameterized.TestCase):

  @parameterized.parameters(('mcunet-5fps', False, 42, 92_160, 1_769_472),
                            ('mbv2-w0.35', True, 52, 50_176, 1_769_472),
                            ('proxyless-w0.3', True, 61, 36_864, 1_769_472))
  def test_normalisers_match_reference_table(self, name, mix, n, w, m):
    spec = model_spec(name, feature_mix=mix)
    self.assertLen(spec.convs, n)
    self.assertEqual(criterion.normalisers(spec), (w, m))

  def test_ranking_equals_p_over_w_times_m(self):
    spec = model_spec('mcunet-5fps')
    fs = random_scores(spec, 3)
    s = criterion.layer_scores(spec, fs)
    raw = {c.name: fs.layer[c.name] / (c.n_weights * c.macs) for c in spec.convs}
    self.assertEqual(sorted(s, key=s.get), sorted(raw, key=raw.get))
    for c in spec.convs:
      self.assertAlmostEqual(s[c.name] / raw[c.name], 92_160 * 1_769_472,
                             delta=1e-6 * 92_160 * 1_769_472)


class GoldenSelectionTest(absltest.TestCase):
  """Hand-computed selections on TINY (costs worked out in the comments)."""

  def setUp(self):
    super().setUp()
    self.params, _ = network.init(TINY, jax.random.PRNGKey(0))

  def test_macs_budget_of_last_conv_only(self):
    # conv 11 full: weight grad 4*4*32*24 = 12288 MACs, no input gradient.
    cfg = criterion.SelectionConfig(INF, 12_288, layer_order='last')
    sel = criterion.select_from_scores(TINY, self.params, hand_scores(TINY),
                                       cfg)
    self.assertEqual(summary(sel), [(11, list(range(32)))])
    self.assertEqual(sel.bwd_macs, 12_288)

  def test_half_channels_and_channel_ties(self):
    # + conv 10 at k of 32 channels: 16*9*k weight MACs + 12288 input grad
    # of conv 11: k=32 -> 29184, k=16 -> 26880 (fits exactly). Conv 9 at its
    # smallest (2 of 16) would add 1024 + 4608 (input grad of 10): no fit.
    out10 = np.ones(32)
    out10[[30, 31]] = 5.0  # then the tie among the ones: lowest index first
    fs = hand_scores(TINY, out={TINY.conv(10).name: out10})
    cfg = criterion.SelectionConfig(INF, 26_880, layer_order='last')
    sel = criterion.select_from_scores(TINY, self.params, fs, cfg)
    self.assertEqual(
        summary(sel), [(11, list(range(32))), (10, list(range(14)) + [30, 31])])
    self.assertEqual((sel.bwd_macs, sel.layers[1]['channels_selected']),
                     (26_880, 16))
    lu = masks.layer_updates(TINY, sel.mask)[TINY.conv(10).name]
    self.assertEqual(lu,
                     masks.LayerUpdate(tuple(range(14)) + (30, 31), 32, True))

  def test_memory_budget_of_last_conv_only(self):
    # conv 11 full, batch 1, momentum: saved input 4*4*32*4 B = 2048; params
    # 32*24 + 24 = 792, x 4 B x (weight, grad, momentum) = 9504; total 11552.
    # Conv 10 at 4/32 channels would add 256 + 64 (1-bit mask) + 816 bytes.
    cfg = criterion.SelectionConfig(11_552, INF, layer_order='last')
    sel = criterion.select_from_scores(TINY, self.params, hand_scores(TINY),
                                       cfg)
    self.assertEqual(summary(sel), [(11, list(range(32)))])
    self.assertEqual(sel.bwd_bytes, 11_552)

  def test_score_ties_take_the_deeper_layer_first(self):
    # Convs 7 and 10 are identical 3x3 depthwise convs at 4x4 (same W, M).
    fs = hand_scores(TINY, {c.index: 1e-6 for c in TINY.convs} | {
        7: 1.0,
        10: 1.0
    })
    sel = criterion.select_from_scores(TINY, self.params, fs,
                                       criterion.SelectionConfig(INF, INF))
    self.assertEqual([l['index'] for l in sel.layers[:2]], [10, 7])
    self.assertEqual(sel.layers[0]['score'], sel.layers[1]['score'])

  def test_input_side_potential_orders_by_input_channel_sums(self):
    # Output-side P says conv 10 first; the input-side sums say conv 11
    # (32 input channels at 3.0 against conv 10's 32 at 1.0).
    spec, params = TINY, self.params
    inp = {c.name: np.full(c.c_in, 1e-6) for c in spec.convs}
    inp[spec.conv(11).name] = np.full(32, 3.0)
    fs = hand_scores(spec, {c.index: 1e-6 for c in spec.convs} | {10: 1.0},
                     inp=inp)
    got = {}
    for pot in ('out', 'inp'):
      cfg = criterion.SelectionConfig(INF, INF, potential=pot)
      sel = criterion.select_from_scores(spec, params, fs, cfg)
      got[pot] = sel.layers[0]['index']
      want = (criterion.layer_potentials(spec, fs, pot)[spec.conv(
          got[pot]).name])
      self.assertEqual(sel.layers[0]['fisher'], want)
    self.assertEqual(got, {'out': 10, 'inp': 11})
    self.assertEqual(
        criterion.layer_potentials(spec, fs, 'inp')[spec.conv(11).name], 96.0)

  def test_stop_at_first_misfit(self):
    # Order by P: 11, then 0 (stem: input grads of everything, no fit), 10.
    fs = hand_scores(TINY, {c.index: 1e-6 for c in TINY.convs} | {
        11: 3.0,
        0: 2.0,
        10: 1.0
    })
    base = dict(budget_bytes=INF, budget_macs=30_000, layer_order='fisher')
    skip = criterion.select_from_scores(TINY, self.params, fs,
                                        criterion.SelectionConfig(**base))
    stop = criterion.select_from_scores(
        TINY, self.params, fs,
        criterion.SelectionConfig(**base, stop_at_first_misfit=True))
    self.assertEqual([l['index'] for l in skip.layers[:2]], [11, 10])
    self.assertEqual(summary(stop), [(11, list(range(32)))])


class GreedyInvariantsTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.spec = model_spec('mcunet-5fps')
    cls.params, _ = network.init(cls.spec, jax.random.PRNGKey(1))
    cls.fs = random_scores(cls.spec, 0)

  def _select(self, **kw):
    return criterion.select_from_scores(self.spec, self.params, self.fs,
                                        criterion.SelectionConfig(**kw))

  @parameterized.parameters((2**20, 6_510_000), (200_000, 3e6), (50_000, 5e7),
                            (3e6, 1e6))
  def test_costs_within_budgets_and_match_the_mask(self, b, m):
    for ratios in ((1, .5, .25, .125), 'any'):
      sel = self._select(budget_bytes=b, budget_macs=m, ratios=ratios)
      self.assertNotEmpty(sel.layers)
      self.assertLessEqual(sel.bwd_bytes, b)
      self.assertLessEqual(sel.bwd_macs, m)
      self.assertEqual(
          cost.backward_memory_bytes(self.spec, sel.mask).total_bytes,
          sel.bwd_bytes)
      self.assertEqual(
          cost.backward_macs(self.spec, sel.mask).total_macs, sel.bwd_macs)

  def test_larger_budget_is_lexicographically_larger(self):
    # Same visiting order; with an equal prefix a larger budget can only
    # allow more channels at the next layer, so the per-layer channel counts
    # in visiting order never decrease lexicographically.
    order = [
        c.name for c in sorted(
            self.spec.convs, key=lambda c:
            (-criterion.layer_scores(self.spec, self.fs)[c.name], -c.index))
    ]
    prev, prev_sel = None, None
    for scale in (0.5, 1, 2, 4, 8):
      sel = self._select(budget_bytes=scale * 400_000, budget_macs=scale * 4e6)
      counts = tuple(sel.channel_counts.get(n, 0) for n in order)
      if prev is not None:
        self.assertGreaterEqual(counts, prev)
        self.assertGreaterEqual(sel.bwd_macs + sel.bwd_bytes,
                                prev_sel.bwd_macs + prev_sel.bwd_bytes)
      prev, prev_sel = counts, sel

  def test_larger_memory_budget_selects_a_superset_here(self):
    small = self._select(budget_bytes=100_000, budget_macs=INF, candidates=2)
    large = self._select(budget_bytes=400_000, budget_macs=INF, candidates=2)
    for l in small.layers:
      got = {x['name']: set(x['channels']) for x in large.layers}
      self.assertLessEqual(set(l['channels']), got[l['name']])

  def test_infinite_budget_selects_every_candidate_fully(self):
    sel = self._select(budget_bytes=INF, budget_macs=INF)
    self.assertEqual(sorted(l['index'] for l in sel.layers), list(range(42)))
    self.assertTrue(
        all(l['channels_selected'] == l['channels_total'] for l in sel.layers))
    last2 = self._select(budget_bytes=INF, budget_macs=INF, candidates=2)
    self.assertEqual(
        sorted(l['index'] for l in last2.layers), list(range(36, 42)))

  @parameterized.parameters((2**20, 6_510_000), (200_000, 3e6), (3e6, 1e6))
  def test_scores_of_unreachable_convs_do_not_matter(self, b, m):
    for ratios in ((1, .5, .25, .125), 'any'):
      cfg = criterion.SelectionConfig(budget_bytes=b, budget_macs=m,
                                      ratios=ratios)
      reach = {c.name for c in criterion.reachable_convs(self.spec, cfg)}
      self.assertNotEmpty(reach)
      self.assertLess(len(reach), len(self.spec.convs))
      full = criterion.select_from_scores(self.spec, self.params, self.fs, cfg)
      part = criterion.select_from_scores(
          self.spec, self.params,
          self.fs._replace(
              out={k: v for k, v in self.fs.out.items() if k in reach},
              inp={k: v for k, v in self.fs.inp.items() if k in reach},
              layer={k: v for k, v in self.fs.layer.items() if k in reach}),
          cfg)
      self.assertEqual(summary(part), summary(full))
      self.assertLessEqual({l['name'] for l in full.layers}, reach)
      # Not fitting alone, an unreachable conv never fits beside others.
      for c in self.spec.convs:
        if c.name not in reach:
          ups = dict(full.view.layers, **criterion._cheapest(c, ratios))
          self.assertFalse(criterion._Coster(self.spec, cfg).fits(ups)[0])

  def test_scores_missing_a_reachable_conv_raise(self):
    cfg = criterion.SelectionConfig(budget_bytes=2**20, budget_macs=6.51e6)
    last = self.spec.convs[-1].name
    with self.assertRaisesRegex(
        ValueError, r'^the Fisher scores lack 1 conv\(s\) the budgets can '
        rf'select \(e\.g\. {last}\); measure them'):
      criterion.select_from_scores(
          self.spec, self.params,
          self.fs._replace(layer={
              k: v for k, v in self.fs.layer.items() if k != last
          }), cfg)

  @parameterized.parameters((0, 0), (0, INF), (INF, 0), (1_000, INF),
                            (INF, 10_000))
  def test_too_small_budget_raises(self, b, m):
    with self.assertRaisesRegex(
        ValueError, 'below the cheapest single-layer update.*'
        'raise the budgets'):
      self._select(budget_bytes=b, budget_macs=m)

  def test_deterministic(self):
    for rank in ('fisher', 'l2', 'random'):
      a = self._select(budget_bytes=2**20, budget_macs=6.51e6,
                       channel_rank=rank)
      b = self._select(budget_bytes=2**20, budget_macs=6.51e6,
                       channel_rank=rank)
      self.assertEqual(masks.mask_to_json(a.mask), masks.mask_to_json(b.mask))
    other = self._select(budget_bytes=2**20, budget_macs=6.51e6,
                         channel_rank='random', seed=1)
    self.assertNotEqual(
        masks.mask_to_json(a.mask), masks.mask_to_json(other.mask))

  def test_zero_channel_fisher_falls_back_to_l2(self):
    zeros = self.fs._replace(
        out={
            k: np.zeros_like(v) for k, v in self.fs.out.items()
        }, inp={
            k: np.zeros_like(v) for k, v in self.fs.inp.items()
        })
    kw = dict(budget_bytes=2**20, budget_macs=6.51e6)
    with self.assertLogs(level='WARNING') as logs:
      got = criterion.select_from_scores(self.spec, self.params, zeros,
                                         criterion.SelectionConfig(**kw))
    self.assertIn('all-zero Fisher channel scores', logs.output[0])
    want = self._select(channel_rank='l2', **kw)
    self.assertEqual(summary(got), summary(want))

  def test_non_finite_potential_raises(self):
    bad = self.fs._replace(layer=dict(self.fs.layer, first_conv=float('nan')))
    with self.assertRaisesRegex(ValueError, 'must be finite.*first_conv'):
      criterion.select_from_scores(self.spec, self.params, bad,
                                   criterion.SelectionConfig(INF, INF))

  @parameterized.parameters(
      (dict(budget_bytes=-1), 'budget_bytes must be a number >= 0'),
      (dict(budget_macs=float('nan')), 'budget_macs'),
      (dict(layer_order='random'), "layer_order must be one of"),
      (dict(channel_rank='max'), 'channel_rank must be one of'),
      (dict(ratios=(1, 0)), r'ratios must be .*\(0, 1\]'),
      (dict(ratios='all'), "ratios must be 'any'"),
      (dict(candidates=0), "candidates must be 'all' or an int"),
      (dict(batch_size=0), 'batch_size >= 1'),
      (dict(potential='grad'), 'potential must be one of'))
  def test_config_validation(self, kw, regex):
    args = dict(budget_bytes=1, budget_macs=1) | kw
    with self.assertRaisesRegex(ValueError, regex):
      criterion.SelectionConfig(**args)


class StaticMasksTest(absltest.TestCase):

  def test_l2_and_random_masks(self):
    params, _ = network.init(TINY, jax.random.PRNGKey(0))
    name = TINY.conv(11).name
    w = np.zeros((1, 1, 32, 24), np.float32)
    w[0, 0, :, 0] = np.arange(32) % 5  # norms 4 at c = 4, 9, 14, ...
    params = tree_paths.replace(params, name, {
        'kernel': w,
        'bias': np.zeros(24)
    })
    m = static_masks.static_l2_mask(TINY, params, {11: 3})
    self.assertEqual(
        masks.layer_updates(TINY, m)[name].weight_channels, (4, 9, 14))
    r0 = static_masks.random_mask(TINY, params, {11: 3, 10: 8}, seed=0)
    r0b = static_masks.random_mask(TINY, params, {11: 3, 10: 8}, seed=0)
    self.assertEqual(masks.mask_to_json(r0), masks.mask_to_json(r0b))
    with self.assertRaisesRegex(ValueError, r'must be in \[1, 32\]'):
      static_masks.static_l2_mask(TINY, params, {11: 33})

  def test_last_k_and_sparse_update(self):
    spec = model_spec('mcunet-5fps')
    params, _ = network.init(spec, jax.random.PRNGKey(0))
    last12 = static_masks.last_k_mask(spec, params, 12)
    su = static_masks.sparse_update_mask(spec, params, 12, list(range(30, 42)),
                                         1)
    self.assertEqual(masks.mask_to_json(last12), masks.mask_to_json(su))
    # tiny-training's README: last 12 convs of mcunet-5fps at 128 px = 448KB.
    self.assertAlmostEqual(
        cost.tt_memory_breakdown(spec, su).kb, 448.05, places=2)
    part = static_masks.sparse_update_mask(spec, params, 5, '39-41', '0.5-1')
    ups = masks.layer_updates(spec, part)
    self.assertLen(ups, 5)
    self.assertEqual(ups['blocks_13/pointwise1'].weight_channels,
                     tuple(range(48)))
    self.assertFalse(ups['blocks_13/depthwise'].trains_weight)


if __name__ == '__main__':
  absltest.main()
