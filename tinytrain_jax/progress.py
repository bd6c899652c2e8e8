"""Progress of long jobs: a tqdm bar on a terminal, log lines otherwise.

One helper for every long loop (meta-training steps, evaluation episodes), so
a job on a TTY shows a bar with ETA and a job under a scheduler or CI writes
a line to stderr every `log_every` updates (and at the end) with the elapsed
time, rate, ETA and the caller's running numbers.

  bar = Progress(total=400, desc='meta_train', unit='ep', log_every=50)
  for step in ...:
    bar.update(postfix=f'loss {loss:.3f}')
  bar.close()
"""
import sys
import time
from typing import Optional

import tqdm


class Progress:
  """Counts `total` updates; see the module docstring.

  Args:
    total: number of updates the job makes.
    desc: label of the bar and of each log line.
    initial: updates already done (a resumed job).
    unit: what one update is ('ep', 'task', ...).
    log_every: log-line period in updates (default: total // 10).
    enabled: False = silent.
  """

  def __init__(self, total: int, desc: str, initial: int = 0, unit: str = 'it',
               log_every: Optional[int] = None, enabled: bool = True):
    self.total, self.desc, self.unit = int(total), desc, unit
    self.done = self.start = int(initial)
    self.log_every = max(1, int(log_every or self.total // 10 or 1))
    self.enabled, self.t0, self.bar = enabled, time.time(), None
    if enabled and sys.stderr.isatty():
      self.bar = tqdm.tqdm(total=self.total, initial=self.done, desc=desc,
                           unit=unit, dynamic_ncols=True)

  def update(self, postfix: str = '') -> None:
    """One update; `postfix` is shown after the bar / at the line's end."""
    self.done += 1
    if self.bar is not None:
      self.bar.update(1)
      self.bar.set_postfix_str(postfix)
    elif self.enabled and (self.done % self.log_every == 0 or
                           self.done == self.total):
      el = time.time() - self.t0
      rate = (self.done - self.start) / max(el, 1e-9)
      eta = (self.total - self.done) / max(rate, 1e-9)
      print(
          f'{self.desc} {self.done}/{self.total} [{el:.0f}s, {rate:.2f} '
          f'{self.unit}/s, eta {eta:.0f}s] {postfix}'.rstrip(), file=sys.stderr,
          flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
