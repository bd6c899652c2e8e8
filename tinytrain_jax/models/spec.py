"""Static architecture descriptions: blocks, convs, shapes, parameter and MAC counts.

A `ModelSpec` is hashable (usable as a jit static argument) and is the single source
of truth for layer names and tiny-training conv indices. Everything keyed by layer
(masks, Fisher scores, costs) uses `ConvLayer.name` or `ConvLayer.index`.

Conv indexing (tiny-training's convention, docs/reference/backbones.md §4): stem = 0, then
per block pointwise1 (absent when expand = 1), depthwise, pointwise2; the optional
feature-mix conv comes last; the classifier is never counted.
"""
import dataclasses
import functools
from typing import Optional, Tuple

STEM_CHANNELS = 16


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """One inverted-residual block: [pw1 1x1] -> dw kxk/s -> pw2 1x1 (+ skip)."""
  c_in: int
  expand: int
  kernel: int
  stride: int
  c_out: int

  @property
  def c_mid(self) -> int:
    return self.c_in * self.expand

  @property
  def residual(self) -> bool:
    return self.stride == 1 and self.c_in == self.c_out


@dataclasses.dataclass(frozen=True)
class ConvLayer:
  """One conv of the backbone with its shapes at the spec's resolution.

  Attributes:
    index: tiny-training conv index (0 = stem).
    name: stable parameter path, e.g. 'first_conv', 'blocks_3/pointwise1',
      'feature_mix'; `params[name.split('/')...]` holds {'kernel', 'bias', ...}.
    kind: 'first', 'pw1', 'dw', 'pw2' or 'mix'.
    block: block index, or None for the stem and the mix conv.
    kernel_shape: HWIO kernel shape; depthwise kernels are (k, k, 1, C).
  """
  index: int
  name: str
  kind: str
  block: Optional[int]
  c_in: int
  c_out: int
  kernel: int
  stride: int
  h_in: int
  h_out: int
  activation: Optional[str]

  @property
  def depthwise(self) -> bool:
    return self.kind == 'dw'

  @property
  def mask_axis(self) -> int:
    """Kernel axis that channel masks, deltas and Fisher scores index.

    -2 (input channels) for a dense conv: a weight gradient restricted to
    some input channels needs only those channels' activations, which is
    where sparse training saves memory. -1 for a depthwise kernel (k, k, 1,
    C), whose input and output channels coincide. The one place that decides
    it; everything else asks the conv.
    """
    return -1 if self.depthwise else -2

  @property
  def mask_channels(self) -> int:
    """Length of that axis: C_in, or C for depthwise."""
    return self.kernel_shape[self.mask_axis]

  def delta_shape(self, k: int) -> Tuple[int, int, int, int]:
    """Kernel shape of a delta trained on k of the `mask_channels`."""
    shape = list(self.kernel_shape)
    shape[self.mask_axis] = k
    return tuple(shape)

  @property
  def groups(self) -> int:
    return self.c_in if self.depthwise else 1

  @property
  def padding(self) -> int:
    return self.kernel // 2

  @property
  def kernel_shape(self) -> Tuple[int, int, int, int]:
    return (self.kernel, self.kernel, self.c_in // self.groups, self.c_out)

  @property
  def n_weights(self) -> int:
    """Number of kernel entries (no bias)."""
    return self.kernel * self.kernel * (self.c_in // self.groups) * self.c_out

  @property
  def n_params(self) -> int:
    """Kernel entries plus the per-channel (BN-folded) bias."""
    return self.n_weights + self.c_out

  @property
  def macs(self) -> int:
    """Forward multiply-accumulates per image."""
    return self.h_out * self.h_out * self.n_weights

  @property
  def input_elements(self) -> int:
    """Elements of the input activation per image."""
    return self.h_in * self.h_in * self.c_in

  @property
  def output_elements(self) -> int:
    """Elements of the output activation per image."""
    return self.h_out * self.h_out * self.c_out


def conv_out_size(h: int, kernel: int, stride: int) -> int:
  """Output size with symmetric k//2 padding: floor((h + 2(k//2) - k)/s) + 1."""
  return (h + 2 * (kernel // 2) - kernel) // stride + 1


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A backbone at one resolution, with optional feature-mix conv and classifier.

  Attributes:
    name: backbone name ('mcunet-5fps', 'mbv2-w0.35', 'proxyless-w0.3' or custom).
    blocks: the inverted-residual blocks.
    resolution: input height = width in pixels.
    feature_mix: output channels of the 1x1 feature-mix conv (+ReLU6), or None.
    num_classes: size of the linear classifier on the pooled feature, or None.
    batchnorm: True for the from-scratch variant with BatchNorm after every conv
      (parameters 'scale'/'bias' plus state 'mean'/'var'); False for BN-folded
      convs with a bias, as in the pretrained int8 models.
    bn_eps: BatchNorm epsilon (1e-5 MCUNet, 1e-3 MBV2/Proxyless).
  """
  name: str
  blocks: Tuple[BlockConfig, ...]
  resolution: int = 128
  feature_mix: Optional[int] = None
  num_classes: Optional[int] = None
  batchnorm: bool = False
  bn_eps: float = 1e-5
  stem_channels: int = STEM_CHANNELS

  @functools.cached_property
  def convs(self) -> Tuple[ConvLayer, ...]:
    """All convs in tiny-training index order."""
    layers = []
    h = self.resolution

    def add(name, kind, block, c_in, c_out, k, s, act):
      nonlocal h
      h_out = conv_out_size(h, k, s)
      layers.append(
          ConvLayer(
              len(layers), name, kind, block, c_in, c_out, k, s, h, h_out, act))
      h = h_out

    add('first_conv', 'first', None, 3, self.stem_channels, 3, 2, 'relu6')
    for b, blk in enumerate(self.blocks):
      if blk.expand != 1:
        add(f'blocks_{b}/pointwise1', 'pw1', b, blk.c_in, blk.c_mid, 1, 1,
            'relu6')
      add(f'blocks_{b}/depthwise', 'dw', b, blk.c_mid, blk.c_mid, blk.kernel,
          blk.stride, 'relu6')
      add(f'blocks_{b}/pointwise2', 'pw2', b, blk.c_mid, blk.c_out, 1, 1, None)
    if self.feature_mix:
      add('feature_mix', 'mix', None, self.blocks[-1].c_out, self.feature_mix,
          1, 1, 'relu6')
    return tuple(layers)

  @functools.cached_property
  def _by_name(self):
    return {c.name: c for c in self.convs}

  def conv(self, key) -> ConvLayer:
    """Returns the conv with this name (str) or tiny-training index (int)."""
    if isinstance(key, int):
      if not 0 <= key < len(self.convs):
        raise ValueError(f'conv index {key} out of range for {self.name}: '
                         f'valid 0..{len(self.convs) - 1}')
      return self.convs[key]
    if key not in self._by_name:
      raise ValueError(f'unknown conv {key!r} in {self.name}; names look like '
                       f"'first_conv', 'blocks_3/depthwise', 'feature_mix'")
    return self._by_name[key]

  @property
  def feature_dim(self) -> int:
    """Length of the pooled feature vector."""
    return self.feature_mix or self.blocks[-1].c_out

  @property
  def backbone_macs(self) -> int:
    """Forward conv MACs per image (classifier excluded)."""
    return sum(c.macs for c in self.convs)

  @property
  def backbone_params(self) -> int:
    """Conv kernel entries plus one bias per output channel (BN folded)."""
    return sum(c.n_params for c in self.convs)

  @property
  def classifier_params(self) -> int:
    return (self.feature_dim + 1) * self.num_classes if self.num_classes else 0

  @property
  def classifier_macs(self) -> int:
    return self.feature_dim * self.num_classes if self.num_classes else 0

  @property
  def total_macs(self) -> int:
    return self.backbone_macs + self.classifier_macs

  @property
  def total_params(self) -> int:
    """BN-folded parameter count. The BN variant has 2 more per channel
    (scale instead of nothing; the folded bias becomes BN's shift) and 2 state
    values (mean, var) that are not parameters; the zoo tables count BN's
    weight+bias, which is why folding lowers the count by C_out per conv."""
    return self.backbone_params + self.classifier_params
