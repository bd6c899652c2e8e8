"""PyTorch twins of the three backbones: the peer of `benchmarks.peer_speed`.

Benchmark-only: nothing in the library or its tests needs torch. Install it in
its own venv (the PyPI wheel pulls several GB of CUDA libraries):

  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -r requirements.txt -r requirements-bench.txt

`PeerNet(spec, params)` builds the network of a `ModelSpec` as eager PyTorch
modules (NCHW, `nn.Conv2d` with groups=C for depthwise convs, padding k//2,
ReLU6, residual adds, global average pool), with the very same float32 weights
as ours: `params` is our parameter pytree (HWIO kernels), transposed to OIHW.
So the peer computes exactly what `models.apply` computes; the peer test checks
the logits agree.

The steps mirror ours (`train.finetune`): the ProtoNet cosine support loss of
`support_loss` and SGD with momentum. `requires_grad` is what decides how much
of the backward PyTorch runs, so:
  * `set_trainable(net, names)` turns it on for those convs' kernel and bias
    only (FullTrain: all convs; LastLayer: the last one; TinyTrain's strong
    peer: the selected layers, whole tensors);
  * `dense_masked_step` is tiny-training's simulation of a sparse update: a
    dense backward of every tensor, then the gradients multiplied by 0/1 masks.
`fisher_pass` is the peer of TinyTrain's selection pass (one forward+backward
with every conv's input and output activation gradient).
"""
import functools
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _key(name: str) -> str:
  """Our layer path -> a ModuleDict key ('blocks_3/depthwise' -> 'blocks_3__depthwise')."""
  return name.replace('/', '__')


def _get(tree, name):
  for part in name.split('/'):
    tree = tree[part]
  return tree


class PeerNet(nn.Module):
  """Eager PyTorch network of a `ModelSpec` (BN folded), NCHW in and out.

  forward(x) -> (features f32[B, D], logits f32[B, K] or None); x is
  f32[B, 3, R, R]. With `capture=True` it also returns {conv name: (input,
  pre-activation output)} for the Fisher pass. With `start_block=s > 0`, x is
  the input of block s (`prefix(images, s)`) and only blocks s.. run, as ours
  with a cached frozen prefix (`network.apply(..., start_block=s)`).
  """

  def __init__(self, spec, params):
    super().__init__()
    if spec.batchnorm:
      raise ValueError('PeerNet mirrors BN-folded specs; got batchnorm=True '
                       '(use model_spec(..., batchnorm=False))')
    self.spec = spec
    self.convs = nn.ModuleDict()
    for c in spec.convs:
      p = _get(params, c.name)
      conv = nn.Conv2d(c.c_in, c.c_out, c.kernel, c.stride, c.padding,
                       groups=c.groups, bias=True)
      with torch.no_grad():
        conv.weight.copy_(
            torch.from_numpy(
                np.ascontiguousarray(
                    np.asarray(p['kernel']).transpose(3, 2, 0, 1))))
        conv.bias.copy_(torch.from_numpy(np.asarray(p['bias'])))
      self.convs[_key(c.name)] = conv
    self.classifier = None
    if spec.num_classes:
      cls = params['classifier']
      self.classifier = nn.Linear(spec.feature_dim, spec.num_classes)
      with torch.no_grad():
        self.classifier.weight.copy_(
            torch.from_numpy(np.ascontiguousarray(np.asarray(cls['kernel']).T)))
        self.classifier.bias.copy_(torch.from_numpy(np.asarray(cls['bias'])))
    self._by_block = {}
    for c in spec.convs:
      self._by_block.setdefault(c.block, []).append(c)

  @torch.no_grad()
  def prefix(self, x, start_block: int):
    """The input of block `start_block` (frozen blocks below it, no graph)."""
    h = self._run_conv(self.spec.convs[0], x)
    for b in range(start_block):
      h = self._block(b, h, self._run_conv)
    return h

  def _run_conv(self, conv, h, acts=None):
    """conv + activation; with `acts`, records (input, pre-activation)."""
    if acts is not None:  # this conv's own input node (ours: the zero probe)
      h = h.clone()
    y = self.convs[_key(conv.name)](h)
    if acts is not None:
      acts[conv.name] = (h, y)
    return F.relu6(y) if conv.activation == 'relu6' else y

  def _block(self, b, h, run):
    shortcut = h
    for conv in self._by_block[b]:
      h = run(conv, h)
    return h + shortcut if self.spec.blocks[b].residual else h

  def forward(self, x, capture: bool = False, start_block: int = 0):
    acts = {} if capture else None
    run = functools.partial(self._run_conv, acts=acts)
    convs = self.spec.convs
    h = run(convs[0], x) if start_block == 0 else x
    for b in range(start_block, len(self.spec.blocks)):
      h = self._block(b, h, run)
    if self.spec.feature_mix:
      h = run(convs[-1], h)
    features = h.mean(dim=(2, 3))
    logits = self.classifier(features) if self.classifier is not None else None
    if capture:
      return features, logits, acts
    return features, logits


def to_nchw(images) -> torch.Tensor:
  """f32[B, R, R, 3] (numpy or jax) -> contiguous torch f32[B, 3, R, R]."""
  return torch.from_numpy(
      np.ascontiguousarray(
          np.asarray(images, np.float32).transpose(0, 3, 1, 2)))


def support_loss(features, labels, num_ways: int, scale: float = 10.0,
                 bias: float = 0.0):
  """ProtoNet cosine loss of the support set on itself (ours:
  `train.finetune.support_loss` without augmentation, all rows valid)."""
  onehot = F.one_hot(labels, num_ways).to(features.dtype)
  protos = onehot.T @ features / onehot.sum(0).clamp_min(1.0)[:, None]
  norm = lambda v: v * torch.rsqrt((v * v).sum(-1, keepdim=True) + 1e-8)
  logits = scale * (norm(features) @ norm(protos).T + bias)
  return F.cross_entropy(logits, labels)


def set_trainable(net: PeerNet, names: Iterable[str]):
  """requires_grad on the kernel and bias of exactly these convs."""
  names = set(names)
  for p in net.parameters():
    p.requires_grad_(False)
  for n in names:
    conv = net.convs[_key(n)]
    conv.weight.requires_grad_(True)
    conv.bias.requires_grad_(True)


def make_sgd(net: PeerNet, lr: float = 1e-3, momentum: float = 0.9):
  """torch SGD with momentum over the parameters that require grad."""
  return torch.optim.SGD([p for p in net.parameters() if p.requires_grad],
                         lr=lr, momentum=momentum)


def train_step(net: PeerNet, opt, x, labels, num_ways: int,
               start_block: int = 0) -> float:
  """One full-batch SGD step on the support loss (autograd decides the work);
  start_block > 0: x is `net.prefix(images, start_block)`."""
  opt.zero_grad(set_to_none=True)
  loss = support_loss(net(x, start_block=start_block)[0], labels, num_ways)
  loss.backward()
  opt.step()
  return float(loss.detach())


def dense_masks(net: PeerNet, spec, mask) -> Dict[str, torch.Tensor]:
  """0/1 gradient masks (OIHW / bias shapes) from our params-shaped mask.

  mask leaves: bool (whole leaf) or a channel vector on a kernel (input
  channels; depthwise: its channels), as in `tinytrain_jax.masks`.
  """
  out = {}
  for c in spec.convs:
    conv = net.convs[_key(c.name)]
    m = _get(mask, c.name)
    for leaf, param in (('kernel', conv.weight), ('bias', conv.bias)):
      v = m[leaf]
      t = torch.zeros_like(param)
      if isinstance(v, np.ndarray) and v.ndim == 1:
        sel = torch.from_numpy(np.flatnonzero(v))
        if c.depthwise:
          t[sel] = 1.0
        else:
          t[:, sel] = 1.0
      elif bool(v):
        t.fill_(1.0)
      out[f'{c.name}/{leaf}'] = t
  return out


def dense_masked_step(net: PeerNet, opt, x, labels, num_ways: int,
                      masks: Dict[str, torch.Tensor], spec) -> float:
  """tiny-training's way: dense backward of all tensors, grads times masks.

  `net` must have every conv trainable (`set_trainable(net, all names)`).
  """
  opt.zero_grad(set_to_none=True)
  loss = support_loss(net(x)[0], labels, num_ways)
  loss.backward()
  with torch.no_grad():
    for c in spec.convs:
      conv = net.convs[_key(c.name)]
      conv.weight.grad.mul_(masks[f'{c.name}/kernel'])
      conv.bias.grad.mul_(masks[f'{c.name}/bias'])
  opt.step()
  return float(loss.detach())


def fisher_pass(
    net: PeerNet, x, labels, num_ways: int, convs: Optional[Sequence[str]] = None
) -> Tuple[float, Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """Peer of TinyTrain's Fisher pass: Δ per channel of every conv's output
  and input (or of `convs` only), 1/(2N) Σ_n (Σ_hw a·g)², from one
  forward+backward. autograd walks back only as far as the lowest conv
  asked for, as ours does.

  Returns (loss, out {name: f32[C_out]}, inp {name: f32[C_in]}).
  """
  for p in net.parameters():
    p.requires_grad_(False)
  x = x.detach().requires_grad_(True)
  feats, _, acts = net(x, capture=True)
  loss = support_loss(feats, labels, num_ways)
  names = [n for n in acts if convs is None or n in convs]
  tensors = [t for n in names for t in acts[n]]
  grads = torch.autograd.grad(loss, tensors)
  n = x.shape[0]
  out, inp = {}, {}
  with torch.no_grad():
    for i, name in enumerate(names):
      (a_in, a_out), (g_in, g_out) = acts[name], grads[2 * i:2 * i + 2]
      s_out = (a_out * g_out).sum(dim=(2, 3))
      s_in = (a_in * g_in).sum(dim=(2, 3))
      out[name] = (0.5 * (s_out * s_out).sum(0) / n).cpu().numpy()
      inp[name] = (0.5 * (s_in * s_in).sum(0) / n).cpu().numpy()
  return float(loss.detach()), out, inp


def trained_layers(spec, mask) -> Sequence[str]:
  """Conv names with any trained entry in our params-shaped mask."""
  names = []
  for c in spec.convs:
    m = _get(mask, c.name)
    if any(np.any(np.asarray(v)) for v in m.values()):
      names.append(c.name)
  return names


def num_threads(n: Optional[int] = None) -> int:
  """Sets (when n) and returns torch's intra-op thread count."""
  if n:
    torch.set_num_threads(n)
  return torch.get_num_threads()
