"""Classifies real photos shipped with scikit-image with the pretrained models.

  python -m experiments.imagenet_check [--int8] [--models=mcunet-5fps,...]

Prints top-5 ImageNet class indices per image and model (float, and with
--int8 the integer simulation of tiny-training's int8 model too).
"""
from absl import flags
import jax
import numpy as np

from tinytrain_jax.configs import cli
from tinytrain_jax.models import apply, apply_int8, load_arrays, load_pretrained
from tinytrain_jax.models.imagenet import eval_transform

_MODELS = flags.DEFINE_list('models',
                            ['mcunet-5fps', 'mbv2-w0.35', 'proxyless-w0.3'],
                            'backbones')
_INT8 = flags.DEFINE_bool('int8', False, 'also run the int8 simulation')
_IMAGES = {
    'chelsea (cat: 281-285)': 'chelsea',
    'coffee (967 espresso / 968 cup / 504 mug)': 'coffee',
    'camera (872 tripod)': 'camera'
}


def main(argv):
  del argv
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  x = np.stack([eval_transform(getattr(skdata, f)()) for f in _IMAGES.values()])
  for name in _MODELS.value:
    try:
      spec, params = load_pretrained(name, num_classes=1000)
    except (ValueError, OSError) as e:
      cli.error_exit(str(e))
    logits = np.asarray(
        jax.jit(apply, static_argnums=0)(spec, params, x).logits)
    q = apply_int8(spec, load_arrays(name), x) if _INT8.value else None
    for i, label in enumerate(_IMAGES):
      line = f'{name:<15} {label:<42} top-5 {np.argsort(-logits[i])[:5].tolist()}'
      if q is not None:
        line += f'  int8 {np.argsort(-q[i])[:5].tolist()}'
      print(line)


if __name__ == '__main__':
  cli.run(main)
