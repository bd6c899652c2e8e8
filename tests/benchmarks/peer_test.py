"""The PyTorch peer computes what we compute (skipped when torch is absent).

torch lives in the benchmark venv only (requirements-bench.txt); run with
  .venv-bench/bin/python -m pytest tests/benchmarks/peer_test.py -q
"""
import os
import subprocess
import sys
import tempfile
import unittest

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinytrain_jax import models
from tinytrain_jax import selection

try:
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = torch_peer = None

_NO_TORCH = 'torch is not installed (benchmark venv only)'


@unittest.skipIf(torch is None, _NO_TORCH)
class PeerTest(parameterized.TestCase):

  @parameterized.parameters('mcunet-5fps', 'mbv2-w0.35', 'proxyless-w0.3')
  def test_same_logits_as_ours(self, name):
    spec, params = models.load_pretrained(name, 32, num_classes=1000)
    x = np.random.default_rng(0).uniform(-1, 1,
                                         (3, 32, 32, 3)).astype(np.float32)
    ours = models.apply(spec, jax.tree.map(jnp.asarray, params),
                        jnp.asarray(x)).logits
    with torch.no_grad():
      _, logits = torch_peer.PeerNet(spec, params)(torch_peer.to_nchw(x))
    np.testing.assert_allclose(logits.numpy(), ours, rtol=1e-4, atol=2e-4)

  @parameterized.parameters((1,), (7,))
  def test_cached_prefix_same_features_as_ours(self, start):
    spec, params = models.load_pretrained('mbv2-w0.35', 32, feature_mix=True)
    x = np.random.default_rng(2).uniform(-1, 1,
                                         (2, 32, 32, 3)).astype(np.float32)
    jp = jax.tree.map(jnp.asarray, params)
    h = models.prefix(spec, jp, jnp.asarray(x), start)
    ours = models.apply(spec, jp, h, start_block=start).features
    net = torch_peer.PeerNet(spec, params)
    th = net.prefix(torch_peer.to_nchw(x), start)
    np.testing.assert_allclose(th.numpy().transpose(0, 2, 3, 1), h,
                               rtol=1e-4, atol=1e-4)
    with torch.no_grad():
      feats, _ = net(th, start_block=start)
    np.testing.assert_allclose(feats.numpy(), ours, rtol=1e-4, atol=2e-4)

  def test_fisher_pass_matches_ours(self):
    spec, params = models.load_pretrained('mcunet-5fps', 32)
    n = 10
    x = np.random.default_rng(1).uniform(-1, 1,
                                         (n, 32, 32, 3)).astype(np.float32)
    y = (np.arange(n) % 5).astype(np.int32)
    ep = type(
        'Ep', (),
        dict(support_x=x, support_y=y, support_mask=np.ones(n, bool),
             way_mask=np.ones(5, bool)))
    ours = selection.compute_fisher(spec, jax.tree.map(jnp.asarray, params), ep)
    loss, out, inp = torch_peer.fisher_pass(
        torch_peer.PeerNet(spec, params), torch_peer.to_nchw(x),
        torch.from_numpy(y.astype(np.int64)), 5)
    self.assertAlmostEqual(loss, ours.loss, places=4)
    for name in ('blocks_13/depthwise', 'blocks_13/pointwise1', 'first_conv'):
      scale = max(ours.out[name].max(), ours.inp[name].max())
      np.testing.assert_allclose(out[name], ours.out[name], rtol=1e-2,
                                 atol=1e-3 * scale)
      np.testing.assert_allclose(inp[name], ours.inp[name], rtol=1e-2,
                                 atol=1e-3 * scale)

  def test_dense_masks_follow_our_mask(self):
    spec, params = models.load_pretrained('mcunet-5fps', 32)
    net = torch_peer.PeerNet(spec, params)
    from tinytrain_jax import masks  # pylint: disable=g-import-not-at-top
    mask = masks.mask_from_layers(spec, params, {
        'blocks_13/pointwise1': [0, 2],
        'blocks_13/depthwise': [1]
    })
    gm = torch_peer.dense_masks(net, spec, mask)
    pw = gm['blocks_13/pointwise1/kernel']  # OIHW: input channels on axis 1
    self.assertEqual(float(pw[:, [0, 2]].min()), 1.0)
    self.assertEqual(float(pw.sum()), 2 * pw.shape[0])
    dw = gm['blocks_13/depthwise/kernel']  # depthwise: channels on axis 0
    self.assertEqual(float(dw[1].min()), 1.0)
    self.assertEqual(float(dw.sum()), dw[1].numel())
    self.assertEqual(
        torch_peer.trained_layers(spec, mask),
        ['blocks_13/pointwise1', 'blocks_13/depthwise'])

  @pytest.mark.slow
  def test_tiny_benchmark_run(self):
    with tempfile.TemporaryDirectory() as d:
      out = os.path.join(d, 'peer.json')
      subprocess.run([
          sys.executable, '-m', 'benchmarks.peer_speed', '--models=mcunet-5fps',
          '--batches=2', '--resolution=32', '--repeats=1', '--matmul=64',
          f'--out={out}'
      ], check=True)
      self.assertTrue(os.path.exists(out))


if __name__ == '__main__':
  absltest.main()
