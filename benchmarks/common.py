"""Helpers shared by the benchmarks: timing and results files."""
import json
import pathlib
import statistics
import time

import jax

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / 'results'


def median_seconds(fn, *args, repeats: int = 5) -> float:
  """Median wall time of fn(*args) (blocked until ready) after one warm-up."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def write_results(name: str, payload) -> pathlib.Path:
  """Writes benchmarks/results/<name>.json (atomic) and returns the path."""
  RESULTS_DIR.mkdir(parents=True, exist_ok=True)
  path = RESULTS_DIR / f'{name}.json'
  tmp = path.with_suffix('.json.tmp')
  tmp.write_text(json.dumps(payload, indent=1))
  tmp.replace(path)
  return path


def device_info() -> dict:
  d = jax.devices()[0]
  return {
      'platform': d.platform,
      'device': d.device_kind,
      'jax': jax.__version__,
      'num_devices': jax.device_count()
  }
