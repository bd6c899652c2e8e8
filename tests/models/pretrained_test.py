"""Real ImageNet weights classify real photos; int8 simulation agrees."""
import os
import tempfile

from absl.testing import absltest, parameterized
import numpy as np
from skimage import data as skdata

import jax

from tinytrain_jax.models import apply, apply_int8, load_arrays, load_pretrained
from tinytrain_jax.models import pretrained
from tinytrain_jax.models.imagenet import eval_transform

MODELS = ('mcunet-5fps', 'mbv2-w0.35', 'proxyless-w0.3')
CAT = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug

_forward = jax.jit(apply, static_argnums=0)


def _have_weights():
  try:
    load_arrays('mcunet-5fps', download=False)
    return True
  except (FileNotFoundError, ValueError):
    return False


@absltest.skipUnless(
    _have_weights(), 'pretrained weights not in the asset '
    'cache; set TINYTRAIN_ASSETS=../shared')
class PretrainedTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.images = np.stack(
        [eval_transform(skdata.chelsea()),
         eval_transform(skdata.coffee())])

  @parameterized.parameters(*MODELS)
  def test_top5_on_real_photos(self, name):
    spec, params = load_pretrained(name, num_classes=1000)
    logits = np.asarray(_forward(spec, params, self.images).logits)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    self.assertTrue(CAT & set(top5[0]), f'{name} cat top-5 {top5[0]}')
    self.assertIn(int(top5[0, 0]), CAT)
    self.assertTrue(COFFEE & set(top5[1]), f'{name} coffee top-5 {top5[1]}')
    self.assertEqual(int(top5[1, 0]), 967)

  @parameterized.parameters(*MODELS)
  def test_int8_simulation_matches_float(self, name):
    spec, params = load_pretrained(name, num_classes=1000)
    x = self.images[:1]
    lf = np.asarray(_forward(spec, params, x).logits)[0]
    lq = apply_int8(spec, load_arrays(name), x)[0]
    cos = lf @ lq / np.linalg.norm(lf) / np.linalg.norm(lq)
    self.assertGreater(cos, 0.99)
    self.assertEqual(int(np.argmax(lf)), int(np.argmax(lq)))

  def test_feature_mix_preserves_pretrained_feature(self):
    spec, params = load_pretrained('mbv2-w0.35', feature_mix=True)
    spec0, params0 = load_pretrained('mbv2-w0.35')
    f = np.asarray(_forward(spec, params, self.images).features)
    f0 = np.asarray(_forward(spec0, params0, self.images).features)
    self.assertEqual(f.shape, (2, 448))
    # Pooled relu6(x) - relu6(-x) is not pooled x, but before pooling it is;
    # check on the pre-pool map via the mix layer's linear recoverability.
    self.assertGreater(
        np.corrcoef(f[:, :112].ravel() - f[:, 112:224].ravel(),
                    f0.ravel())[0, 1], 0.99)

  def test_loader_errors(self):
    with self.assertRaisesRegex(ValueError, 'unknown model'):
      load_pretrained('resnet18')
    with self.assertRaisesRegex(FileNotFoundError, 'TINYTRAIN_ASSETS'):
      load_pretrained('mcunet-5fps', path='/nonexistent/x.npz')
    with self.assertRaisesRegex(ValueError, 'num_classes'):
      load_pretrained('mcunet-5fps', num_classes=10)
    # A file for another model: wrong shapes are named.
    arrays = load_arrays('mbv2-w0.35')
    with tempfile.TemporaryDirectory() as d:
      p = os.path.join(d, 'x.npz')
      np.savez(p, **arrays)
      with self.assertRaisesRegex(ValueError, "has shape .* expected"):
        load_pretrained('mcunet-5fps', path=p)

  def test_empty_cache_without_network_is_one_line_error(self):
    with tempfile.TemporaryDirectory() as d:
      old = os.environ.get('TINYTRAIN_ASSETS')
      os.environ['TINYTRAIN_ASSETS'] = d
      try:
        with self.assertRaisesRegex(FileNotFoundError, 'not found at'):
          load_arrays('mcunet-5fps', download=False)
      finally:
        os.environ['TINYTRAIN_ASSETS'] = old


class IntegrityTest(absltest.TestCase):
  """Cached weights are checked against weights_manifest.json at load."""

  def _cache_with(self, write):
    d = tempfile.mkdtemp()
    self.addCleanup(__import__('shutil').rmtree, d, ignore_errors=True)
    os.makedirs(os.path.join(d, 'weights'))
    write(os.path.join(d, 'weights', 'mcunet-5fps.npz'))
    old = os.environ.get('TINYTRAIN_ASSETS')
    os.environ['TINYTRAIN_ASSETS'] = d
    self.addCleanup(os.environ.__setitem__, 'TINYTRAIN_ASSETS', old or '')

  @absltest.skipUnless(_have_weights(), 'weights not in the asset cache')
  def test_damaged_and_modified_files_are_refused_in_one_line(self):
    good = pretrained.weights_path('mcunet-5fps').read_bytes()
    arrays = load_arrays('mcunet-5fps')
    tampered = dict(arrays)
    key = 'blocks/3/pointwise1/w_scales'
    tampered[key] = arrays[key].copy()
    tampered[key][0] *= 10
    flipped = bytearray(good)
    flipped[5000:5100] = bytes(100)
    cases = {
        'truncated': (lambda f: open(f, 'wb').write(good[:len(good) // 2]),
                      r'cannot read weights file .*mcunet-5fps.npz .*damaged'),
        'bad_crc': (lambda f: open(f, 'wb').write(bytes(flipped)),
                    r'cannot read weights file .*(CRC|Error).*damaged'),
        'tampered': (lambda f: np.savez(f, **tampered),
                     r'mcunet-5fps.npz fails its integrity check .*'
                     r'weights_manifest.json.*delete .* copy a good'),
    }
    for name, (write, regex) in cases.items():
      with self.subTest(name):
        self._cache_with(write)
        with self.assertRaisesRegex(ValueError, regex) as cm:
          load_arrays('mcunet-5fps', download=False)
        self.assertNotIn('\n', str(cm.exception))
    # Re-zipped but identical arrays (e.g. a fresh download) still verify.
    self._cache_with(lambda f: np.savez(f, **arrays))
    self.assertEqual(
        pretrained.arrays_sha256(load_arrays('mcunet-5fps')),
        pretrained.manifest()['mcunet-5fps']['arrays_sha256'])


if __name__ == '__main__':
  absltest.main()
