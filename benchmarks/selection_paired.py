"""Does dynamic selection earn its keep? Paired differences on val tasks.

  python -m benchmarks.selection_paired --episodes=200

Runs TinyTrain (Fisher channel ranking), its static-L2 and random-ranking
twins (same layer choice rule, same budgets) and SparseUpdate on the *same*
tasks of a validation split (mini-ImageNet val by default; never a test
target), all from the same start weights (the main job's cached
meta-trained backbone, or `--start=pretrained`), and reports each variant's
accuracy and the paired difference to TinyTrain with its 95 % CI
(1.96 std / sqrt(n) of the per-task differences). Pairing removes the
task-to-task spread, which is what lets a 1 pp gap be resolved.

Writes benchmarks/results/selection_paired_<model>_<start>_<source>[_<tag>].json
and prints a Markdown table.
"""
import json
import time

from absl import app, flags
import numpy as np

from benchmarks import common
from tinytrain_jax import data
from tinytrain_jax.configs import default
from tinytrain_jax.configs import eval_config
from tinytrain_jax.eval import meta_cache, plan, report
from tinytrain_jax.models import load_pretrained, protonet
from tinytrain_jax.train import finetune as ft
from tinytrain_jax.train import methods as methods_lib

_MODEL = flags.DEFINE_string('model', 'mcunet-5fps', 'backbone')
_START = flags.DEFINE_enum('start', 'metatrained', plan.STARTS,
                           'start weights of every variant')
_SOURCE = flags.DEFINE_string('source', 'mini-imagenet', 'source (valid split)')
_EPISODES = flags.DEFINE_integer('episodes', 200, 'paired tasks')
_RES = flags.DEFINE_integer('resolution', 0, '0 = the main config\'s')
_STEPS = flags.DEFINE_integer('steps', 40, 'fine-tune steps')
_LR = flags.DEFINE_float('lr', 1e-2, 'fine-tune lr when --lr_choice is unset')
_LR_CHOICE = flags.DEFINE_string(
    'lr_choice', '', 'an evaluation workdir\'s lr_choice.json: each variant '
    'uses the lr the protocol chose for it there')
_VARIANTS = flags.DEFINE_list(
    'variants',
    ['tinytrain', 'tinytrain_l2', 'tinytrain_random', 'sparseupdate'],
    'methods; the first is the reference. TinyTrain selection variants as '
    "'tinytrain:field=value[:field=value]' (methods.parse_variant), e.g. "
    'tinytrain:potential=inp, tinytrain:layer_order=fisher; a suffix @lr '
    'fixes that variant\'s lr (tinytrain:budget=16@3e-3)')
_SEED = flags.DEFINE_integer('seed', 4242, 'task seed (not the dev seed)')
_CHUNK = flags.DEFINE_integer('chunk', 20, 'tasks fine-tuned together')
_QUICK = flags.DEFINE_bool('quick', False, 'tiny run (tests)')
_TAG = flags.DEFINE_string(
    'tag', '', 'appended to the results file name, so runs with other '
    'variants on the same source do not replace each other')


def _split_lr(variant):
  """'method@lr' -> (method, lr or None): a variant's own fine-tune lr."""
  method, at, lr = variant.partition('@')
  if not at:
    return method, None
  try:
    return method, float(lr)
  except ValueError:
    raise app.UsageError(f'--variants: {variant!r}: expected method@lr with '
                         f'a number after @, e.g. tinytrain:budget=16@3e-3'
                         ) from None


def _lr_for(method, own, start):
  """`own` (a variant's @lr) if given, else the lr table's or --lr."""
  if own is not None:
    return own
  if not _LR_CHOICE.value:
    return _LR.value
  table = json.loads(open(_LR_CHOICE.value).read())
  # A selection variant ('tinytrain:potential=inp') uses its base's lr.
  base = method.split(':')[0]
  label = plan.Variant(base, start).label
  got = table.get(f'{_MODEL.value}/{label}')
  return got['lr'] if got else _LR.value


def main(argv):
  del argv
  parsed = {m: _split_lr(m) for m in _VARIANTS.value}  # (method, own lr)
  for method, _ in parsed.values():
    try:
      methods_lib.get_method(method)
    except ValueError as e:
      raise app.UsageError(f'--variants: {e}') from None
  cd = default.get_config('quick' if _QUICK.value else '')
  cd.resolution = _RES.value or cd.resolution  # also meta_train's (0)
  cfg = eval_config.from_config_dict(cd)
  res = cfg.resolution
  mix = _MODEL.value in plan.MIX_BACKBONES
  spec, params = load_pretrained(_MODEL.value, res, mix)
  head = protonet.init_head()
  if _START.value == 'metatrained':
    params, head, info = meta_cache.meta_trained_starts(cfg, [_MODEL.value],
                                                        res)[_MODEL.value]
  else:
    info = {}
  src = data.get_source(_SOURCE.value, 'valid')
  sampler = data.SamplerConfig(mode='fixed', ways=5, shots=5, queries=10)
  n = 2 if _QUICK.value else _EPISODES.value
  steps = 2 if _QUICK.value else _STEPS.value
  budgets = methods_lib.tinytrain_budgets(spec)
  accs = {m: [] for m in _VARIANTS.value}
  costs = {m: [] for m in _VARIANTS.value}
  lrs = {m: _lr_for(*parsed[m], _START.value) for m in _VARIANTS.value}
  t0 = time.time()
  specs = data.sample_episodes(src, sampler, _SEED.value, n)
  # Chunks of tasks run batched over the devices (`run_methods`); results
  # equal one task at a time (tests/train/task_batch_test.py).
  for lo in range(0, n, _CHUNK.value):
    idx = list(range(lo, min(n, lo + _CHUNK.value)))
    eps = [
        data.make_episode(src, specs[i], res, buckets=None, way_buckets=None)
        for i in idx
    ]
    for m in _VARIANTS.value:
      for r in methods_lib.run_methods(parsed[m][0], spec, params, head, eps,
                                       ft.FinetuneConfig(steps=steps,
                                                         lr=lrs[m]),
                                       budgets, tasks=idx):
        accs[m].append(100.0 * float(r['accuracy']))
        costs[m].append((r['bwd_bytes'], r['bwd_macs']))
    el = time.time() - t0
    done = idx[-1] + 1
    print(
        f'{done}/{n} tasks [{el:.0f}s, eta {el / done * (n - done):.0f}s] ' +
        ' '.join(f'{m}={np.mean(a):.1f}' for m, a in accs.items()),
        flush=True)
  ref = _VARIANTS.value[0]
  rows = []
  for m in _VARIANTS.value:
    mean, ci = float(np.mean(accs[m])), float(1.96 * np.std(accs[m]) /
                                              np.sqrt(n))
    d, dci = report.paired_ci95(accs[ref], accs[m])
    rows.append(
        dict(method=m, lr=lrs[m], accuracy_mean=mean, accuracy_ci95=ci,
             diff_vs_ref=d if m != ref else 0.0,
             diff_ci95=dci if m != ref else 0.0,
             bwd_bytes=float(np.mean([c[0] for c in costs[m]])),
             bwd_macs=float(np.mean([c[1] for c in costs[m]]))))
  print(f'\n{_MODEL.value} @{res}px, {n} tasks of {_SOURCE.value} valid, '
        f'start {_START.value}\n')
  print(f'| method | lr | accuracy % | {ref} minus method (paired, 95% CI) '
        '| bwd memory | bwd MACs |')
  print('|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['method']} | {r['lr']:g} | {r['accuracy_mean']:.2f} ± "
          f"{r['accuracy_ci95']:.2f} | "
          f"{r['diff_vs_ref']:+.2f} ± {r['diff_ci95']:.2f} | "
          f"{r['bwd_bytes'] / 1024:.0f} KiB | {r['bwd_macs'] / 1e6:.2f}M |")
  if not _QUICK.value:
    common.write_results(
        f'selection_paired_{_MODEL.value}_{_START.value}_{_SOURCE.value}' +
        (f'_{_TAG.value}' if _TAG.value else ''),
        dict(device=common.device_info(), model=_MODEL.value, resolution=res,
             source=_SOURCE.value, split='valid', episodes=n, steps=steps,
             seed=_SEED.value, start=_START.value,
             meta_trained=info.get('cache'), reference=ref, rows=rows,
             per_task={m: accs[m] for m in accs}))


if __name__ == '__main__':
  app.run(main)
