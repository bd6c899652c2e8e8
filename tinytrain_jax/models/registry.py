"""The three TinyTrain backbones by name (block tables of docs/reference/backbones.md §2)."""
import dataclasses
from typing import Optional

from tinytrain_jax.models.spec import BlockConfig, ModelSpec

# (C_in, expand, k, stride, C_out) per block.
_MCUNET_5FPS = ((16, 1, 3, 1, 8), (8, 4, 3, 2, 16), (16, 3, 3, 1, 16),
                (16, 3, 7, 2, 24), (24, 5, 3, 1, 24), (24, 5, 3, 2, 40),
                (40, 4, 7, 1, 40), (40, 4, 5, 1, 48), (48, 3, 3, 1, 48),
                (48, 4, 3, 1, 48), (48, 5, 7, 2, 96), (96, 4, 5, 1, 96),
                (96, 4, 5, 1, 96), (96, 6, 3, 1, 160))
_MBV2_W035 = ((16, 1, 3, 1, 8), (8, 6, 3, 2, 8), (8, 6, 3, 1, 8),
              (8, 6, 3, 2, 16), (16, 6, 3, 1, 16), (16, 6, 3, 1, 16),
              (16, 6, 3, 2, 24), (24, 6, 3, 1, 24), (24, 6, 3, 1, 24),
              (24, 6, 3, 1, 24), (24, 6, 3, 1, 32), (32, 6, 3, 1, 32),
              (32, 6, 3, 1, 32), (32, 6, 3, 2, 56), (56, 6, 3, 1, 56),
              (56, 6, 3, 1, 56), (56, 6, 3, 1, 112))
_PROXYLESS_W03 = ((16, 1, 3, 1, 8), (8, 3, 5, 2, 16), (16, 3, 3, 1, 16),
                  (16, 3, 7, 2, 16), (16, 3, 3, 1, 16), (16, 3, 5, 1, 16),
                  (16, 3, 5, 1, 16), (16, 6, 7, 2, 24), (24, 3, 5, 1, 24),
                  (24, 3, 5, 1, 24), (24, 3, 5, 1, 24), (24, 6, 5, 1, 32),
                  (32, 3, 5, 1, 32), (32, 3, 5, 1, 32), (32, 3, 5, 1,
                                                         32), (32, 6, 7, 2, 64),
                  (64, 6, 7, 1, 64), (64, 3, 7, 1, 64), (64, 3, 7, 1,
                                                         64), (64, 6, 7, 1, 96))


@dataclasses.dataclass(frozen=True)
class _Entry:
  blocks: tuple
  mix_channels: Optional[int]  # TinyTrain's feature-mix conv width, if any
  bn_eps: float
  zoo_resolution: int


BACKBONES = {
    'mcunet-5fps': _Entry(_MCUNET_5FPS, None, 1e-5, 96),
    'mbv2-w0.35': _Entry(_MBV2_W035, 448, 1e-3, 144),
    'proxyless-w0.3': _Entry(_PROXYLESS_W03, 384, 1e-3, 176),
}
ALIASES = {
    'mcunet-in1': 'mcunet-5fps',
    'mcunet': 'mcunet-5fps',
    'mbv2': 'mbv2-w0.35',
    'proxyless': 'proxyless-w0.3'
}


def canonical_name(name: str) -> str:
  """Resolves aliases; raises ValueError naming the accepted backbones."""
  name = ALIASES.get(name, name)
  if name not in BACKBONES:
    raise ValueError(f'unknown model {name!r}; accepted: '
                     f'{", ".join(sorted(BACKBONES))} '
                     f'(aliases: {", ".join(sorted(ALIASES))})')
  return name


def model_spec(name: str, resolution: int = 128, feature_mix: bool = False,
               num_classes: Optional[int] = None,
               batchnorm: bool = False) -> ModelSpec:
  """Builds the `ModelSpec` of a named TinyTrain backbone.

  Args:
    name: 'mcunet-5fps' (= zoo 'mcunet-in1'), 'mbv2-w0.35' or 'proxyless-w0.3'.
    resolution: input size in pixels; any value >= 32 (multiples of 32 keep
      every stride-2 stage exact; the zoo's 144 and 176 work too).
    feature_mix: add TinyTrain's 1x1 mix conv (112->448 MBV2, 96->384
      Proxyless). MCUNet has none; asking for it raises.
    num_classes: optional linear classifier size (1000 for ImageNet).
    batchnorm: BN after every conv (training from scratch) instead of folded.

  Example:
    spec = model_spec('mcunet-5fps')
    assert spec.backbone_macs == 22_453_504
  """
  name = canonical_name(name)
  entry = BACKBONES[name]
  if not isinstance(resolution, int) or resolution < 32:
    raise ValueError(f'resolution must be an int >= 32, got {resolution!r}; '
                     'use e.g. --resolution=128')
  if feature_mix and entry.mix_channels is None:
    raise ValueError(
        f'{name} has no feature-mix layer in TinyTrain; drop '
        '--feature_mix (only mbv2-w0.35 and proxyless-w0.3 have one)')
  if num_classes is not None and num_classes < 1:
    raise ValueError(f'num_classes must be >= 1 or None, got {num_classes}')
  return ModelSpec(name=name,
                   blocks=tuple(BlockConfig(*b) for b in entry.blocks),
                   resolution=resolution,
                   feature_mix=entry.mix_channels if feature_mix else None,
                   num_classes=num_classes, batchnorm=batchnorm,
                   bn_eps=entry.bn_eps)
