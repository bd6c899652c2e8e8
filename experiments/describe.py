"""Prints a backbone's per-layer table (index, name, type, shapes, params, MACs).

  python -m experiments.describe --model=mcunet-5fps --resolution=128
  python -m experiments.describe --model=mbv2-w0.35 --feature_mix --json
"""
import json
from absl import flags

from tinytrain_jax.configs import cli
from tinytrain_jax.models import model_spec
from tinytrain_jax.models.describe import describe, format_table

_MODEL = flags.DEFINE_string('model', 'mcunet-5fps', 'backbone name')
_RES = flags.DEFINE_integer('resolution', 128, 'input size in pixels')
_MIX = flags.DEFINE_bool('feature_mix', False, "add TinyTrain's mix conv")
_CLASSES = flags.DEFINE_integer('num_classes', None,
                                'classifier size (default: features only)')
_JSON = flags.DEFINE_bool('json', False, 'print one JSON object instead')


def main(argv):
  del argv
  try:
    cli.check_resolution(_RES.value)
    spec = model_spec(_MODEL.value, _RES.value, _MIX.value, _CLASSES.value)
  except ValueError as e:
    cli.error_exit(str(e))
  desc = describe(spec)
  print(json.dumps(desc) if _JSON.value else format_table(desc))


if __name__ == '__main__':
  cli.run(main)
