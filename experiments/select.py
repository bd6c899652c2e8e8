r"""TinyTrain's task-adaptive sparse-update selection on one test task.

  python -m experiments.select --model=mcunet-5fps --source=omniglot --seed=0
  python -m experiments.select --model=mbv2-w0.35 --budget_kb=512 \
      --budget_mmacs=4.9 --json --save=/tmp/mask.json

Loads the pretrained backbone (feature-mix conv for mbv2/proxyless), samples
test task 0 of stream --seed, runs one Fisher pass + the greedy fill
(tinytrain_jax.selection) and prints the chosen layers and the mask's
backward bytes / MACs against the budgets (defaults: default_budgets(model)).
"""
import json
import sys

from absl import app
from absl import flags

from tinytrain_jax import masks
from tinytrain_jax import selection
from tinytrain_jax.configs import cli

_MODEL = flags.DEFINE_string(
    'model', 'mcunet-5fps', 'Backbone: mcunet-5fps, mbv2-w0.35 or '
    'proxyless-w0.3.')
_SOURCE = flags.DEFINE_string('source', 'omniglot', 'Test-task source.')
_SEED = flags.DEFINE_integer('seed', 0, 'Task stream seed.', lower_bound=0)
_BUDGET_KB = flags.DEFINE_float(
    'budget_kb', None, 'Backward-memory budget in KiB (fp32_saved model, '
    'batch 1); default: the published TinyTrain memory of the model.')
_BUDGET_MMACS = flags.DEFINE_float(
    'budget_mmacs', None, 'Backward-compute budget in millions of MACs per '
    'sample; default: the published TinyTrain compute of the model.')
_RESOLUTION = flags.DEFINE_integer('resolution', 128, 'Input size (pixels).',
                                   lower_bound=32)
_WAYS = flags.DEFINE_integer('ways', 5, 'Classes of the fixed task.',
                             lower_bound=1)
_SHOTS = flags.DEFINE_integer('shots', 5, 'Support images per class.',
                              lower_bound=1)
_VARIABLE = flags.DEFINE_bool('variable', False,
                              'Meta-Dataset variable-way/shot sampling.')
_LAYER_ORDER = flags.DEFINE_enum('layer_order', 'score',
                                 list(selection.criterion.LAYER_ORDERS),
                                 'Layer visiting order.')
_CHANNEL_RANK = flags.DEFINE_enum('channel_rank', 'fisher',
                                  list(selection.criterion.CHANNEL_RANKS),
                                  'Channel ranking within a layer.')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead.')
_SAVE = flags.DEFINE_string('save', None, 'Write the mask (masks.save_mask).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  kb, mmacs = _BUDGET_KB.value, _BUDGET_MMACS.value
  try:
    cli.check_resolution(_RESOLUTION.value)
    if (kb is not None and kb < 0) or (mmacs is not None and mmacs < 0):
      raise ValueError(f'--budget_kb={kb} and --budget_mmacs={mmacs} must '
                       'be >= 0 (or omitted for the defaults)')
    spec, params, sel = selection.select_for_task(
        _MODEL.value, _SOURCE.value, _SEED.value,
        None if kb is None else kb * 1024,
        None if mmacs is None else mmacs * 1e6, _RESOLUTION.value, _WAYS.value,
        _SHOTS.value, _VARIABLE.value, layer_order=_LAYER_ORDER.value,
        channel_rank=_CHANNEL_RANK.value)
  except ValueError as e:  # one line, no traceback
    print(f'error: --model={_MODEL.value} --source={_SOURCE.value}: {e}',
          file=sys.stderr)
    sys.exit(1)
  if _SAVE.value:
    masks.save_mask(
        _SAVE.value, sel.mask, {
            'model': spec.name,
            'resolution': spec.resolution,
            'seed': _SEED.value,
            'source': _SOURCE.value,
            'budget_bytes': sel.budget_bytes,
            'budget_macs': sel.budget_macs,
            'layers': [l['name'] for l in sel.layers]
        })
  if _JSON.value:
    print(json.dumps(selection.selection_report(sel)))
  else:
    print(selection.format_selection(sel))


if __name__ == '__main__':
  cli.run(main, prefix=lambda: f'--model={_MODEL.value} '
          f'--source={_SOURCE.value}')
