"""SparseUpdate search: exact optimum, budgets, determinism, cached schemes."""
import itertools
import json
import os
import tempfile

from absl.testing import absltest
import pytest

from tinytrain_jax import cost
from tinytrain_jax import data
from tinytrain_jax import models
from tinytrain_jax.cost import methods as cost_methods
from tinytrain_jax.models import protonet
from tinytrain_jax.selection import sparse_update_search as search
from tinytrain_jax.train import contribution

_SPEC = models.model_spec('mcunet-5fps', 128)
_BIAS = {4: 0.01, 8: 0.03, 12: 0.02}
_WEIGHT = {
    39: {
        1.0: 0.02,
        0.5: 0.015,
        0.25: 0.001,
        0.125: -0.01
    },
    40: {
        1.0: 0.005,
        0.5: 0.004,
        0.25: 0.003,
        0.125: 0.002
    },
    41: {
        1.0: 0.03,
        0.5: 0.01,
        0.25: 0.008,
        0.125: 0.0
    },
    33: {
        1.0: 0.05,
        0.5: 0.04,
        0.25: 0.01,
        0.125: 0.0
    }
}


def _brute_force(budget_bytes, budget_macs):
  best = None
  for k, gb in _BIAS.items():
    convs = [i for i in sorted(_WEIGHT) if i >= len(_SPEC.convs) - k]
    for rs in itertools.product(*[[0.0] + sorted(_WEIGHT[i]) for i in convs]):
      w = {i: r for i, r in zip(convs, rs) if r}
      s = search.describe_scheme(_SPEC, k, w)
      if s.bwd_bytes <= budget_bytes and s.bwd_macs <= budget_macs:
        g = gb + sum(_WEIGHT[i][r] for i, r in w.items())
        if best is None or g > best + 1e-12:
          best = g
  return best


class SearchTest(absltest.TestCase):

  def test_matches_brute_force(self):
    for budget_bytes, budget_macs in ((400_000, 6_000_000),
                                      (1_500_000, 6_000_000), (3_000_000,
                                                               4_000_000)):
      got = search.search_scheme(_SPEC, _BIAS, _WEIGHT, budget_bytes,
                                 budget_macs)
      self.assertAlmostEqual(got.gain, _brute_force(budget_bytes, budget_macs),
                             places=9)
      self.assertLessEqual(got.bwd_bytes, budget_bytes)
      self.assertLessEqual(got.bwd_macs, budget_macs)
      # Costs are those of the cost models on the scheme's layer view.
      view = search.scheme_view(
          _SPEC, got.n_bias_update,
          dict(zip(got.manual_weight_idx, got.weight_update_ratio)))
      self.assertEqual(got.bwd_macs, cost.backward_macs(_SPEC, view).total_macs)

  def test_weights_stay_within_bias_depth_and_skip_losses(self):
    got = search.search_scheme(_SPEC, {4: 0.0}, _WEIGHT, 10**9, None)
    self.assertEqual(got.n_bias_update, 4)
    self.assertEqual(got.manual_weight_idx, (39, 40, 41))  # 33 is below
    self.assertEqual(got.weight_update_ratio, (1.0, 1.0, 1.0))

  def test_nothing_fits_is_one_clear_error(self):
    with self.assertRaisesRegex(
        ValueError, r'no SparseUpdate scheme fits '
        r'budget_bytes=10 .*raise the budgets'):
      search.search_scheme(_SPEC, _BIAS, _WEIGHT, 10, None)

  def test_published_budgets(self):
    self.assertEqual(
        search.default_budgets('mcunet-5fps'),
        (round(1.43 * 2**20), 11_900_000))

  def test_candidates_are_late_1x1_convs(self):
    self.assertEqual(search.candidate_weight_convs(_SPEC, 6), (36, 38, 39, 41))
    mix = models.model_spec('mbv2-w0.35', 128, True)
    self.assertIn(51, search.candidate_weight_convs(mix, 3))

  def test_save_schemes_merges_and_cost_reads_it(self):
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, 's.json')
      entry = {
          'n_bias_update': 8,
          'manual_weight_idx': [41],
          'weight_update_ratio': [0.5],
          'feature_mix': False
      }
      search.save_schemes(path, {'mcunet-5fps': entry}, {'seed': 0})
      search.save_schemes(path, {'mbv2-w0.35': dict(entry, feature_mix=True)},
                          {'seed': 1})
      blob = json.loads(open(path).read())
      self.assertEqual(sorted(blob['schemes']), ['mbv2-w0.35', 'mcunet-5fps'])
      self.assertEqual(blob['metadata']['seed'], 1)
      self.assertEqual(
          cost_methods.sparse_update_scheme(_SPEC, path), (8, [41], [0.5]))
      with self.assertRaisesRegex(ValueError, 'pass --feature_mix'):
        cost_methods.sparse_update_scheme(models.model_spec('mbv2-w0.35'), path)
      with self.assertRaisesRegex(
          ValueError, 'no cached SparseUpdate scheme '
          'for proxyless-w0.3'):
        cost_methods.sparse_update_scheme(
            models.model_spec('proxyless-w0.3'), path)


class CachedSchemesTest(absltest.TestCase):

  def test_committed_schemes_fit_their_budgets(self):
    blob = json.loads(cost_methods.SCHEMES_PATH.read_text())
    self.assertIn('command', blob['metadata'])
    for name, e in blob['schemes'].items():
      spec = models.model_spec(name, 128, e['feature_mix'])
      s = search.describe_scheme(
          spec, e['n_bias_update'],
          dict(zip(e['manual_weight_idx'], e['weight_update_ratio'])))
      b, m = search.default_budgets(name, blob['metadata']['budget_scale'])
      self.assertLessEqual(s.bwd_bytes, b, name)
      self.assertLessEqual(s.bwd_macs, m, name)


class DeterminismTest(absltest.TestCase):

  def _scheme_fn(self, wc):
    spec, params = models.load_pretrained('mcunet-5fps', 32)
    src = data.get_source('omniglot', 'valid')
    cfg = data.SamplerConfig(mode='fixed', ways=2, shots=1, queries=2)

    def scheme(seed):
      eps = [
          data.make_episode(src, es, 32, buckets=None, way_buckets=None)
          for es in data.sample_episodes(src, cfg, seed, 1)
      ]
      g = contribution.measure_contributions(
          spec, params, protonet.init_head(), eps,
          contribution.ContributionConfig(
              bias_ks=(1, 2), weight_convs=wc, ratios=(1.0, 0.5), ref_bias_k=2,
              steps=2, lr=0.1))
      s = search.search_scheme(
          models.model_spec('mcunet-5fps', 128), g.bias_gain, g.weight_gain,
          10**7, None)
      return g.per_episode, s

    return scheme

  def test_same_seed_same_scheme(self):
    # Bias analysis only: one compiled program (seconds on an idle CPU).
    scheme = self._scheme_fn(())
    a, b = scheme(3), scheme(3)
    self.assertEqual(a, b)
    self.assertEqual(sorted(a[0]), ['bias1', 'bias2', 'none'])

  @pytest.mark.slow  # a second compiled program (the weight analysis)
  def test_same_seed_same_scheme_with_weights(self):
    scheme = self._scheme_fn((41,))
    a, b = scheme(3), scheme(3)
    self.assertEqual(a, b)
    self.assertEqual(
        sorted(a[0]), ['bias1', 'bias2', 'none', 'ref', 'w41@0.5', 'w41@1.0'])

  def test_config_errors_name_the_field(self):
    spec = models.model_spec('mcunet-5fps', 32)
    with self.assertRaisesRegex(
        ValueError, r'weight_convs \[3\] are not '
        'among the last ref_bias_k=12'):
      contribution.ContributionConfig(weight_convs=(3,)).check(spec)
    with self.assertRaisesRegex(ValueError, r'bias_ks must lie in \[1, 42\]'):
      contribution.ContributionConfig(bias_ks=(50,)).check(spec)


if __name__ == '__main__':
  absltest.main()
