r"""Samples few-shot episodes from a source and prints their statistics.

  python -m experiments.episodes --source=omniglot --split=test \
      --num_episodes=100 --seed=0 --contact_sheet=/tmp/episode.png
  python -m experiments.episodes --source=dir:/data/my_task --json
  python -m experiments.episodes --source=cifar10_subset --mode=fixed \
      --ways=5 --shots=1 --queries=15
"""
import sys

from absl import flags

from tinytrain_jax.configs import cli
from tinytrain_jax.data import sampler
from tinytrain_jax.data import sources
from tinytrain_jax.data import summary

_SOURCE = flags.DEFINE_string(
    'source', 'omniglot',
    'omniglot | cifar10_subset | tfds:<name> | dir:<path>')
_SPLIT = flags.DEFINE_enum('split', 'test', list(sources.SPLITS),
                           'Class split.')
_NUM_EPISODES = flags.DEFINE_integer('num_episodes', 10, 'Episodes to draw.',
                                     lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Episode stream seed.')
_START = flags.DEFINE_integer('start', 0, 'Index of the first episode.',
                              lower_bound=0)
_MODE = flags.DEFINE_enum('mode', 'variable', list(sampler.MODES),
                          'variable (Meta-Dataset) or fixed N-way K-shot.')
_WAYS = flags.DEFINE_integer('ways', None, 'Fixed ways (fixed default 5).')
_SHOTS = flags.DEFINE_integer('shots', None, 'Fixed shots (fixed default 5).')
_QUERIES = flags.DEFINE_integer('queries', None,
                                'Fixed queries per class (fixed default 15).')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON line per episode.')
_CONTACT_SHEET = flags.DEFINE_string(
    'contact_sheet', None, 'Save a PNG of the first episode to this path.')


def main(argv):
  del argv
  try:
    source = sources.get_source(_SOURCE.value, _SPLIT.value)
    config = sampler.SamplerConfig(mode=_MODE.value, ways=_WAYS.value,
                                   shots=_SHOTS.value, queries=_QUERIES.value)
    specs = sampler.sample_episodes(source, config, _SEED.value,
                                    _NUM_EPISODES.value, start=_START.value)
    if _JSON.value:
      for i, spec in enumerate(specs, start=_START.value):
        print(summary.episode_json(source, spec, i))
    else:
      print(summary.summarize(source, specs))
    if _CONTACT_SHEET.value and specs:
      summary.save_contact_sheet(source, specs[0], _CONTACT_SHEET.value)
      print(
          f'contact sheet of episode {_START.value} saved to '
          f'{_CONTACT_SHEET.value}', file=sys.stderr)
  except ValueError as e:
    cli.error_exit(str(e))


if __name__ == '__main__':
  cli.run(main)
