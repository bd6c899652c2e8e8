"""Our speed against the PyTorch peer, side by side in one process.

  export MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 \
      MALLOC_TRIM_THRESHOLD_=68719476736   # glibc keeps freed memory
  .venv-bench/bin/python -m benchmarks.peer_speed          # full run
  .venv-bench/bin/python -m benchmarks.peer_speed --models=mcunet-5fps \
      --batches=2 --resolution=32 --repeats=1 --out=/tmp/peer.json   # tiny

torch is not a library dependency; it lives in its own venv (the PyPI wheel
pulls several GB of CUDA libraries):

  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -r requirements.txt -r requirements-bench.txt

For each backbone (mcunet-5fps; mbv2-w0.35 and proxyless-w0.3 with the mix
conv), pretrained weights from the asset cache, --batches images at
--resolution px, this times ours (JAX, jitted) and the peer
(`benchmarks.torch_peer`, eager PyTorch, same weights) on:

  forward               features of the batch (peer: under no_grad);
  fulltrain             one SGD-momentum step on the ProtoNet support loss,
                        every conv trained (= forward + full backward);
  lastlayer             the same, last conv only;
  tinytrain_strong      TinyTrain's mask (selected on a real Omniglot task):
                        ours the sparse step (`finetune.sparse_train_step`),
                        the peer with requires_grad on the selected tensors;
  tinytrain_dense       ours the same sparse step, the peer tiny-training's
                        way: dense backward, gradients times 0/1 masks;
  tinytrain_cached      TinyTrain's step as our fine-tuning runs it: the
                        frozen blocks below the lowest trained layer
                        computed once per task (`finetune.sparse_task`),
                        each step only the blocks above; the strong peer
                        gets the same cache (`PeerNet.prefix`). Neither
                        side's prefix is timed (it runs once per task);
  selection             TinyTrain's selection pass: the Fisher pass over
                        the convs the budgets can select (backward down to
                        the lowest) plus the greedy fill
                        (`selection.select`); the peer runs its own Fisher
                        pass over the same convs and the same greedy fill.

Ours and the peer run alternately, --repeats times after two warm-up calls
each, so load from other processes hits both alike; rows give the medians,
ratio = ours / peer, every run and the spread ((max - min) / median). The
roofline columns divide our cost model's MACs (forward `backbone_macs` plus
`cost.backward_macs` of the mask, per image, times the batch) by the time and
compare with the peak of a large matmul measured in the same run (JAX's and
torch's). On a GPU nothing changes: JAX uses its default backend and the peer
moves to CUDA when JAX runs on a GPU and torch sees one. Writes --out (JSON),
merging: rows of earlier runs stay unless this run measured the same (model,
op, batch, resolution); each row names its run ('runs' has each run's
settings), so `--ops=tinytrain_cached` adds rows without redoing the rest.
"""
import json
import os
import platform
import statistics
import time
import types

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from tinytrain_jax import cost
from tinytrain_jax import data
from tinytrain_jax import mask_partition
from tinytrain_jax import masks as masks_lib
from tinytrain_jax import models
from tinytrain_jax import selection
from tinytrain_jax.models import protonet
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import methods
from tinytrain_jax.train import sparse_step

try:
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_peer  # pylint: disable=g-import-not-at-top
except ImportError:  # reported by main() as one line
  torch = torch_peer = None

OPS = ('forward', 'fulltrain', 'lastlayer', 'tinytrain_strong',
       'tinytrain_dense', 'tinytrain_cached', 'selection')
MIX = {'mcunet-5fps': False, 'mbv2-w0.35': True, 'proxyless-w0.3': True}
WAYS = 5
_DEFAULT_THREADS = 1  # torch's default thread count, read in main()

_MODELS = flags.DEFINE_list('models', list(MIX), 'Backbones.')
_BATCHES = flags.DEFINE_list('batches', ['25', '100'], 'Batch sizes.')
_RES = flags.DEFINE_integer('resolution', 128, 'Input size in pixels.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs of each side.')
_OPS = flags.DEFINE_list('ops', list(OPS), f'Subset of {OPS}.')
_THREADS = flags.DEFINE_integer(
    'threads', 0, 'torch intra-op threads (0 = '
    'per row the faster of 1 and the default).')
_MATMUL = flags.DEFINE_integer('matmul', 2048, 'Side of the peak matmul.')
_OUT = flags.DEFINE_string('out', str(common.RESULTS_DIR / 'peer_speed.json'),
                           'Results JSON.')


def _peer_device():
  if jax.default_backend() == 'gpu' and torch.cuda.is_available():
    return torch.device('cuda')
  return torch.device('cpu')


def _sync(device):
  if device.type == 'cuda':
    torch.cuda.synchronize()


def _task_episode(spec):
  """A real Omniglot test task (TinyTrain's mask depends on the data)."""
  src = data.get_source('omniglot', 'test')
  es = data.sample_episode(
      src, data.SamplerConfig(mode='fixed', ways=WAYS, shots=5, queries=5), 0,
      0)
  return data.make_episode(src, es, resolution=spec.resolution, buckets=None,
                           way_buckets=None)


def _batch(spec, n, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (n, spec.resolution, spec.resolution, 3))
  return types.SimpleNamespace(
      support_x=x.astype(np.float32),
      support_y=(np.arange(n) % WAYS).astype(np.int32), support_mask=np.ones(
          (n,), bool), way_mask=np.ones((WAYS,), bool))


def _macs(spec, mask, n, input_grads=False, start=0):
  """Cost-model MACs of forward + backward (mask None: forward only); the
  forward from block `start` on (0: the whole network)."""
  per = (spec.backbone_macs if not start else
         ft.step_forward_macs(spec, start)['step_macs'])
  if mask is not None:
    per += cost.backward_macs(spec, mask,
                              count_unneeded_input_grad=input_grads).total_macs
  return int(per) * n


def peak_gmacs(n: int, device):
  """GMAC/s of an n x n x n fp32 matmul, JAX and torch, median of 5."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  mm = jax.jit(jnp.matmul)
  ta = torch.randn(n, n, device=device)
  times = {'jax': [], 'torch': []}
  fns = {
      'jax': lambda: jax.block_until_ready(mm(a, a)),
      'torch': lambda: (torch.mm(ta, ta), _sync(device))
  }
  for f in fns.values():
    f()
  for _ in range(5):
    for k, f in fns.items():
      t = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t)
  return {k: n**3 / statistics.median(v) / 1e9 for k, v in times.items()}


def _ours_step(spec, params, head, mask, b, start=0):
  """A closure running one real sparse fine-tune step (donated state); from
  the cached input of block `start` when start > 0."""
  cfg = ft.FinetuneConfig(steps=1)
  plan, idx = mask_partition.make_plan(spec, params, mask)
  idx = {k: jnp.asarray(v) for k, v in idx.items()}
  batch = {
      'support_x': jnp.asarray(b.support_x),
      'support_y': jnp.asarray(b.support_y),
      'support_mask': jnp.asarray(b.support_mask),
      'way_mask': jnp.asarray(b.way_mask)
  }
  if start:
    batch['support_h'] = ft.support_prefix(spec, params, batch['support_x'],
                                           start)
  st = {'tr': mask_partition.split(params, plan)}
  st['opt'] = sparse_step.sparse_optimizer(cfg.lr, cfg.momentum).init(st['tr'])

  def run():
    st['tr'], st['opt'], loss = ft.sparse_train_step(spec, plan, cfg, st['tr'],
                                                     st['opt'], params, head,
                                                     idx, batch, jnp.int32(0),
                                                     start_block=start)
    jax.block_until_ready(loss)

  return run


def _peer_step(net, spec, mask, b, device, dense, start=0):
  x = torch_peer.to_nchw(b.support_x).to(device)
  if start:
    x = net.prefix(x, start)
  y = torch.from_numpy(b.support_y.astype(np.int64)).to(device)
  names = ([c.name for c in spec.convs] if dense else torch_peer.trained_layers(
      spec, mask))
  torch_peer.set_trainable(net, names)
  opt = torch_peer.make_sgd(net)
  gm = torch_peer.dense_masks(net, spec, mask) if dense else None

  def run():
    if dense:
      torch_peer.dense_masked_step(net, opt, x, y, WAYS, gm, spec)
    else:
      torch_peer.train_step(net, opt, x, y, WAYS, start)
    _sync(device)

  return run


def _ops(spec, params, peer_params, head, masks, b, device):
  """{op: (ours(), peer(), macs)}; each closure runs one call to completion."""
  n = b.support_x.shape[0]
  xs = jnp.asarray(b.support_x)
  tx = torch_peer.to_nchw(b.support_x).to(device)
  fwd = jax.jit(lambda p, x: models.features(spec, p, x))
  out = {}

  def peer_net():
    return torch_peer.PeerNet(spec, peer_params).to(device)

  if 'forward' in _OPS.value:
    net = peer_net()
    torch_peer.set_trainable(net, ())

    def peer_fwd():
      with torch.no_grad():
        net(tx)
      _sync(device)

    out['forward'] = (lambda: jax.block_until_ready(fwd(params, xs)), peer_fwd,
                      _macs(spec, None, n))
  for op, key, dense in (('fulltrain', 'fulltrain',
                          False), ('lastlayer', 'lastlayer', False),
                         ('tinytrain_strong', 'tinytrain',
                          False), ('tinytrain_dense', 'tinytrain', True)):
    if op in _OPS.value:
      out[op] = (_ours_step(spec, params, head, masks[key], b),
                 _peer_step(peer_net(), spec, masks[key], b, device,
                            dense), _macs(spec, masks[key], n))
  if 'tinytrain_cached' in _OPS.value:
    plan, _ = mask_partition.make_plan(spec, params, masks['tinytrain'])
    start = ft.start_block(spec, plan)
    out['tinytrain_cached'] = (
        _ours_step(spec, params, head, masks['tinytrain'], b, start),
        _peer_step(peer_net(), spec, masks['tinytrain'], b, device, False,
                   start), _macs(spec, masks['tinytrain'], n, start=start))
  if 'selection' in _OPS.value:
    cfg = selection.SelectionConfig(*methods.tinytrain_budgets(spec))
    net = peer_net()
    ty = torch.from_numpy(b.support_y.astype(np.int64)).to(device)
    # Both sides measure the convs the budgets can select, as `select` does.
    reach = [c.name for c in selection.reachable_convs(spec, cfg)]

    def peer_sel():
      loss, o, i = torch_peer.fisher_pass(net, tx, ty, WAYS, reach)
      layer = {k: float(np.sum(v, dtype=np.float64)) for k, v in o.items()}
      fs = selection.FisherScores(o, i, layer, loss, n)
      selection.select_from_scores(spec, params, fs, cfg)

    bias_only = masks_lib.mask_from_layers(spec, params,
                                           {c: 'bias' for c in reach})
    # Ours gets the support images on the device, as the peer gets `tx`.
    b_dev = types.SimpleNamespace(**{**vars(b), 'support_x': xs})
    out['selection'] = (lambda: selection.select(spec, params, b_dev, cfg,
                                                 head),
                        peer_sel, _macs(spec, bias_only, n, input_grads=True))
  return out


def _peer_threads(peer):
  """Warms the peer up and keeps its faster thread count: torch's default
  (one per core) or 1 (on a loaded machine OpenMP barriers can make 2 threads
  many times slower than 1)."""
  best = None
  for n in sorted({_DEFAULT_THREADS, 1}, reverse=True):
    torch_peer.num_threads(n)
    peer()
    t = time.perf_counter()
    peer()
    t = time.perf_counter() - t
    if best is None or t < best[1]:
      best = (n, t)
  torch_peer.num_threads(best[0])
  return best[0]


def _time_pair(ours, peer, repeats):
  """Alternating timings after warm-up; returns (ours, peer, peer threads)."""
  for _ in range(2):
    ours()
  threads = (_THREADS.value or _peer_threads(peer))
  peer()
  t_ours, t_peer = [], []
  for _ in range(repeats):
    for fn, ts in ((ours, t_ours), (peer, t_peer)):
      t = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t)
  return t_ours, t_peer, threads


def _spread(ts):
  return (max(ts) - min(ts)) / statistics.median(ts)


def main(argv):
  del argv
  if torch is None:
    raise SystemExit('error: torch is not installed; the peer benchmark runs '
                     'in its own venv: python3 -m venv .venv-bench && '
                     '.venv-bench/bin/pip install -r requirements.txt -r '
                     'requirements-bench.txt')
  bad = sorted(set(_OPS.value) - set(OPS))
  if bad:
    raise SystemExit(f'error: --ops has unknown {bad}; accepted: {OPS}')
  global _DEFAULT_THREADS
  _DEFAULT_THREADS = torch_peer.num_threads()
  torch_peer.num_threads(_THREADS.value)
  device = _peer_device()
  head = protonet.init_head()
  load0 = os.getloadavg()
  peak = peak_gmacs(_MATMUL.value, device)
  print(
      f'peak {_MATMUL.value}^3 matmul: JAX {peak["jax"]:.1f} GMAC/s, '
      f'torch {peak["torch"]:.1f} GMAC/s', flush=True)
  rows = []
  run = time.strftime('%Y-%m-%dT%H:%M:%S')
  old = {}  # --out's rows and runs, read once and merged into each write
  if os.path.exists(_OUT.value):
    with open(_OUT.value) as f:
      old = json.load(f)
  for name in _MODELS.value:
    spec, np_params = models.load_pretrained(name, _RES.value, MIX[name])
    params = jax.tree.map(jnp.asarray, np_params)
    masks = {
        k: methods.method_mask(k, spec, params, None)
        for k in ('fulltrain', 'lastlayer')
    }
    if any(o.startswith('tinytrain') for o in _OPS.value):
      masks['tinytrain'] = methods.method_mask('tinytrain', spec, params,
                                               _task_episode(spec), head)
    for n in map(int, _BATCHES.value):
      b = _batch(spec, n)
      for op, (ours, peer, macs) in _ops(spec, params, np_params, head, masks,
                                         b, device).items():
        t_ours, t_peer, threads = _time_pair(ours, peer, _REPEATS.value)
        o, p = statistics.median(t_ours), statistics.median(t_peer)
        row = dict(model=spec.name + ('+mix' if spec.feature_mix else ''),
                   op=op, batch=n, ours_s=o, peer_s=p, ratio=o / p,
                   resolution=_RES.value, macs=macs, ours_gmacs=macs / o / 1e9,
                   peer_gmacs=macs / p / 1e9, peer_threads=threads,
                   ours_runs=t_ours, peer_runs=t_peer,
                   ours_spread=_spread(t_ours), peer_spread=_spread(t_peer),
                   run=run)
        rows.append(row)
        print(
            f'{row["model"]:<20} {op:<17} {n:>4} ours {o:8.4f} s  peer '
            f'{p:8.4f} s  ratio {o / p:5.2f}  ({row["ours_gmacs"]:.1f} vs '
            f'{row["peer_gmacs"]:.1f} GMAC/s; spread '
            f'{row["ours_spread"]:.0%} / {row["peer_spread"]:.0%})', flush=True)
        _write(_payload(rows, old, device, peak, load0, run))
  print('wrote', _write(_payload(rows, old, device, peak, load0, run)))


def _payload(rows, old, device, peak, load0, run):
  """This run's rows merged into `old` (--out as it was before the run): a
  row of an earlier run stays unless this run measured the same (model, op,
  batch, resolution); each row names its run, and 'runs' keeps every run's
  settings."""
  meta = _run_meta(device, peak, load0)
  runs = dict(old.get('runs') or {})
  if old.get('rows') and not old.get('runs'):  # a file from before runs
    runs['earlier'] = {k: v for k, v in old.items() if k != 'rows'}
  runs[run] = meta
  key = lambda r: (r['model'], r['op'], r['batch'], r['resolution'])
  new = {key(r) for r in rows}
  kept = [dict(r, run=r.get('run', 'earlier'))
          for r in old.get('rows', []) if key(r) not in new]
  return dict(meta, runs=runs, rows=kept + rows)


def _run_meta(device, peak, load0):
  return {
      'command': 'python -m benchmarks.peer_speed',
      'flags': {
          'models': _MODELS.value,
          'batches': _BATCHES.value,
          'resolution': _RES.value,
          'repeats': _REPEATS.value
      },
      'device': common.device_info(),
      'peer_device': str(device),
      'cpu': platform.processor() or platform.machine(),
      'cores': os.cpu_count(),
      'torch': torch.__version__,
      'torch_threads': torch.get_num_threads(),
      # glibc's reuse of freed memory (docs/devices.md, "Host memory"): on a
      # CPU both sides run 1.3-3x slower without it at batch 100.
      'malloc_env': {
          k: os.environ.get(k)
          for k in ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_MAX_',
                    'MALLOC_TRIM_THRESHOLD_')
      },
      'load_average_start_end': [load0, os.getloadavg()],
      'peak_gmacs': peak,
      'units': {
          '*_s': 'median seconds per call',
          'ratio': 'ours / peer',
          'macs': 'cost-model MACs of the call (whole batch)'
      }
  }


def _write(payload):
  out = _OUT.value
  default = str(common.RESULTS_DIR / 'peer_speed.json')
  if os.path.abspath(out) == os.path.abspath(default):
    return common.write_results('peer_speed', payload)
  with open(out, 'w') as f:
    json.dump(payload, f, indent=1)
  return out


if __name__ == '__main__':
  app.run(main)
