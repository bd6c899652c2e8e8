r"""Backward-pass cost of a fine-tuning method on a TinyTrain backbone.

  python -m experiments.cost --model=mcunet-5fps --method=fulltrain
  python -m experiments.cost --model=mbv2-w0.35 --feature_mix \
      --method=sparseupdate --batch_size=25 --json

Prints the evaluation's cost columns for the method (backward MACs per
sample, fp32_saved bytes at the back-propagated batch; the very function
`experiments.evaluate` reports, `train.methods.method_costs`), and for the
mask methods (fulltrain, lastlayer, biasonly, sparseupdate) a per-layer table
(index, name, forward MACs, backward weight- and input-gradient MACs per
sample, bytes JAX saves for the backward pass) with totals from every other
cost model (`cost.methods.method_report`).
"""
import json
import sys

from absl import app
from absl import flags

from tinytrain_jax.configs import cli
from tinytrain_jax.cost import methods as cost_methods
from tinytrain_jax.train import methods

_MODEL = flags.DEFINE_string(
    'model', 'mcunet-5fps',
    'Backbone: mcunet-5fps, mbv2-w0.35 or proxyless-w0.3.')
_METHOD = flags.DEFINE_enum('method', 'fulltrain',
                            list(methods.STATIC_COST_METHODS),
                            'Which parameters are trained.')
_RESOLUTION = flags.DEFINE_integer('resolution', 128, 'Input size in pixels.',
                                   lower_bound=32)
_FEATURE_MIX = flags.DEFINE_bool(
    'feature_mix', False, "Add TinyTrain's 1x1 mix conv (mbv2, proxyless).")
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 1, 'Support images per step (bytes scale with it).',
    lower_bound=1)
_QUERY_SIZE = flags.DEFINE_integer(
    'query_size', 0, 'Query images (only transductive back-propagates them).',
    lower_bound=0)
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead.')


def _format(report):
  lines = [
      f"{report['model']} {report['method']} @ {report['resolution']} "
      f"px: bwd {report['bwd_macs']:,} MACs per sample, "
      f"{report['bwd_bytes']:,} B fp32_saved at batch "
      f"{report['cost_batch']} (evaluation columns)"
  ]
  if report['measured'] is not None:
    lines.append(cost_methods.format_report(report['measured']))
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    cli.check_resolution(_RESOLUTION.value)
    report = methods.cost_report(_MODEL.value, _METHOD.value, _RESOLUTION.value,
                                 _FEATURE_MIX.value, _BATCH_SIZE.value,
                                 _QUERY_SIZE.value)
  except ValueError as e:  # one line, no traceback, no usage dump
    print(
        f'error: --model={_MODEL.value} --resolution={_RESOLUTION.value} '
        f'--feature_mix={_FEATURE_MIX.value}: {e}', file=sys.stderr)
    sys.exit(1)
  print(json.dumps(report) if _JSON.value else _format(report))


if __name__ == '__main__':
  cli.run(main)
