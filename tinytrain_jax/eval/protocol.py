"""Evaluation protocol: backbones x domains x methods over the same test tasks.

For every (backbone, domain) one fixed list of episodes is drawn from the seed
(episode i = f(seed, i)) and every method sees exactly those tasks. Per task a
method resets to its start weights (pretrained for the paper's Table-1
baselines, meta-trained for TinyTrain), fine-tunes what its mask allows and
classifies the queries. Per (backbone, method, domain): mean accuracy (%) over
episodes with its 95 % CI (1.96 std / sqrt(n)), and the mean backward memory
(bytes, fp32 model over the support batch) and backward MACs per sample.

Every finished episode is appended to `<workdir>/episodes.jsonl`; a rerun skips
what is there, so an interrupted evaluation loses at most one episode.
"""
import dataclasses
import json
import pathlib
import sys
import time
from typing import Any, Dict, List

import jax

from tinytrain_jax import data
from tinytrain_jax.eval import report
from tinytrain_jax.models import load_pretrained, protonet
from tinytrain_jax.models.registry import canonical_name
from tinytrain_jax.train import finetune as finetune_lib
from tinytrain_jax.train import meta_train as meta_lib
from tinytrain_jax.train import methods as methods_lib

MIX_BACKBONES = ('mbv2-w0.35', 'proxyless-w0.3')  # TinyTrain uses their mix conv


def split_list(value, flag: str, accepted=None) -> List[str]:
  """'a,b' -> ['a', 'b'], checking names; errors name the flag."""
  items = [v.strip() for v in str(value).split(',') if v.strip()]
  if not items:
    raise ValueError(f'--config.{flag} is empty; give a comma list')
  if accepted is not None:
    bad = [v for v in items if v not in accepted]
    if bad:
      raise ValueError(f'--config.{flag}: unknown {bad}; accepted: '
                       f'{", ".join(accepted)}')
  return items


def parse_lr_overrides(text: str) -> Dict[str, float]:
  """'lastlayer=1e-2,tinytrain=3e-3' -> {method: lr}; names are checked."""
  out = {}
  for item in filter(None, (t.strip() for t in str(text or '').split(','))):
    name, _, value = item.partition('=')
    try:
      out[name.strip()] = float(value)
    except ValueError:
      raise ValueError(f'--config.finetune.lr_per_method: bad item {item!r}; '
                       'use method=lr,method=lr') from None
  unknown = sorted(set(out) - set(methods_lib.METHODS))
  if unknown:
    raise ValueError(f'--config.finetune.lr_per_method: unknown methods '
                     f'{unknown}; accepted: {", ".join(methods_lib.METHODS)}')
  return out


class _Progress:
  """tqdm bar with ETA and running accuracy on a TTY; log lines otherwise."""

  def __init__(self, total, desc):
    self.total, self.desc, self.done, self.t0 = total, desc, 0, time.time()
    self.bar = None
    if sys.stderr.isatty():
      import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm.tqdm(total=total, desc=desc, dynamic_ncols=True)

  def update(self, running: Dict[str, float]):
    self.done += 1
    post = ' '.join(f'{m}={a:.1f}' for m, a in running.items())
    if self.bar is not None:
      self.bar.update(1)
      self.bar.set_postfix_str(post)
    elif self.done % max(1, self.total // 10) == 0 or self.done == self.total:
      el = time.time() - self.t0
      eta = el / self.done * (self.total - self.done)
      print(f'{self.desc} {self.done}/{self.total} [{el:.0f}s, eta {eta:.0f}s]'
            f' acc% {post}', file=sys.stderr, flush=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()


def _meta_trained(cfg, backbone, resolution, workdir, progress):
  """(params, head) after meta-training (or from cfg.meta_train.checkpoint)."""
  mt = cfg.meta_train
  if mt.checkpoint:
    _, params, head = meta_lib.load_backbone(mt.checkpoint, resolution)
    return params, head
  mcfg = meta_lib.MetaTrainConfig(
      model=backbone, resolution=resolution,
      feature_mix=backbone in MIX_BACKBONES, source=mt.source, ways=mt.ways,
      shots=mt.shots, queries=mt.queries, steps=mt.steps, lr=mt.lr,
      warmup_steps=mt.warmup_steps, augment=mt.augment, seed=cfg.seed,
      checkpoint_every=mt.checkpoint_every)
  state = meta_lib.meta_train(mcfg, workdir / 'meta_train' / backbone,
                              progress=progress)
  return state.params, state.head


def _done_keys(path):
  done = {}
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        r = json.loads(line)
      except ValueError:
        continue  # a line cut by a kill: that episode is simply redone
      done[(r['backbone'], r['domain'], r['method'], r['episode'])] = r
  return done


def run_evaluation(cfg, workdir, progress: bool = True) -> List[Dict[str, Any]]:
  """Runs the protocol of `cfg` (configs/default.py) and writes the report.

  Returns:
    result rows (see `report.REQUIRED`), also written to workdir.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  backbones = [canonical_name(b) for b in split_list(cfg.backbones,
                                                     'backbones')]
  methods = split_list(cfg.methods, 'methods', list(methods_lib.METHODS))
  domains = split_list(cfg.domains, 'domains')
  meta_sel = str(cfg.meta_methods).strip()
  if cfg.episodes < 1:
    raise ValueError(f'--config.episodes must be >= 1, got {cfg.episodes}')
  sampler_cfg = data.SamplerConfig(
      mode=cfg.sampler.mode, **({'ways': cfg.sampler.ways,
                                 'shots': cfg.sampler.shots,
                                 'queries': cfg.sampler.queries}
                                if cfg.sampler.mode == 'fixed' else {}))
  sources = {d: data.get_source(d, cfg.split) for d in domains}
  ft_cfg = finetune_lib.FinetuneConfig(
      steps=cfg.finetune.steps, lr=cfg.finetune.lr,
      momentum=cfg.finetune.momentum, augment=cfg.finetune.augment,
      seed=cfg.seed)
  lr_for = parse_lr_overrides(cfg.finetune.lr_per_method)
  log_path = workdir / 'episodes.jsonl'
  done = _done_keys(log_path)
  rows = []
  with log_path.open('a') as log:
    for bb in backbones:
      spec, pre = load_pretrained(bb, cfg.resolution, bb in MIX_BACKBONES)
      budgets = methods_lib.tinytrain_budgets(
          spec, cfg.selection.budget_scale, cfg.selection.budget_bytes,
          cfg.selection.budget_macs)
      starts = {'pretrained': (pre, protonet.init_head())}

      def start_for(method):
        meta = (methods_lib.get_method(method).start == 'metatrained'
                if meta_sel in ('', 'default') else
                meta_sel == 'all' or method in meta_sel.split(','))
        if meta and cfg.meta_train.steps > 0 or (meta and
                                                 cfg.meta_train.checkpoint):
          if 'metatrained' not in starts:
            starts['metatrained'] = _meta_trained(cfg, bb, cfg.resolution,
                                                  workdir, progress)
          return starts['metatrained'], True
        return starts['pretrained'], False

      for m in methods:  # meta-train up front, so progress ETAs are honest
        start_for(m)
      for d in domains:
        specs = data.sample_episodes(sources[d], sampler_cfg, cfg.seed,
                                     cfg.episodes)
        per = {m: [] for m in methods}
        bar = _Progress(len(specs) * len(methods), f'{bb} {d}') if progress else None
        for i, es in enumerate(specs):
          ep = None
          for m in methods:
            key = (bb, d, m, i)
            if key not in done:
              if ep is None:
                ep = data.make_episode(sources[d], es, cfg.resolution,
                                       buckets=None, way_buckets=None)
              (params, head), meta = start_for(m)
              r = methods_lib.run_method(
                  m, spec, params, head, ep,
                  dataclasses.replace(ft_cfg, lr=lr_for.get(m, ft_cfg.lr)),
                  budgets)
              done[key] = dict(backbone=bb, domain=d, method=m, episode=i,
                               accuracy=100.0 * float(r['accuracy']),
                               bwd_bytes=int(r['bwd_bytes']),
                               bwd_macs=int(r['bwd_macs']), meta_trained=meta,
                               mask=r['mask'])
              log.write(json.dumps(done[key]) + '\n')
              log.flush()
            per[m].append(done[key])
            if bar:
              bar.update({mm: sum(x['accuracy'] for x in v) / len(v)
                          for mm, v in per.items() if v})
        if bar:
          bar.close()
        for m in methods:
          mean, ci = report.mean_ci95([x['accuracy'] for x in per[m]])
          rows.append(dict(
              backbone=bb, method=m, domain=d, accuracy_mean=mean,
              accuracy_ci95=ci, episodes=len(per[m]),
              bwd_bytes=float(sum(x['bwd_bytes'] for x in per[m]) /
                              len(per[m])),
              bwd_macs=float(sum(x['bwd_macs'] for x in per[m]) /
                             len(per[m])),
              meta_trained=per[m][0]['meta_trained']))
  report.write_report(workdir, rows, json.loads(cfg.to_json()))
  return rows
