"""Tests for tinytrain_jax.models.download (no network: file:// URLs only)."""
import hashlib
import io
import json
import os
import pathlib
import pickle
import tempfile
import urllib.error
import zipfile

from absl.testing import absltest
import numpy as np

from tinytrain_jax import assets
from tinytrain_jax.models import download

SHARED_NPZ = assets.asset_path('weights', 'mcunet-5fps.npz')


def _conv(rng, c_out, c_in, k, groups=1, stride=1, x=(0.02, -128),
          y=(0.01, -128)):
  """A conv cfg in tiny-training's format (Python scalars, numpy arrays)."""
  return {
      'in_channel': c_in,
      'out_channel': c_out,
      'kernel_size': k,
      'stride': stride,
      'groups': groups,
      'params': {
          'weight':
              rng.integers(-127, 128, (c_out, c_in // groups, k, k),
                           dtype=np.int8),
          'bias':
              rng.integers(-2**20, 2**20, (c_out,), dtype=np.int32),
          'w_scales':
              rng.uniform(1e-3, 1e-2, (c_out,)).astype(np.float32),
          'x_scale':
              float(x[0]),
          'x_zero':
              int(x[1]),
          'y_scale':
              float(y[0]),
          'y_zero':
              int(y[1]),
          'effective_scale':
              np.full((c_out,), 0.5),  # extra key: ignored.
      },
  }


def _fake_cfg(seed=0):
  """First conv, one expand block with an identity residual, classifier."""
  rng = np.random.default_rng(seed)
  first = _conv(rng, 4, 3, 3, stride=2, x=(2 / 255, 0), y=(6 / 255, -128))
  block = {
      'pointwise1':
          _conv(rng, 8, 4, 1, x=(6 / 255, -128), y=(0.02, -128)),
      'depthwise':
          _conv(rng, 8, 8, 3, groups=8, x=(0.02, -128), y=(0.015, -128)),
      'se':
          None,
      'pointwise2':
          _conv(rng, 4, 8, 1, x=(0.015, -128), y=(0.03, 5)),
      'residual': {
          'params': {
              'x_scale': 6 / 255,
              'x_zero': -128,
              'y_scale': 0.04,
              'y_zero': 3
          }
      },
  }
  classifier = _conv(rng, 10, 4, 1, x=(0.04, 3), y=(0.1, 0))
  return {
      'first_conv': first,
      'blocks': [block],
      'feature_mix': None,
      'classifier': classifier
  }


def _write_torch_zip(path, obj):
  """Writes `obj` like torch.save's zip format (archive/data.pkl, proto 2)."""
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', pickle.dumps(obj, protocol=2))
    z.writestr('archive/version', '3\n')
    z.writestr('archive/byteorder', 'little')
  return path


def _sha256(path):
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


class _Evil:

  def __reduce__(self):
    return (os.system, ('echo pwned',))


class DownloadTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    # tempfile rather than self.create_tempdir(): works under pytest, where
    # absl flags (--test_tmpdir) are not parsed.
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.tmp = pathlib.Path(tmp.name)
    self.pkl = _write_torch_zip(self.tmp / 'src.pkl', _fake_cfg())
    self.url = self.pkl.as_uri()
    self.dest = self.tmp / 'weights'

  def test_pinned_urls_and_hashes(self):
    self.assertLen(download.PICKLE_SHA256, 3)
    for name, digest in download.PICKLE_SHA256.items():
      self.assertLen(digest, 64)
      url = download.pickle_url(name)
      self.assertEqual(
          url, 'https://raw.githubusercontent.com/mit-han-lab/tiny-training/'
          f'{download.PINNED_COMMIT}/algorithm/assets/mcu_models/{name}.pkl')

  def test_unknown_name(self):
    with self.assertRaisesRegex(
        ValueError, 'accepted names: mbv2-w0.35, '
        'mcunet-5fps, proxyless-w0.3'):
      download.fetch_pretrained_npz('resnet50', self.dest, url=self.url)
    with self.assertRaisesRegex(ValueError, 'accepted names'):
      download.pickle_url('mcunet')

  def test_fetch_converts_file_url(self):
    cfg = _fake_cfg()
    path = download.fetch_pretrained_npz('mcunet-5fps', self.dest, url=self.url,
                                         sha256=_sha256(self.pkl))
    self.assertEqual(path, self.dest / 'mcunet-5fps.npz')
    with np.load(path) as z:
      got = {k: z[k] for k in z.files}
    expected_keys = []
    for prefix in ('first_conv', 'blocks/0/pointwise1', 'blocks/0/depthwise',
                   'blocks/0/pointwise2'):
      expected_keys += [f'{prefix}/{e}' for e in download.CONV_ENTRIES]
    expected_keys += [
        f'blocks/0/residual/{e}' for e in download.RESIDUAL_ENTRIES
    ]
    expected_keys += [f'classifier/{e}' for e in download.CONV_ENTRIES]
    self.assertEqual(list(got), expected_keys)
    for key, value in got.items():
      self.assertEqual(value.dtype, download.ENTRY_DTYPES[key.split('/')[-1]],
                       key)
    convs = {'first_conv': cfg['first_conv'], 'classifier': cfg['classifier']}
    for role in ('pointwise1', 'depthwise', 'pointwise2'):
      convs[f'blocks/0/{role}'] = cfg['blocks'][0][role]
    for prefix, conv in convs.items():
      for entry in download.CONV_ENTRIES:
        want = np.asarray(conv['params'][entry])
        np.testing.assert_array_equal(got[f'{prefix}/{entry}'], want)
        if entry in ('x_scale', 'y_scale', 'x_zero', 'y_zero'):
          self.assertEqual(got[f'{prefix}/{entry}'].shape, ())
    self.assertEqual(got['blocks/0/depthwise/weight'].shape, (8, 1, 3, 3))
    self.assertEqual(float(got['blocks/0/residual/y_scale']), 0.04)
    self.assertEqual(int(got['blocks/0/residual/x_zero']), -128)
    sidecar = json.loads((self.dest / 'mcunet-5fps.json').read_text())
    self.assertEqual(sidecar['name'], 'mcunet-5fps')
    self.assertEqual(sidecar['source']['url'], self.url)
    self.assertEqual(sidecar['source']['sha256'], _sha256(self.pkl))
    self.assertIsNone(sidecar['source']['commit'])  # not the pinned file
    # No temp files left behind.
    self.assertEqual(
        sorted(p.name for p in self.dest.iterdir()),
        ['mcunet-5fps.json', 'mcunet-5fps.npz'])

  def test_injected_opener(self):
    data = self.pkl.read_bytes()
    calls = []

    def opener(url, timeout=None):
      calls.append((url, timeout))
      return io.BytesIO(data)

    path = download.fetch_pretrained_npz('mbv2-w0.35', self.dest, opener=opener,
                                         sha256=_sha256(self.pkl), timeout=5)
    self.assertEqual(calls, [(download.pickle_url('mbv2-w0.35'), 5)])
    self.assertTrue(path.exists())

  def test_wrong_sha256(self):
    with self.assertRaises(ValueError) as cm:
      download.fetch_pretrained_npz('mcunet-5fps', self.dest, url=self.url)
    msg = str(cm.exception)
    self.assertIn('mcunet-5fps.pkl', msg)
    self.assertIn(download.PICKLE_SHA256['mcunet-5fps'], msg)
    self.assertIn(_sha256(self.pkl), msg)
    self.assertIn('TINYTRAIN_ASSETS', msg)
    self.assertEqual(list(self.dest.iterdir()), [])  # temp pkl removed

  def test_unreachable_url_one_line_error(self):
    url = 'file:///nonexistent/mcunet-5fps.pkl'
    with self.assertRaises(OSError) as cm:
      download.fetch_pretrained_npz('mcunet-5fps', self.dest, url=url)
    msg = str(cm.exception)
    self.assertNotIn('\n', msg)
    self.assertIn(f'no cached weights at {self.dest / "mcunet-5fps.npz"}', msg)
    self.assertIn(f'download from {url} failed (', msg)
    self.assertIn(
        'set $TINYTRAIN_ASSETS to a folder with '
        'weights/mcunet-5fps.npz (e.g. ../shared)', msg)
    self.assertEqual(list(self.dest.iterdir()), [])

  def test_opener_error_is_wrapped(self):

    def opener(url, timeout=None):
      raise urllib.error.URLError(
          '[Errno -3] Temporary failure in\nname resolution')

    with self.assertRaisesRegex(
        OSError, r'failed \(URLError: \[Errno -3\] '
        'Temporary failure in name resolution\\)'):
      download.fetch_pretrained_npz('mcunet-5fps', self.dest, opener=opener)

  def test_unpickler_refuses_os_system(self):
    payload = pickle.dumps({'cfg': _Evil()}, protocol=2)
    with self.assertRaisesRegex(
        pickle.UnpicklingError,
        r"global '(os|posix|nt)\.system' is not allowed"):
      download._NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    evil = _write_torch_zip(self.tmp / 'evil.pkl', _Evil())
    with self.assertRaisesRegex(pickle.UnpicklingError, 'is not allowed'):
      download.read_torch_zip_pickle(evil)
    with self.assertRaisesRegex(pickle.UnpicklingError, 'is not allowed'):
      download.fetch_pretrained_npz('mcunet-5fps', self.dest, url=evil.as_uri(),
                                    sha256=_sha256(evil))
    self.assertEqual(list(self.dest.iterdir()), [])

  def test_unpickler_refuses_persistent_ids(self):

    class _Pickler(pickle.Pickler):

      def persistent_id(self, obj):
        if obj == 'T':
          return ('storage', 'FloatStorage', '0', 'cpu', 4)
        return None

    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump({'w': 'T'})
    with self.assertRaisesRegex(pickle.UnpicklingError, 'persistent id'):
      download._NumpyOnlyUnpickler(io.BytesIO(buf.getvalue())).load()

  def test_unpickler_reads_numpy_scalars_and_arrays(self):
    obj = {
        'a': np.arange(6, dtype=np.float32).reshape(2, 3),
        'b': np.float64(1.5),
        'c': np.int32(-7),
        'd': [1, 2.0, 'x', b'raw', None]
    }
    got = download._NumpyOnlyUnpickler(
        io.BytesIO(pickle.dumps(obj, protocol=2))).load()
    np.testing.assert_array_equal(got['a'], obj['a'])
    self.assertEqual(got['a'].dtype, np.float32)
    self.assertEqual(got['b'], 1.5)
    self.assertEqual(got['c'], -7)
    self.assertEqual(got['d'], obj['d'])

  def test_zip_without_data_pkl(self):
    path = self.tmp / 'bad.pkl'
    with zipfile.ZipFile(path, 'w') as z:
      z.writestr('archive/other.pkl', b'')
    with self.assertRaisesRegex(ValueError, 'data.pkl'):
      download.read_torch_zip_pickle(path)
    plain = self.tmp / 'plain.pkl'
    plain.write_bytes(pickle.dumps({}, protocol=2))
    with self.assertRaisesRegex(ValueError, 'not a zip'):
      download.read_torch_zip_pickle(plain)

  def test_missing_key_is_named(self):
    cfg = _fake_cfg()
    del cfg['blocks'][0]['depthwise']['params']['w_scales']
    with self.assertRaisesRegex(
        ValueError,
        r"\['blocks/0/depthwise'\]\['params'\]: missing key 'w_scales'"):
      download.convert_cfg_to_arrays(cfg)
    cfg = _fake_cfg()
    del cfg['classifier']
    with self.assertRaisesRegex(ValueError, "missing key 'classifier'"):
      download.convert_cfg_to_arrays(cfg)
    cfg = _fake_cfg()
    del cfg['blocks'][0]['residual']['params']['y_zero']
    with self.assertRaisesRegex(ValueError, "missing key 'y_zero'"):
      download.convert_cfg_to_arrays(cfg)

  def test_unsupported_variants_and_lossy_casts(self):
    cfg = _fake_cfg()
    cfg['feature_mix'] = cfg['classifier']
    with self.assertRaisesRegex(ValueError, 'feature-mix'):
      download.convert_cfg_to_arrays(cfg)
    cfg = _fake_cfg()
    cfg['blocks'][0]['residual']['kernel_size'] = 1
    with self.assertRaisesRegex(ValueError, 'conv shortcuts'):
      download.convert_cfg_to_arrays(cfg)
    cfg = _fake_cfg()
    cfg['first_conv']['params']['weight'] = (
        cfg['first_conv']['params']['weight'].astype(np.int32) * 2)
    with self.assertRaisesRegex(ValueError, 'first_conv/weight.*lossy'):
      download.convert_cfg_to_arrays(cfg)
    cfg = _fake_cfg()
    cfg['first_conv']['params']['x_scale'] = np.array([0.1, 0.2])
    with self.assertRaisesRegex(ValueError,
                                'first_conv/x_scale: expected a scalar'):
      download.convert_cfg_to_arrays(cfg)

  def test_exact_casts_are_accepted(self):
    cfg = _fake_cfg()
    params = cfg['first_conv']['params']
    params['weight'] = params['weight'].astype(np.int64)
    params['x_zero'] = np.int64(0)
    params['x_scale'] = np.array([2 / 255])
    got = download.convert_cfg_to_arrays(cfg)
    self.assertEqual(got['first_conv/weight'].dtype, np.int8)
    self.assertEqual(got['first_conv/x_zero'].dtype, np.int32)
    self.assertEqual(got['first_conv/x_scale'].shape, ())
    self.assertEqual(float(got['first_conv/x_scale']), 2 / 255)

  def test_cfg_round_trip_fake(self):
    arrays = download.convert_cfg_to_arrays(_fake_cfg())
    cfg = download.cfg_from_arrays(arrays)
    self.assertEqual(cfg['blocks'][0]['depthwise']['groups'], 8)
    self.assertEqual(cfg['blocks'][0]['depthwise']['in_channel'], 8)
    again = download.convert_cfg_to_arrays(cfg)
    self.assertEqual(list(again), list(arrays))
    for k in arrays:
      self.assertEqual(again[k].dtype, arrays[k].dtype, k)
      np.testing.assert_array_equal(again[k], arrays[k], err_msg=k)

  @absltest.skipUnless(SHARED_NPZ.exists(), f'{SHARED_NPZ} not available')
  def test_shared_mcunet_round_trip(self):
    with np.load(SHARED_NPZ) as z:
      arrays = {k: z[k] for k in z.files}
    cfg = download.cfg_from_arrays(arrays)
    again = download.convert_cfg_to_arrays(cfg)
    self.assertEqual(sorted(again), sorted(arrays))
    for k in arrays:
      self.assertEqual(again[k].dtype, arrays[k].dtype, k)
      self.assertEqual(again[k].shape, arrays[k].shape, k)
      np.testing.assert_array_equal(again[k], arrays[k], err_msg=k)
    # And through the whole pickle -> fetch pipeline.
    src = _write_torch_zip(self.tmp / 'mcunet-5fps.pkl', cfg)
    path = download.fetch_pretrained_npz('mcunet-5fps', self.dest,
                                         url=src.as_uri(), sha256=_sha256(src))
    with np.load(path) as z:
      self.assertEqual(sorted(z.files), sorted(arrays))
      for k in arrays:
        self.assertEqual(z[k].dtype, arrays[k].dtype, k)
        np.testing.assert_array_equal(z[k], arrays[k], err_msg=k)


if __name__ == '__main__':
  absltest.main()
