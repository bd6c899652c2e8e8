"""Evaluation protocol: studies of (backbone, domain) over the same test tasks.

For every study (`plan.studies`: backbone x domain x sampler) one fixed list
of episodes is drawn from the seed (episode i = f(seed, i)) and every variant
(method x start weights, `plan.Variant`) sees exactly those tasks. Per task a
variant resets to its start weights (pretrained, or meta-trained on
mini-ImageNet: `meta_cache`), fine-tunes what its method allows with the lr
chosen on dev tasks of a validation split (`lr_choice`), and classifies the
queries. Per (backbone, variant, domain): mean accuracy (%) over episodes
with its 95 % CI (1.96 std / sqrt(n)), the mean backward memory (bytes, fp32
model over the support batch) and backward MACs per sample.

The lr choices run two at a time (`LR_CHOICE_THREADS`), and so do a chunk
of tasks' variants (`STUDY_THREADS`), so that one XLA compile (one core)
overlaps other work; no number depends on what runs beside it.

Every finished episode is appended to `<workdir>/episodes.jsonl`; a rerun
skips what is there, so an interrupted evaluation loses at most one episode.
`<workdir>/run_config.json` pins the config (`run_config`): a rerun whose
settings would change any stored number is refused (only the lists of
backbones, domains, methods and the episode counts may change).

  cfg = EvalConfig(domains=('omniglot',), episodes=2)   # eval/config.py
  rows = run_evaluation(cfg, '/tmp/eval')
"""
from concurrent import futures
import dataclasses
import json
import pathlib
import sys
import threading
import time
from typing import Any, Dict, List

import jax
from jax.experimental import multihost_utils
import numpy as np

from tinytrain_jax import compile_clock
from tinytrain_jax import data
from tinytrain_jax import devices as devices_lib
from tinytrain_jax import progress as progress_lib
from tinytrain_jax.eval import config as config_lib
from tinytrain_jax.eval import lr_choice
from tinytrain_jax.eval import meta_cache
from tinytrain_jax.eval import plan as plan_lib
from tinytrain_jax.eval import report
from tinytrain_jax.eval import run_config
from tinytrain_jax.models import load_pretrained, protonet
from tinytrain_jax.train import methods as methods_lib

EvalConfig = config_lib.EvalConfig
ROW_SELECTING_KEYS = run_config.ROW_SELECTING_KEYS


def _read_done(path: pathlib.Path) -> Dict:
  """Rows of episodes.jsonl; a line cut by a kill is removed from the file."""
  done = {}
  if not path.exists():
    return done
  text = path.read_text()
  good = []
  for line in text.splitlines(keepends=True):
    try:
      r = json.loads(line)
    except ValueError:
      continue  # cut by a kill: that episode is simply redone
    if not line.endswith('\n'):
      line += '\n'
    good.append(line)
    done[(r['backbone'], r['domain'], r['method'], r['episode'])] = r
  if ''.join(good) != text:
    tmp = path.with_suffix('.jsonl.tmp')
    tmp.write_text(''.join(good))
    tmp.replace(path)
  return done


def _budgets(cfg: EvalConfig, spec):
  sel = cfg.selection
  return methods_lib.tinytrain_budgets(spec, float(sel.budget_scale),
                                       sel.budget_bytes, sel.budget_macs)


# lr choices run at once (`_choose_lrs`); a study's variants run at once.
LR_CHOICE_THREADS = 2
STUDY_THREADS = 2


def _seconds(wall: float, compile_s: float, compiles: int) -> Dict:
  return {'wall': round(wall, 1), 'compile': round(compile_s, 1),
          'compiles': int(compiles)}


def _add_seconds(into: Dict, key: str, wall: float, compile_s: float,
                 compiles: int) -> None:
  got = into.get(key, _seconds(0, 0, 0))
  into[key] = _seconds(got['wall'] + wall, got['compile'] + compile_s,
                       got['compiles'] + compiles)


def _choose_lrs(cfg, studies, specs, starts, budgets, workdir, progress,
                mesh=None, detail=None):
  """(backbone, label) -> lr: fixed overrides, else chosen on dev tasks.
  `detail` (a dict) gets '<backbone> <label>': `_seconds` of each choice."""
  fixed = dict(cfg.lr_choice.lr_per_method)
  grid = list(cfg.lr_choice.lr_grid)
  choices = lr_choice.LrChoices(workdir)
  ft_cfg = cfg.finetune
  out, eps = {}, {}
  todo = list(
      dict.fromkeys((s.backbone, v) for s in studies for v in s.variants))
  clock = compile_clock.CompileClock()
  lock = threading.Lock()

  def choose(bb, v):
    params, head = starts[bb][v.start][:2]
    t0, c0 = time.time(), clock.read(this_thread=True)
    got = lr_choice.choose_lr(v.method, specs[bb], params, head, eps[bb],
                              ft_cfg, budgets[bb], grid, mesh,
                              cfg.lr_choice.lr_grid_extend)
    wall, (comp, n) = time.time() - t0, clock.since(c0, this_thread=True)
    with lock:
      choices.put(bb, v.label, got)
      if detail is not None:
        detail[f'{bb} {v.label}'] = _seconds(wall, comp, n)
      if progress:
        print(
            f'lr for {bb} {v.label}: {got["lr"]:g} (dev accuracy '
            f'{got["dev_accuracy"]}, {wall:.0f}s, {comp:.0f}s of it '
            f'compiling)', file=sys.stderr, flush=True)
    return got

  pending = {}
  for bb, v in todo:
    if v.method == 'none' or v.method in fixed or not grid:
      out[(bb, v.label)] = fixed.get(v.method, ft_cfg.lr)
    elif (got := choices.get(bb, v.label)) is not None:
      out[(bb, v.label)] = got['lr']
    else:
      if bb not in eps:
        eps[bb] = lr_choice.dev_episodes(cfg.lr_choice.dev_source,
                                         cfg.resolution,
                                         cfg.lr_choice.dev_episodes,
                                         cfg.fixed_sampler)
      pending[(bb, v.label)] = (bb, v)
  # Choices are independent: two at a time, so that one's XLA compile (one
  # core, the GIL released) overlaps the other's tracing and tasks. Each
  # choice's numbers do not depend on what runs beside it.
  with futures.ThreadPoolExecutor(LR_CHOICE_THREADS) as pool:
    done = {k: pool.submit(choose, *a) for k, a in pending.items()}
    for k, f in done.items():
      out[k] = f.result()['lr']
  return out, dict(sorted(choices.table.items()))


def _log_name(process: int) -> str:
  """Episode log of a process: episodes.jsonl (process 0), episodes.p<k>.jsonl."""
  return 'episodes.jsonl' if process == 0 else f'episodes.p{process}.jsonl'


def run_evaluation(cfg: EvalConfig, workdir, progress: bool = True,
                   mesh=None, tasks_per_device: int = 1) -> List[Dict[str, Any]]:
  """Runs the protocol of `cfg` and writes the report.

  Args:
    cfg: an `EvalConfig`; launchers build it from a config file with
      `configs.eval_config.from_config_dict`.
    workdir: results, the episode log and run_config.json go here; a rerun
      resumes.
    progress: progress bar (TTY) or log lines on stderr.
    mesh: the devices tasks are spread over (default: all local devices;
      `devices.make_mesh`); per-task results do not depend on it.
    tasks_per_device: tasks per device in one chunk (`methods.run_methods`
      vmaps the tasks of a chunk whose plans agree).

  Returns:
    result rows (see `report.REQUIRED`), also written to workdir; [] on
    processes other than 0 of a multi-process run (process 0 merges every
    process's episode log into the one report).

  Raises:
    TypeError: cfg is not an EvalConfig (e.g. a config file's dict).
    ValueError: one line: the workdir holds results of another config, a
      checkpoint or source is unusable, ...
  """
  if not isinstance(cfg, EvalConfig):
    raise TypeError(f'run_evaluation takes an eval.config.EvalConfig, got '
                    f'{type(cfg).__name__}; build it with tinytrain_jax.'
                    'configs.eval_config.from_config_dict')
  workdir = pathlib.Path(workdir)
  studies = plan_lib.studies(cfg)
  cfg_dict = cfg.to_json_dict()
  workdir.mkdir(parents=True, exist_ok=True)
  run_config.check(workdir, cfg_dict)
  sources = {s.source: data.get_source(s.source, cfg.split) for s in studies}
  backbones = list(dict.fromkeys(s.backbone for s in studies))
  specs, starts, budgets = {}, {}, {}
  for bb in backbones:
    spec, pre = load_pretrained(bb, cfg.resolution, bb
                                in plan_lib.MIX_BACKBONES)
    specs[bb], budgets[bb] = spec, _budgets(cfg, spec)
    starts[bb] = {'pretrained': (pre, protonet.init_head(), {})}
  need = [b for b, n in plan_lib.needs_metatrained(studies).items() if n]
  no_meta = cfg.meta_train is None and not cfg.meta_train_checkpoints
  if no_meta:  # nothing to meta-train: those variants use pretrained weights
    for bb in need:
      starts[bb]['metatrained'] = starts[bb]['pretrained'][:2] + ({
          'note': 'meta_train.steps=0: the pretrained weights'
      },)
    need = []
  timings, detail = {}, {}  # wall s per phase; per variant wall/compile
  clock = compile_clock.CompileClock()
  t_phase, c_phase = time.time(), clock.read()
  # Meta-train (or load) before any task, so the progress ETAs are honest.
  for bb, st in meta_cache.meta_trained_starts(cfg, need, cfg.resolution,
                                               progress).items():
    starts[bb]['metatrained'] = st
  timings['meta_train'] = time.time() - t_phase
  detail['meta_train'] = _seconds(timings['meta_train'], *clock.since(c_phase))
  t_phase, c_phase = time.time(), clock.read()
  mesh = mesh or devices_lib.make_mesh(local=True)
  detail['lr_choice'] = {}
  lrs, lr_table = _choose_lrs(cfg, studies, specs, starts, budgets, workdir,
                              progress, mesh, detail['lr_choice'])
  timings['lr_choice'] = time.time() - t_phase
  detail['lr_choice']['all'] = _seconds(timings['lr_choice'],
                                        *clock.since(c_phase))
  ft_cfg = cfg.finetune
  chunk = mesh.size * max(1, int(tasks_per_device))
  log_path = workdir / _log_name(jax.process_index())
  done = _read_done(log_path)
  for other in workdir.glob('episodes*.jsonl'):  # other processes' shares
    if other != log_path:
      done.update(_read_done(other))
  with log_path.open('a') as log:
    for st in studies:
      t_phase, c_phase = time.time(), clock.read()
      phase = detail.setdefault(f'{st.backbone} {st.domain}', {})
      bb, spec, src = st.backbone, specs[st.backbone], sources[st.source]
      specs_ep = data.sample_episodes(src, st.sampler, cfg.seed, st.episodes)
      mine = devices_lib.process_share(len(specs_ep))
      if st.padding['buckets'] is not None:
        # Equal bucket shapes side by side: a chunk's tasks share programs,
        # and each shape's programs are compiled once, used, then let go.
        mine = sorted(mine, key=lambda i: data.bucket_shape(
            specs_ep[i], **st.padding))
      bar = progress_lib.Progress(
          len(mine) * len(st.variants), f'{bb} {st.domain}', unit='task',
          enabled=progress)
      per = {v.label: [] for v in st.variants}
      lock = threading.Lock()

      def run_variant(v, ids, eps):
        todo = [i for i in ids if (bb, st.domain, v.label, i) not in done]
        params, head, _ = starts[bb][v.start]
        lr = lrs[(bb, v.label)]
        t0, k0 = time.time(), clock.read(this_thread=True)
        outs = methods_lib.run_methods(
            v.method, spec, params, head, [eps[i] for i in todo],
            dataclasses.replace(ft_cfg, lr=lr), budgets[bb], tasks=todo,
            mesh=mesh) if todo else []
        with lock:
          _add_seconds(phase, v.label, time.time() - t0,
                       *clock.since(k0, this_thread=True))
          for i, r in zip(todo, outs):
            done[(bb, st.domain, v.label, i)] = dict(
                backbone=bb, domain=st.domain, method=v.label,
                base_method=v.method, start=v.start, episode=i,
                accuracy=100.0 * float(r['accuracy']),
                bwd_bytes=int(r['bwd_bytes']), bwd_macs=int(r['bwd_macs']),
                lr=lr, meta_trained=v.start == 'metatrained' and not no_meta,
                ways=int(np.asarray(eps[i].way_mask).sum()), mask=r['mask'])
            log.write(json.dumps(done[(bb, st.domain, v.label, i)]) + '\n')
            log.flush()
          for i in ids:
            per[v.label].append(done[(bb, st.domain, v.label, i)])
            bar.update('acc% ' + ' '.join(
                f"{m}={sum(x['accuracy'] for x in xs) / len(xs):.1f}"
                for m, xs in per.items()
                if xs))

      # A chunk's variants are independent: STUDY_THREADS at a time, so one
      # variant's XLA compile (one core) overlaps another's tasks; a new
      # bucket shape of a variable study compiles every method's programs.
      # Each task's numbers do not depend on what runs beside it.
      with futures.ThreadPoolExecutor(STUDY_THREADS) as pool:
        for c0 in range(0, len(mine), chunk):
          ids = mine[c0:c0 + chunk]
          eps = {
              i: data.make_episode(src, specs_ep[i], cfg.resolution,
                                   **st.padding)
              for i in ids
              if any((bb, st.domain, v.label, i) not in done
                     for v in st.variants)
          }
          for f in [pool.submit(run_variant, v, ids, eps)
                    for v in st.variants]:
            f.result()
      bar.close()
      timings[f'{bb} {st.domain}'] = time.time() - t_phase
      _add_seconds(phase, 'all', timings[f'{bb} {st.domain}'],
                   *clock.since(c_phase))
  if jax.process_count() > 1:  # every share logged before one report
    multihost_utils.sync_global_devices('tinytrain_jax evaluation done')
    if jax.process_index() != 0:
      return []
    for other in workdir.glob('episodes*.jsonl'):
      done.update(_read_done(other))
  rows = []
  for st in studies:
    ref = [
        done[(st.backbone, st.domain, 'tinytrain', i)]['accuracy']
        for i in range(st.episodes)
    ] if any(v.label == 'tinytrain' for v in st.variants) else None
    for v in st.variants:
      xs = [
          done[(st.backbone, st.domain, v.label, i)]
          for i in range(st.episodes)
      ]
      bb = st.backbone
      mean, ci = report.mean_ci95([x['accuracy'] for x in xs])
      # The study's variants share their tasks: TinyTrain's paired gap.
      paired = ({} if ref is None or v.label == 'tinytrain' else {
          'tinytrain_minus':
              list(report.paired_ci95(ref, [x['accuracy'] for x in xs]))
      })
      rows.append(
          dict(backbone=bb, method=v.label, base_method=v.method,
               start=v.start, domain=st.domain, sampler=st.sampler.mode,
               accuracy_mean=mean, accuracy_ci95=ci, episodes=len(xs),
               lr=lrs[(bb, v.label)],
               bwd_bytes=float(sum(x['bwd_bytes'] for x in xs) / len(xs)),
               bwd_macs=float(sum(x['bwd_macs'] for x in xs) / len(xs)),
               meta_trained=v.start == 'metatrained' and not no_meta,
               **paired))
  meta_info = {
      bb: st['metatrained'][2]
      for bb, st in starts.items()
      if 'metatrained' in st
  }
  curves = {bb: i['val'] for bb, i in meta_info.items() if i.get('val')}
  if curves:
    report.plot_meta_validation(curves, workdir / 'meta_val.png')
  report.write_report(
      workdir, rows, dict(cfg_dict, lr_choice=lr_table, meta_trained=meta_info),
      in_domain=cfg.in_domain, timings=timings, timing_detail=detail)
  return rows
