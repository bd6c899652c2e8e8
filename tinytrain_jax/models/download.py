"""Fetches tiny-training's int8 ImageNet backbones and converts them to `.npz`.

The three TinyTrain backbones (mcunet-5fps, mbv2-w0.35, proxyless-w0.3) are
published by MIT HAN Lab as `algorithm/assets/mcu_models/<name>.pkl` in the
GitHub repository `mit-han-lab/tiny-training`. This module downloads one of
those files from a pinned commit, checks its SHA-256, reads it without torch
and writes the flat numpy format used by the rest of the project (see
the asset cache layout in `tinytrain_jax/assets.py`):

  <dest_dir>/<name>.npz   flat dict, keys like `blocks/3/pointwise1/x_scale`
  <dest_dir>/<name>.json  small provenance sidecar

The `.pkl` files are torch zip archives (`torch.save` with the zip format).
Their `<archive>/data.pkl` member holds only dicts, lists, Python scalars and
numpy arrays, so a restricted `pickle.Unpickler` that knows numpy's
reconstruction helpers is enough; no torch class is ever referenced and no
tensor storage is expected.

Structure of the pickled cfg dict, as consumed by tiny-training's
`build_quantized_network_from_cfg` in
`algorithm/quantize/custom_quantized_format.py`:

  cfg = {
    'first_conv': conv,
    'blocks': [{'pointwise1': conv | None, 'depthwise': conv | None,
                'se': None (optional key), 'pointwise2': conv | None,
                'residual': None | {'params': {'x_scale', 'x_zero',
                                               'y_scale', 'y_zero'}}}, ...],
    'feature_mix': conv | None,
    'classifier': conv,
  }
  conv = {'in_channel', 'out_channel', 'kernel_size', 'stride', 'groups',
          'params': {'weight', 'bias', 'w_scales', 'x_scale', 'x_zero',
                     'y_scale', 'y_zero', ...}}

Every conv (and the classifier, a 1x1 conv with weight `[1000, C, 1, 1]`)
becomes 7 npz entries `<prefix>/{weight,bias,w_scales,x_scale,x_zero,y_scale,
y_zero}`; every identity residual becomes 4 entries
`blocks/<i>/residual/{x_scale,x_zero,y_scale,y_zero}`. Unsupported variants
(a feature-mix conv, a squeeze-excite module, a conv shortcut) raise
`ValueError` instead of being silently dropped.

The downloading code path is never exercised by the tests against the network:
they serve a locally built archive through a `file://` URL.
"""
import codecs
import hashlib
import http.client
import importlib
import json
import os
import pathlib
import pickle
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Any, BinaryIO, Callable, Mapping, Optional, Union

import numpy as np

REPOSITORY = 'mit-han-lab/tiny-training'
PINNED_COMMIT = '7bf8e05bbeebda76cbf2ea2dd596dedee7e3f343'
PICKLE_DIR = 'algorithm/assets/mcu_models'

PICKLE_SHA256: dict[str, str] = {
    'mcunet-5fps':
        '4de2e06ed39041fc3609de806461a9e1d1f82f186927474bd9e9b0de756a0f00',
    'mbv2-w0.35':
        '310d2871c50a89af9f11928e28418729984c2e402cf68560a19b6cbb75854163',
    'proxyless-w0.3':
        '0da06d029506a36e5a5d0822493cdae11f37ba78662f9aca25ba5b3c958cf8e1',
}

LICENSE_NOTE = 'MIT, Copyright (c) 2022 MIT HAN Lab'

CONV_ENTRIES = ('weight', 'bias', 'w_scales', 'x_scale', 'x_zero', 'y_scale',
                'y_zero')
RESIDUAL_ENTRIES = ('x_scale', 'x_zero', 'y_scale', 'y_zero')
BLOCK_ROLES = ('pointwise1', 'depthwise', 'pointwise2')

# dtype of each npz entry (by key suffix).
ENTRY_DTYPES: dict[str, np.dtype] = {
    'weight': np.dtype(np.int8),
    'bias': np.dtype(np.int32),
    'w_scales': np.dtype(np.float32),
    'x_scale': np.dtype(np.float64),
    'x_zero': np.dtype(np.int32),
    'y_scale': np.dtype(np.float64),
    'y_zero': np.dtype(np.int32),
}

_CHUNK = 1 << 16


def _check_name(name: str) -> None:
  if name not in PICKLE_SHA256:
    raise ValueError(f'unknown pretrained model {name!r}; accepted names: '
                     f'{", ".join(sorted(PICKLE_SHA256))}')


def pickle_path(name: str) -> str:
  """Returns the path of a model's pickle inside the tiny-training repository.

  Args:
    name: One of the keys of `PICKLE_SHA256`.

  Returns:
    E.g. `'algorithm/assets/mcu_models/mcunet-5fps.pkl'`.

  Raises:
    ValueError: If `name` is not a known model.
  """
  _check_name(name)
  return f'{PICKLE_DIR}/{name}.pkl'


def pickle_url(name: str) -> str:
  """Returns the raw GitHub URL of a model's pickle at `PINNED_COMMIT`.

  Args:
    name: One of the keys of `PICKLE_SHA256`.

  Returns:
    The `https://raw.githubusercontent.com/...` URL of the file.

  Raises:
    ValueError: If `name` is not a known model.
  """
  return (f'https://raw.githubusercontent.com/{REPOSITORY}/{PINNED_COMMIT}/'
          f'{pickle_path(name)}')


# --------------------------------------------------------------------------
# Restricted unpickling.


def _numpy_multiarray():
  """Returns numpy's multiarray module without touching deprecated aliases."""
  try:
    return importlib.import_module('numpy._core.multiarray')  # numpy >= 2
  except ImportError:  # pragma: no cover - numpy 1.x
    return importlib.import_module('numpy.core.multiarray')


def _allowed_globals() -> dict[tuple[str, str], Any]:
  multiarray = _numpy_multiarray()
  allowed = {
      ('numpy', 'ndarray'): np.ndarray,
      ('numpy', 'dtype'): np.dtype,
      ('_codecs', 'encode'): codecs.encode,
  }
  reconstruct = getattr(multiarray, '_reconstruct')
  for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    allowed[(module, '_reconstruct')] = reconstruct
    allowed[(module, 'scalar')] = multiarray.scalar
  return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickler that can only rebuild containers, scalars and numpy arrays.

  Only numpy's array/dtype/scalar reconstruction helpers and `_codecs.encode`
  (used by protocol 2 for `bytes`) may be referenced. Anything else, e.g.
  `os.system` or a torch class, raises `pickle.UnpicklingError` before it is
  imported. Persistent ids (torch tensor storages) are refused too.
  """

  _ALLOWED = None

  def find_class(self, module: str, name: str) -> Any:
    """Resolves an allowed global.

    Args:
      module: Module name from the pickle stream.
      name: Qualified name inside `module`.

    Returns:
      The allowed object.

    Raises:
      pickle.UnpicklingError: If the global is not on the allow list.
    """
    if _NumpyOnlyUnpickler._ALLOWED is None:
      _NumpyOnlyUnpickler._ALLOWED = _allowed_globals()
    try:
      return _NumpyOnlyUnpickler._ALLOWED[(module, name)]
    except KeyError:
      allowed = ', '.join(
          sorted(f'{m}.{n}' for m, n in _NumpyOnlyUnpickler._ALLOWED))
      raise pickle.UnpicklingError(
          f"refusing to unpickle: global '{module}.{name}' is not allowed "
          f'(only numpy arrays, Python containers and scalars are expected; '
          f'allowed globals: {allowed})') from None

  def persistent_load(self, pid: Any) -> Any:
    """Refuses persistent ids.

    Args:
      pid: The persistent id from the pickle stream.

    Raises:
      pickle.UnpicklingError: Always; torch tensor storages are unsupported.
    """
    kind = pid[0] if isinstance(pid, tuple) and pid else pid
    raise pickle.UnpicklingError(
        f'refusing to unpickle: persistent id {kind!r} (a torch tensor '
        'storage?) is not supported; the tiny-training cfg pickles are '
        'expected to hold numpy arrays only')


def load_numpy_only_pickle(file: BinaryIO) -> Any:
  """Unpickles `file` with `_NumpyOnlyUnpickler`.

  Args:
    file: Binary file object positioned at the start of a pickle stream.

  Returns:
    The unpickled object.

  Raises:
    pickle.UnpicklingError: If the pickle references a disallowed global or a
      persistent id, or is malformed.
  """
  return _NumpyOnlyUnpickler(file).load()


def read_torch_zip_pickle(path: Union[str, os.PathLike]) -> Any:
  """Reads the `*/data.pkl` member of a torch zip archive without torch.

  Args:
    path: Path of a file written by `torch.save` (zip format).

  Returns:
    The unpickled object (for tiny-training's pickles: the cfg dict).

  Raises:
    ValueError: If `path` is not a zip archive, or it does not contain exactly
      one `<dir>/data.pkl` member.
    pickle.UnpicklingError: If the pickle references anything but numpy and
      Python builtins (see `_NumpyOnlyUnpickler`).
  """
  path = pathlib.Path(path)
  if not zipfile.is_zipfile(path):
    raise ValueError(f'{path} is not a torch zip archive (not a zip file)')
  with zipfile.ZipFile(path) as archive:
    members = [
        n for n in archive.namelist()
        if n.endswith('/data.pkl') and n.count('/') == 1
    ]
    if len(members) != 1:
      raise ValueError(f'{path}: expected exactly one <dir>/data.pkl member in '
                       f'the torch zip archive, found {members or "none"}')
    with archive.open(members[0]) as f:
      return load_numpy_only_pickle(f)


# --------------------------------------------------------------------------
# cfg dict <-> flat arrays.


def _require(mapping: Any, key: str, where: str) -> Any:
  if not isinstance(mapping, Mapping):
    raise ValueError(
        f'cfg{where}: expected a dict, got {type(mapping).__name__}')
  if key not in mapping:
    raise ValueError(f"cfg{where}: missing key '{key}' (has "
                     f'{sorted(map(str, mapping))})')
  return mapping[key]


def _exact_cast(value: Any, dtype: np.dtype, key: str,
                scalar: bool) -> np.ndarray:
  """Casts to `dtype`, refusing any cast that changes a value."""
  try:
    arr = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{key}: cannot convert {type(value).__name__} to an '
                     f'array ({e})') from e
  if arr.dtype.kind not in 'iuf':
    raise ValueError(f'{key}: expected a numeric value, got dtype {arr.dtype}')
  if scalar:
    if arr.size != 1:
      raise ValueError(f'{key}: expected a scalar, got shape {arr.shape}')
    arr = arr.reshape(())
  if arr.dtype == dtype:
    return arr.copy()
  with np.errstate(all='ignore'):
    out = arr.astype(dtype)
    if arr.dtype.kind == 'f' or dtype.kind == 'f':
      same = np.array_equal(out.astype(np.float64), arr.astype(np.float64))
    else:
      same = np.array_equal(out.astype(np.int64), arr.astype(np.int64))
  if not same:
    raise ValueError(f'{key}: values of dtype {arr.dtype} do not fit {dtype} '
                     'exactly; refusing a lossy conversion')
  return out


def _convert_conv(conv: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
  params = _require(conv, 'params', f"['{prefix}']")
  for entry in CONV_ENTRIES:
    value = _require(params, entry, f"['{prefix}']['params']")
    out[f'{prefix}/{entry}'] = _exact_cast(
        value, ENTRY_DTYPES[entry], f'{prefix}/{entry}', scalar=entry
        not in ('weight', 'bias', 'w_scales'))
  weight = out[f'{prefix}/weight']
  if weight.ndim != 4:
    raise ValueError(f'{prefix}/weight: expected an OIHW 4-d array, got shape '
                     f'{weight.shape}')
  n_out = weight.shape[0]
  for entry in ('bias', 'w_scales'):
    if out[f'{prefix}/{entry}'].shape != (n_out,):
      raise ValueError(f'{prefix}/{entry}: expected shape ({n_out},) to match '
                       f'weight {weight.shape}, got '
                       f'{out[f"{prefix}/{entry}"].shape}')
  if isinstance(conv, Mapping) and conv.get('out_channel') is not None:
    if int(conv['out_channel']) != n_out:
      raise ValueError(f"{prefix}: out_channel={conv['out_channel']} does not "
                       f'match weight shape {weight.shape}')


def convert_cfg_to_arrays(cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Flattens a tiny-training quantized cfg dict into the npz key format.

  Key order: `first_conv`, then per block `pointwise1` (if present),
  `depthwise`, `pointwise2`, `residual` (if present), then `classifier`, each
  with the entries in `CONV_ENTRIES` / `RESIDUAL_ENTRIES` order. Values are
  cast to `ENTRY_DTYPES` (weight int8, bias int32, w_scales float32, 0-d
  float64 scales and 0-d int32 zero points); a cast that would change any
  value is refused. Extra keys in a conv's `params` (e.g. an
  `effective_scale`) and the conv geometry (`in_channel`, `kernel_size`,
  `stride`, ...) are not stored.

  Args:
    cfg: The unpickled cfg dict (see the module docstring for its structure).

  Returns:
    Flat dict from key (e.g. `'blocks/4/residual/y_zero'`) to numpy array.

  Raises:
    ValueError: If a required key is missing (the message names it and where),
      a value has the wrong shape or cannot be cast exactly, or the cfg uses a
      variant the npz format cannot hold (feature-mix conv, SE module, conv
      shortcut).
  """
  out: dict[str, np.ndarray] = {}
  _convert_conv(_require(cfg, 'first_conv', ''), 'first_conv', out)
  blocks = _require(cfg, 'blocks', '')
  if not isinstance(blocks, (list, tuple)):
    raise ValueError(f"cfg['blocks']: expected a list, got "
                     f'{type(blocks).__name__}')
  for i, blk in enumerate(blocks):
    where = f"['blocks'][{i}]"
    if not isinstance(blk, Mapping):
      raise ValueError(f'cfg{where}: expected a dict, got {type(blk).__name__}')
    if blk.get('se') is not None:
      raise ValueError(f'cfg{where}: squeeze-excite modules are not supported '
                       'by the npz format')
    for role in BLOCK_ROLES:
      conv = blk.get(role)
      if conv is not None:
        _convert_conv(conv, f'blocks/{i}/{role}', out)
    if f'blocks/{i}/depthwise/weight' not in out or \
        f'blocks/{i}/pointwise2/weight' not in out:
      raise ValueError(f"cfg{where}: missing key 'depthwise' or 'pointwise2' "
                       f'(has {sorted(map(str, blk))})')
    residual = blk.get('residual')
    if residual is not None:
      if isinstance(residual, Mapping) and 'kernel_size' in residual:
        raise ValueError(f'cfg{where}: conv shortcuts are not supported by the '
                         'npz format (only identity residual adds)')
      params = _require(residual, 'params', f"{where}['residual']")
      for entry in RESIDUAL_ENTRIES:
        value = _require(params, entry, f"{where}['residual']['params']")
        key = f'blocks/{i}/residual/{entry}'
        out[key] = _exact_cast(value, ENTRY_DTYPES[entry], key, scalar=True)
  if cfg.get('feature_mix') is not None:
    raise ValueError("cfg['feature_mix']: a feature-mix conv is not supported "
                     'by the npz format (the published models have none)')
  _convert_conv(_require(cfg, 'classifier', ''), 'classifier', out)
  return out


def _conv_cfg_from_arrays(arrays: Mapping[str, np.ndarray], prefix: str,
                          depthwise: bool) -> dict[str, Any]:
  params = {}
  for entry in CONV_ENTRIES:
    key = f'{prefix}/{entry}'
    if key not in arrays:
      raise ValueError(f"arrays: missing key '{key}'")
    value = np.asarray(arrays[key])
    if entry in ('x_scale', 'y_scale'):
      params[entry] = float(value)
    elif entry in ('x_zero', 'y_zero'):
      params[entry] = int(value)
    else:
      params[entry] = value.copy()
  n_out, n_in_per_group, kh, kw = params['weight'].shape
  groups = n_out if depthwise else 1
  return {
      'in_channel': n_in_per_group * groups,
      'out_channel': n_out,
      'kernel_size': kh if kh == kw else (kh, kw),
      'groups': groups,
      'params': params,
  }


def cfg_from_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Rebuilds a tiny-training-style cfg dict from flat npz arrays.

  The inverse of `convert_cfg_to_arrays` for the arrays: scales and zero
  points become Python floats/ints as in the original pickles. Conv geometry
  that the npz holds implicitly (`in_channel`, `out_channel`, `kernel_size`,
  `groups`) is filled in; `stride` cannot be recovered from the arrays and is
  omitted.

  Args:
    arrays: Flat dict as returned by `convert_cfg_to_arrays` or `np.load`.

  Returns:
    Nested cfg dict with `first_conv`, `blocks`, `feature_mix` (None) and
    `classifier`.

  Raises:
    ValueError: If a required key is missing or block indices are not 0..n-1.
  """
  indices = sorted(
      {int(k.split('/')[1]) for k in arrays if k.startswith('blocks/')})
  if indices != list(range(len(indices))):
    raise ValueError(f'arrays: block indices are not contiguous: {indices}')
  blocks = []
  for i in indices:
    blk: dict[str, Any] = {}
    for role in BLOCK_ROLES:
      prefix = f'blocks/{i}/{role}'
      blk[role] = (
          _conv_cfg_from_arrays(arrays, prefix, role == 'depthwise')
          if f'{prefix}/weight' in arrays else None)
    if f'blocks/{i}/residual/x_scale' in arrays:
      params = {}
      for entry in RESIDUAL_ENTRIES:
        key = f'blocks/{i}/residual/{entry}'
        if key not in arrays:
          raise ValueError(f"arrays: missing key '{key}'")
        cast = float if entry.endswith('scale') else int
        params[entry] = cast(np.asarray(arrays[key]))
      blk['residual'] = {'params': params}
    else:
      blk['residual'] = None
    blocks.append(blk)
  return {
      'first_conv': _conv_cfg_from_arrays(arrays, 'first_conv', False),
      'blocks': blocks,
      'feature_mix': None,
      'classifier': _conv_cfg_from_arrays(arrays, 'classifier', False),
  }


# --------------------------------------------------------------------------
# Download + convert.


def _one_line(text: Any) -> str:
  return ' '.join(str(text).split())


def _atomic_write(path: pathlib.Path, write: Callable[[BinaryIO],
                                                      None]) -> None:
  """Writes via a temp file in the same folder, then `os.replace`."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.',
                             suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def fetch_pretrained_npz(
    name: str,
    dest_dir: Union[str, os.PathLike],
    *,
    url: Optional[str] = None,
    opener: Callable[..., Any] = urllib.request.urlopen,
    sha256: Optional[str] = None,
    timeout: float = 60.0,
) -> pathlib.Path:
  """Downloads a tiny-training pickle and writes `<dest_dir>/<name>.npz`.

  Always downloads (checking an existing cache is the caller's job). The
  pickle goes to a temp file in `dest_dir`, its SHA-256 is checked, it is
  converted with `read_torch_zip_pickle` + `convert_cfg_to_arrays`, and the
  npz and a `<name>.json` provenance sidecar are written atomically (temp file
  + `os.replace`). The temp pickle is always removed.

  Args:
    name: Model name, one of `PICKLE_SHA256`.
    dest_dir: Folder for the outputs (created if missing), e.g.
      `$TINYTRAIN_ASSETS/weights`.
    url: Where to download from; default `pickle_url(name)`.
    opener: Called as `opener(url, timeout=timeout)`; must return a context
      manager yielding a binary file-like response (`urllib.request.urlopen`
      semantics). Injectable for tests.
    sha256: Expected hex digest; default `PICKLE_SHA256[name]`.
    timeout: Network timeout in seconds, passed to `opener`.

  Returns:
    Path of the written `<name>.npz`.

  Raises:
    ValueError: If `name` is unknown (lists the accepted names), or the
      download's SHA-256 does not match (names file, expected and actual
      hashes), or the pickle's structure is not the expected one.
    OSError: If the download fails (one-line message with the URL, the reason
      and how to point `$TINYTRAIN_ASSETS` at pre-converted weights).
    pickle.UnpicklingError: If the pickle references anything but numpy.
  """
  _check_name(name)
  default_url = pickle_url(name)
  url = url or default_url
  expected = (sha256 or PICKLE_SHA256[name]).lower()
  dest = pathlib.Path(dest_dir)
  dest.mkdir(parents=True, exist_ok=True)
  npz_path = dest / f'{name}.npz'
  fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f'.{name}.',
                                  suffix='.pkl.part')
  tmp = pathlib.Path(tmp_name)
  try:
    digest = hashlib.sha256()
    try:
      with os.fdopen(fd, 'wb') as f, opener(url, timeout=timeout) as response:
        while True:
          chunk = response.read(_CHUNK)
          if not chunk:
            break
          digest.update(chunk)
          f.write(chunk)
    except (OSError, ValueError, http.client.HTTPException) as e:
      # URLError's str() is '<urlopen error ...>'; HTTPError's is fine as is.
      reason = (
          e.reason if isinstance(e, urllib.error.URLError) and
          not isinstance(e, urllib.error.HTTPError) else e)
      raise OSError(
          f'no cached weights at {npz_path} and download from {url} failed '
          f'({_one_line(f"{type(e).__name__}: {reason}")}); set '
          f'$TINYTRAIN_ASSETS to a folder with weights/{name}.npz '
          '(e.g. ../shared)') from e
    got = digest.hexdigest()
    if got != expected:
      raise ValueError(
          f'sha256 mismatch for {name}.pkl downloaded from {url}: expected '
          f'{expected}, got {got}; the download is corrupt or not the file at '
          f'{REPOSITORY}@{PINNED_COMMIT}: retry, or set $TINYTRAIN_ASSETS to a '
          f'folder with weights/{name}.npz (e.g. ../shared)')
    arrays = convert_cfg_to_arrays(read_torch_zip_pickle(tmp))
  finally:
    if tmp.exists():
      tmp.unlink()

  _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
  sidecar = {
      'name': name,
      'format': 'tinytrain_jax int8 BN-folded backbone (flat npz)',
      'source': {
          'repository': f'https://github.com/{REPOSITORY}',
          'url': url,
          # The content is the pinned commit's file iff the hash matches it.
          'commit': PINNED_COMMIT if got == PICKLE_SHA256[name] else None,
          'path': pickle_path(name),
          'sha256': got,
          'license': LICENSE_NOTE,
      },
  }
  payload = (json.dumps(sidecar, indent=1) + '\n').encode()
  _atomic_write(dest / f'{name}.json', lambda f: f.write(payload))
  return npz_path


__all__ = [
    'PINNED_COMMIT',
    'PICKLE_SHA256',
    'pickle_url',
    'pickle_path',
    'read_torch_zip_pickle',
    'load_numpy_only_pickle',
    'convert_cfg_to_arrays',
    'cfg_from_arrays',
    'fetch_pretrained_npz',
]
