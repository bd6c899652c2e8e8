"""Results of an evaluation run: JSON, Markdown tables, Pareto plots.

A result row (one backbone x method x domain) has at least
  backbone, method, domain, accuracy_mean, accuracy_ci95, episodes,
  bwd_bytes, bwd_macs
with accuracy in % (mean over episodes, 95 % CI = 1.96 std / sqrt(n)), backward
memory in bytes (the analytic fp32 batch-1 model used for budgets) and backward
MACs per sample. `write_report` writes results.json, results.md and the plots;
the three always hold the same numbers because they are made from one list.
"""
import json
import pathlib
from typing import Dict, List, Sequence

# The object-oriented API: no pyplot, so no global backend is chosen and
# importing this module never changes a notebook's matplotlib setup.
from matplotlib import figure
from matplotlib import ticker
import numpy as np

REQUIRED = ('backbone', 'method', 'domain', 'accuracy_mean', 'accuracy_ci95',
            'episodes', 'bwd_bytes', 'bwd_macs')


def mean_ci95(accuracies: Sequence[float]):
  """(mean, 1.96 * std / sqrt(n)) of per-episode accuracies (population std,
  as PMF/Meta-Dataset print it); CI is 0 for a single episode."""
  a = np.asarray(accuracies, np.float64)
  if a.size == 0:
    raise ValueError('no episode accuracies to summarise')
  return float(a.mean()), float(1.96 * a.std() / np.sqrt(a.size))


def paired_ci95(a: Sequence[float], b: Sequence[float]):
  """(mean of a - b, 1.96 * std / sqrt(n)) over paired per-episode
  accuracies: the same tasks, so the task-to-task spread cancels and gaps
  far inside the unpaired CIs can be resolved."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if d.size == 0:
    raise ValueError('no paired episode accuracies')
  return float(d.mean()), float(1.96 * d.std() / np.sqrt(d.size))


def _check(rows):
  for r in rows:
    missing = [k for k in REQUIRED if k not in r]
    if missing:
      raise ValueError(f'result row {r.get("method")!r} lacks {missing}')


def _fmt_bytes(b):
  if b >= 2**20:
    return f'{b / 2**20:.2f} MiB'
  return f'{b / 1024:.1f} KiB'


def avg_domains(domains: Sequence[str], in_domain: Sequence[str] = ()):
  """The domains an "Avg." column averages: the cross-domain targets with the
  fixed sampler (not the in-domain reference, not the '(MD)' rows)."""
  return [d for d in domains if d not in in_domain and not d.endswith(' (MD)')]


def markdown_tables(rows: List[Dict], in_domain: Sequence[str] = ()) -> str:
  """Accuracy table (methods x domains + Avg) and memory/compute table per
  backbone, in the layout of the paper's Table 1 and Table 2. Avg. is the
  mean over `avg_domains` (cross-domain targets only)."""
  _check(rows)
  out = []
  for bb in dict.fromkeys(r['backbone'] for r in rows):
    sub = [r for r in rows if r['backbone'] == bb]
    domains = list(dict.fromkeys(r['domain'] for r in sub))
    methods = list(dict.fromkeys(r['method'] for r in sub))
    avg_over = avg_domains(domains, in_domain)
    out.append(f'### {bb}: accuracy (%) mean ± 95% CI\n')
    out.append('| method | ' + ' | '.join(domains) + ' | Avg. |')
    out.append('|---' * (len(domains) + 2) + '|')
    for m in methods:
      cells, means = [], []
      for d in domains:
        r = next((r for r in sub if r['method'] == m and r['domain'] == d),
                 None)
        if r is None:
          cells.append('–')
        else:
          cells.append(f"{r['accuracy_mean']:.1f} ± {r['accuracy_ci95']:.1f}")
          if d in avg_over:
            means.append(r['accuracy_mean'])
      avg = (f'{np.mean(means):.1f}'
             if avg_over and len(means) == len(avg_over) else '–')
      out.append(f'| {m} | ' + ' | '.join(cells) + f' | {avg} |')
    if any('tinytrain_minus' in r for r in sub):
      out.append(f'\n### {bb}: TinyTrain minus method, paired over the same '
                 'tasks (pp, 95% CI)\n')
      out.append('| method | ' + ' | '.join(domains) + ' |')
      out.append('|---' * (len(domains) + 1) + '|')
      for m in methods:
        cells = []
        for d in domains:
          r = next((r for r in sub if r['method'] == m and r['domain'] == d),
                   None)
          got = r and r.get('tinytrain_minus')
          cells.append(f'{got[0]:+.1f} ± {got[1]:.1f}' if got else '–')
        if any(c != '–' for c in cells):
          out.append(f'| {m} | ' + ' | '.join(cells) + ' |')
    out.append(f'\n### {bb}: backward memory and compute\n')
    out.append(
        '| method | bwd memory (fp32, support batch) | bwd MACs / sample '
        '| episodes |')
    out.append('|---|---|---|---|')
    for m in methods:
      rs = [r for r in sub if r['method'] == m]
      mem = np.mean([r['bwd_bytes'] for r in rs])
      mac = np.mean([r['bwd_macs'] for r in rs])
      eps = sum(r['episodes'] for r in rs)
      out.append(f'| {m} | {_fmt_bytes(mem)} | {mac / 1e6:.2f}M | {eps} |')
    out.append('')
  return '\n'.join(out)


def plot_pareto(rows: List[Dict], path) -> None:
  """Accuracy (avg over domains) vs backward memory and vs MACs, per method."""
  _check(rows)
  backbones = list(dict.fromkeys(r['backbone'] for r in rows))
  fig = figure.Figure(figsize=(10, 3.8 * len(backbones)))
  axes = fig.subplots(len(backbones), 2, squeeze=False)
  for i, bb in enumerate(backbones):
    sub = [r for r in rows if r['backbone'] == bb]
    for m in dict.fromkeys(r['method'] for r in sub):
      rs = [r for r in sub if r['method'] == m]
      acc = np.mean([r['accuracy_mean'] for r in rs])
      ci = np.sqrt(np.mean([r['accuracy_ci95']**2 for r in rs]))
      mem = np.mean([r['bwd_bytes'] for r in rs])
      mac = np.mean([r['bwd_macs'] for r in rs])
      for ax, x in ((axes[i, 0], mem), (axes[i, 1], mac)):
        if x <= 0:  # no backward pass (e.g. None): a reference line
          ax.axhline(acc, ls='--', color='grey', lw=1, label=f'{m} (no bwd)')
          continue
        ax.errorbar([x], [acc], yerr=[ci], fmt='o', capsize=3, label=m)
        ax.annotate(m, (x, acc), textcoords='offset points', xytext=(4, 4),
                    fontsize=8)
    for j, label in enumerate(('backward memory (bytes, fp32, support batch)',
                               'backward MACs per sample')):
      ax = axes[i, j]
      ax.set_xscale('log')
      ax.xaxis.set_minor_formatter(ticker.NullFormatter())
      ax.set_xlabel(label)
      ax.set_ylabel('accuracy (%)')
      ax.set_title(f'{bb}')
      ax.grid(alpha=0.3)
    axes[i, 0].legend(fontsize=7, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_sweep(points: List[Dict], path, x_key: str = 'budget_bytes') -> None:
  """Budget sweep curves: accuracy vs a budget, one line per variant."""
  fig = figure.Figure(figsize=(6, 4))
  ax = fig.subplots()
  for v in dict.fromkeys(p['variant'] for p in points):
    ps = sorted((p for p in points if p['variant'] == v),
                key=lambda p: p[x_key])
    ax.errorbar([p[x_key] for p in ps], [p['accuracy_mean'] for p in ps],
                yerr=[p['accuracy_ci95'] for p in ps], marker='o', capsize=3,
                label=v)
  ax.set_xscale('log')
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel(x_key)
  ax.set_ylabel('accuracy (%)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_meta_validation(curves: Dict[str, List[Dict]], path) -> None:
  """None accuracy on each val domain over meta-training steps, per backbone.

  Args:
    curves: backbone -> rows of its val.jsonl ({'step', 'none_accuracy':
      {domain: %}}); step 0 is the pretrained start (dashed line).
    path: PNG file.
  """
  fig = figure.Figure(figsize=(5 * len(curves), 3.6))
  axes = fig.subplots(1, len(curves), squeeze=False)
  for ax, (bb, rows) in zip(axes[0], curves.items()):
    rows = sorted(rows, key=lambda r: r['step'])
    for dom in rows[0]['none_accuracy'] if rows else ():
      line, = ax.plot([r['step'] for r in rows],
                      [r['none_accuracy'][dom] for r in rows], marker='o',
                      label=f'{dom} (valid)')
      ax.axhline(rows[0]['none_accuracy'][dom], ls='--', lw=1,
                 color=line.get_color())
    ax.set_title(f'{bb}: None accuracy during meta-training')
    ax.set_xlabel('meta-training step (0 = pretrained)')
    ax.set_ylabel('accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def write_report(workdir, rows: List[Dict], config: Dict = None,
                 in_domain: Sequence[str] = (),
                 timings: Dict = None, timing_detail: Dict = None) -> Dict:
  """Writes results.json, results.md, pareto.png into workdir; returns paths.

  `in_domain`: domains left out of the Avg. column (in-domain references).
  `timings`: wall seconds per phase of this invocation (results.json's
  'timings_s'; a resumed run times only what it did).
  `timing_detail`: per phase and variant {'wall', 'compile' (s of XLA
  compiles, persistent-cache loads included), 'compiles'} (results.json's
  'timing_detail_s').
  """
  _check(rows)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  paths = {
      k: workdir / v
      for k, v in (('json', 'results.json'), ('md', 'results.md'),
                   ('pareto', 'pareto.png'))
  }
  tmp = paths['json'].with_suffix('.json.tmp')
  tmp.write_text(
      json.dumps({
          'config': config or {},
          'timings_s': timings or {},
          'timing_detail_s': timing_detail or {},
          'results': rows
      }, indent=1))
  tmp.replace(paths['json'])
  paths['md'].write_text('# TinyTrain evaluation\n\n' +
                         markdown_tables(rows, in_domain) +
                         '\n![Pareto](pareto.png)\n')
  plot_pareto(rows, paths['pareto'])
  return paths
