r"""Regenerates SparseUpdate's cached schemes: contribution analysis + search.

  python -m experiments.sparseupdate_search \
      --models=mcunet-5fps,mbv2-w0.35,proxyless-w0.3 --episodes=10

Per backbone (pretrained weights; the mix conv for mbv2/proxyless, as in the
evaluation): draws --episodes fixed-way tasks of --source/--split, measures
the accuracy gain of training the biases of the last k convs (k in
--bias_ks) and of each 1x1 conv among the last --last_n convs at ratios
1, 1/2, 1/4, 1/8 (`train.contribution`), then searches the scheme with the
largest summed gain within the published SparseUpdate memory and compute
(`selection.sparse_update_search`, costs at --cost_resolution) and merges it,
with the gains and this command, into --out (the JSON the evaluation and
`experiments.cost` read).
"""
import json
import sys
import time

from absl import app
from absl import flags

from tinytrain_jax import data
from tinytrain_jax import models
from tinytrain_jax.models import protonet
from tinytrain_jax.models.registry import canonical_name
from tinytrain_jax.selection import sparse_update_search as search
from tinytrain_jax.train import contribution

_MODELS = flags.DEFINE_string('models', 'mcunet-5fps,mbv2-w0.35,proxyless-w0.3',
                              'Comma list of backbones.')
_SOURCE = flags.DEFINE_string('source', 'mini-imagenet', 'Episode source.')
_SPLIT = flags.DEFINE_string('split', 'valid', 'Source split.')
_RESOLUTION = flags.DEFINE_integer('resolution', 64, 'Analysis input size.',
                                   lower_bound=32)
_COST_RES = flags.DEFINE_integer('cost_resolution', 128,
                                 'Resolution the budgets are counted at.')
_EPISODES = flags.DEFINE_integer('episodes', 10, 'Tasks per configuration.',
                                 lower_bound=1)
_WAYS = flags.DEFINE_integer('ways', 5, 'Ways per task.', lower_bound=2)
_SHOTS = flags.DEFINE_integer('shots', 5, 'Shots per class.', lower_bound=1)
_QUERIES = flags.DEFINE_integer('queries', 10, 'Queries per class.',
                                lower_bound=1)
_STEPS = flags.DEFINE_integer('steps', 20, 'Fine-tune steps per config.',
                              lower_bound=1)
_LR = flags.DEFINE_float('lr', 1e-2, 'Fine-tune learning rate.')
_SEED = flags.DEFINE_integer('seed', 0, 'Task stream seed.', lower_bound=0)
_BIAS_KS = flags.DEFINE_string('bias_ks', '4,8,12,16,20,24,28,32,36',
                               'Bias depths analysed.')
_LAST_N = flags.DEFINE_integer(
    'last_n', 12, 'Weight candidates: 1x1 convs '
    'among the last n convs.', lower_bound=1)
_BUDGET_SCALE = flags.DEFINE_float('budget_scale', 1.0,
                                   'x the published SparseUpdate budgets.')
_OUT = flags.DEFINE_string('out',
                           'tinytrain_jax/configs/sparseupdate_schemes.json',
                           'Schemes JSON to merge into.')

MIX_BACKBONES = ('mbv2-w0.35', 'proxyless-w0.3')


def _run_model(name):
  t0 = time.time()
  mix = name in MIX_BACKBONES
  spec, params = models.load_pretrained(name, _RESOLUTION.value, mix)
  spec128 = models.model_spec(name, _COST_RES.value, mix)
  src = data.get_source(_SOURCE.value, _SPLIT.value)
  scfg = data.SamplerConfig(mode='fixed', ways=_WAYS.value, shots=_SHOTS.value,
                            queries=_QUERIES.value)
  eps = [
      data.make_episode(src, es, _RESOLUTION.value, buckets=None,
                        way_buckets=None)
      for es in data.sample_episodes(src, scfg, _SEED.value, _EPISODES.value)
  ]
  n = len(spec.convs)
  ks = tuple(sorted({min(int(k), n) for k in _BIAS_KS.value.split(',')}))
  cands = search.candidate_weight_convs(spec, _LAST_N.value)
  ccfg = contribution.ContributionConfig(bias_ks=ks, weight_convs=cands,
                                         ref_bias_k=_LAST_N.value,
                                         steps=_STEPS.value, lr=_LR.value)
  gains = contribution.measure_contributions(spec, params, protonet.init_head(),
                                             eps, ccfg)
  budget_bytes, budget_macs = search.default_budgets(name, _BUDGET_SCALE.value)
  sch = search.search_scheme(spec128, gains.bias_gain, gains.weight_gain,
                             budget_bytes, budget_macs)
  return {
      'n_bias_update': sch.n_bias_update,
      'manual_weight_idx': list(sch.manual_weight_idx),
      'weight_update_ratio': list(sch.weight_update_ratio),
      'feature_mix': mix,
      'summed_gain': sch.gain,
      f'cost_at_{_COST_RES.value}px': {
          'bwd_macs': sch.bwd_macs,
          'bwd_bytes_fp32_batch1': sch.bwd_bytes,
          'tt_memory_kb': round(sch.tt_kb, 2)
      },
      'budget': {
          'bwd_bytes_fp32_batch1': budget_bytes,
          'bwd_macs': budget_macs,
          'resolution': _COST_RES.value
      },
      'analysis': {
          'base_accuracy': gains.base_accuracy,
          'ref_accuracy': gains.ref_accuracy,
          'bias_gain': {
              str(k): v for k, v in gains.bias_gain.items()
          },
          'weight_gain': {
              str(i): {
                  str(r): g for r, g in v.items()
              } for i, v in gains.weight_gain.items()
          },
          'weight_convs': [spec.convs[i].name for i in cands]
      },
      'wall_s': round(time.time() - t0, 1),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    names = [
        canonical_name(m.strip())
        for m in _MODELS.value.split(',')
        if m.strip()
    ]
    entries = {}
    for name in names:
      entries[name] = _run_model(name)
      print(json.dumps({name: entries[name]}), flush=True)
      search.save_schemes(_OUT.value, {name: entries[name]}, {
          'command':
              'python -m experiments.sparseupdate_search ' +
              ' '.join(sys.argv[1:]),
          'source':
              f'{_SOURCE.value}:{_SPLIT.value}',
          'resolution':
              _RESOLUTION.value,
          'episodes':
              _EPISODES.value,
          'ways':
              _WAYS.value,
          'shots':
              _SHOTS.value,
          'queries':
              _QUERIES.value,
          'steps':
              _STEPS.value,
          'lr':
              _LR.value,
          'seed':
              _SEED.value,
          'budget_scale':
              _BUDGET_SCALE.value,
          'weight_candidates':
              f'1x1 convs among the last {_LAST_N.value}',
          'ratios': [1.0, 0.5, 0.25, 0.125],
          'budget_models':
              'cost.backward_memory_bytes (fp32_saved, batch 1)'
              ' and cost.backward_macs (per sample)'
      })
  except ValueError as e:  # one line, no traceback
    print(f'error: --models={_MODELS.value}: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
