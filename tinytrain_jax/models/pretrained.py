"""ImageNet-pretrained weights: tiny-training's int8, BN-folded backbones.

Files come from the asset cache (`tinytrain_jax.assets`): `<root>/weights/<name>.npz`
in the format of the shared weights README (flat keys 'first_conv/weight',
'blocks/3/pointwise1/w_scales', ...; int8 OIHW weights, int32 biases, per-channel
float scales, per-tensor activation scales and zero points). When the file is
missing, `models.download` fetches the original pickle from tiny-training's pinned
commit, checks its sha256, converts it and caches it (needs internet).

Dequantisation (float32 at load time):
  W[o] = weight[o] * w_scales[o];  b[o] = bias[o] * w_scales[o] * x_scale
ImageNet top-1 of the shipped int8 models at 128 px (tiny-training's README):
mcunet-5fps 54.1 %, mbv2-w0.35 45.7 %, proxyless-w0.3 48.3 %.
"""
import hashlib
import json
import pathlib
import zipfile
import zlib
from typing import Dict, Optional, Tuple

import numpy as np

from tinytrain_jax import assets
from tinytrain_jax import tree_paths
from tinytrain_jax.models import download as dl
from tinytrain_jax.models.registry import canonical_name, model_spec
from tinytrain_jax.models.spec import ModelSpec

QUANT_KEYS = ('weight', 'bias', 'w_scales', 'x_scale', 'x_zero', 'y_scale',
              'y_zero')


def npz_prefix(name: str) -> str:
  """Our layer path -> the npz key prefix ('blocks_3/depthwise' -> 'blocks/3/depthwise')."""
  if name.startswith('blocks_'):
    block, role = name.split('/')
    return f'blocks/{block[len("blocks_"):]}/{role}'
  return name


def weights_path(name: str) -> pathlib.Path:
  return assets.asset_path('weights', canonical_name(name) + '.npz')


# sha256 of each cached weights file and of its arrays (`arrays_sha256`),
# owned by the project: hashes only, never the files.
MANIFEST_PATH = pathlib.Path(__file__).with_name('weights_manifest.json')
# Errors np.load raises on a damaged npz (zip, CRC, truncation, pickle).
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
                zlib.error)


def manifest() -> Dict[str, Dict[str, str]]:
  """{model: {'file_sha256', 'arrays_sha256'}} from weights_manifest.json."""
  return json.loads(MANIFEST_PATH.read_text())['weights']


def file_sha256(path) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def arrays_sha256(arrays: Dict[str, np.ndarray]) -> str:
  """Hex sha256 of the arrays (sorted keys, dtype, shape, bytes).

  Independent of how the npz was zipped, so a file re-converted by
  `models.download` (other zip timestamps) still verifies.
  """
  digest = hashlib.sha256()
  for k in sorted(arrays):
    a = np.ascontiguousarray(arrays[k])
    digest.update(f'{k}|{a.dtype.str}|{a.shape}|'.encode())
    digest.update(a.tobytes())
  return digest.hexdigest()


def _restore_hint(name: str, file) -> str:
  return (f'delete {file} and rerun with internet access to fetch it again, '
          f'or copy a good weights/{name}.npz into ${assets.ENV_VAR}')


def verify_weights(name: str, file, arrays: Dict[str, np.ndarray]) -> None:
  """Checks a cached weights file against the project's manifest.

  The file's sha256 is compared first; when only the zip packaging differs
  the arrays' digest must match instead.

  Raises:
    ValueError: one line naming the file, both hashes and how to restore it.
  """
  want = manifest().get(name)
  if want is None or file_sha256(file) == want['file_sha256']:
    return
  got = arrays_sha256(arrays)
  if got != want['arrays_sha256']:
    raise ValueError(
        f'weights file {file} fails its integrity check (arrays sha256 '
        f'{got[:16]}..., expected {want["arrays_sha256"][:16]}... from '
        f'{MANIFEST_PATH.name}): it is damaged or modified; ' +
        _restore_hint(name, file))


def load_arrays(name: str, path: Optional[str] = None,
                download: bool = True) -> Dict[str, np.ndarray]:
  """Raw npz arrays of a pretrained backbone, from the cache or downloaded.

  A file from the asset cache is checked against `weights_manifest.json`
  (`verify_weights`); an explicit `path` is taken as given.

  Raises:
    FileNotFoundError / OSError: no cached file and the download is impossible.
    ValueError: unknown model name, or an unreadable, truncated or modified
      weights file (one line naming it and how to restore it).
  """
  name = canonical_name(name)
  file = pathlib.Path(path) if path else weights_path(name)
  if not file.exists():
    if path or not download:
      raise FileNotFoundError(
          assets.missing_asset_message(file, f'pretrained weights for {name}'))
    dl.fetch_pretrained_npz(name, file.parent)
  try:
    with np.load(file, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except _READ_ERRORS as e:
    msg = ' '.join(str(e).split()) or 'truncated'
    raise ValueError(f'cannot read weights file {file} ({type(e).__name__}: '
                     f'{msg}); it is damaged: ' +
                     _restore_hint(name, file)) from None
  if not path:
    verify_weights(name, file, arrays)
  return arrays


def _dequantize(arrays, prefix):
  ws = arrays[prefix + '/w_scales'].astype(np.float64)
  w = arrays[prefix + '/weight'].astype(np.float64) * ws[:, None, None, None]
  b = arrays[prefix + '/bias'].astype(np.float64) * ws * float(
      arrays[prefix + '/x_scale'])
  return w.astype(np.float32), b.astype(np.float32)


def _check_key(arrays, key, shape, file):
  if key not in arrays:
    raise ValueError(f'weights file {file} has no key {key!r}; it does not '
                     'match this architecture (wrong model name or file?)')
  if shape is not None and arrays[key].shape != shape:
    raise ValueError(f'weights file {file}: {key!r} has shape '
                     f'{arrays[key].shape}, expected {shape}; wrong model file')


def params_from_arrays(spec: ModelSpec, arrays: Dict[str, np.ndarray],
                       source: str = '<arrays>'):
  """Dequantised float32 params for `spec` from raw npz arrays.

  The feature-mix conv (no pretrained weights exist) gets `init_feature_mix`.
  A classifier is taken from the file when spec.num_classes == 1000.
  """
  if spec.batchnorm:
    raise ValueError('pretrained weights are BN-folded; use batchnorm=False')
  params = {}
  for conv in spec.convs:
    if conv.kind == 'mix':
      continue
    pre = npz_prefix(conv.name)
    o, i, k = conv.c_out, conv.c_in // conv.groups, conv.kernel
    _check_key(arrays, pre + '/weight', (o, i, k, k), source)
    for q in QUANT_KEYS[1:]:
      _check_key(arrays, f'{pre}/{q}', None, source)
    w, b = _dequantize(arrays, pre)
    params = tree_paths.replace(params, conv.name, {
        'kernel': w.transpose(2, 3, 1, 0),
        'bias': b
    })
  if spec.feature_mix:
    params['feature_mix'] = init_feature_mix(spec)
  if spec.num_classes:
    if spec.num_classes != 1000:
      raise ValueError(f'pretrained classifier has 1000 classes, got '
                       f'num_classes={spec.num_classes}; use None or 1000 '
                       'and add your own head')
    _check_key(arrays, 'classifier/weight', (1000, spec.feature_dim, 1, 1),
               source)
    w, b = _dequantize(arrays, 'classifier')
    params['classifier'] = {'kernel': w[:, :, 0, 0].T, 'bias': b}
  return params


def init_feature_mix(spec: ModelSpec):
  """Deterministic sign-split identity init of the 1x1 mix conv (C -> 4C).

  No pretrained weights exist for TinyTrain's mix layer (112->448, 96->384). A
  random init would scramble the pretrained feature; instead output channel
  blocks are [I, -I, I/2, -I/2] (scaled identity), so that with the ReLU6 that
  follows, relu6(x) - relu6(-x) recovers x exactly for |x| <= 6 and the halved
  pair extends that to |x| <= 12: the pretrained feature is preserved losslessly
  at step 0 and meta-training learns the mix from there. Bias 0.
  """
  c_in, c_out = spec.blocks[-1].c_out, spec.feature_mix
  reps = c_out // c_in
  if reps * c_in != c_out:
    raise ValueError(f'feature_mix width {c_out} is not a multiple of {c_in}')
  signs = [1.0, -1.0, 0.5, -0.5] * (reps // 4 + 1)
  eye = np.eye(c_in, dtype=np.float32)
  w = np.concatenate([s * eye for s in signs[:reps]], axis=1)
  return {'kernel': w[None, None], 'bias': np.zeros((c_out,), np.float32)}


def load_pretrained(name: str, resolution: int = 128, feature_mix: bool = False,
                    num_classes: Optional[int] = None,
                    path: Optional[str] = None) -> Tuple[ModelSpec, dict]:
  """Loads a backbone with dequantised ImageNet-pretrained float32 weights.

  Args:
    name: 'mcunet-5fps', 'mbv2-w0.35' or 'proxyless-w0.3'.
    resolution: input size (the int8 models were calibrated at 128).
    feature_mix: add TinyTrain's mix conv (init: `init_feature_mix`).
    num_classes: None (features only) or 1000 (the ImageNet classifier).
    path: explicit .npz file instead of the asset cache.

  Returns:
    (spec, params) with params as in `network`.

  Example:
    spec, params = load_pretrained('mcunet-5fps')
    feats = network.apply(spec, params, images).features  # f32[B, 160]
  """
  spec = model_spec(name, resolution, feature_mix, num_classes)
  arrays = load_arrays(spec.name, path)
  return spec, params_from_arrays(spec, arrays, str(path or weights_path(name)))
