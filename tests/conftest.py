"""Test defaults: CPU JAX and the asset cache at ../shared when present."""
import os
import pathlib
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_SHARED = pathlib.Path(__file__).resolve().parents[1].parent / 'shared'
if not os.environ.get('TINYTRAIN_ASSETS') and (_SHARED / 'weights').is_dir():
  os.environ['TINYTRAIN_ASSETS'] = str(_SHARED)
# Derived files (decoded datasets, meta-trained backbones) of a test run go to
# a fresh folder, never the user's cache, so no run reuses another's weights.
os.environ.setdefault('TINYTRAIN_CACHE',
                      tempfile.mkdtemp(prefix='tinytrain_test_cache_'))
# One persistent XLA compilation cache for the whole suite: both xdist workers
# and every launcher subprocess compile the same 32 px programs many times, so
# they share compiled executables (keyed by HLO and jax version, so a stale
# entry is never used). Set before any test module imports jax.
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR',
    str(
        pathlib.Path(__file__).resolve().parents[1] / '.pytest_cache' /
        'xla_compilation_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
# Tests run tiny shapes, where LLVM's optimisation passes cost far more than
# they save (a 32 px backward compiles in 7 s instead of 12, runs as fast).
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0').strip()


def pytest_collection_modifyitems(config, items):
  """Skips @pytest.mark.slow tests unless TINYTRAIN_SLOW=1."""
  del config
  if os.environ.get('TINYTRAIN_SLOW') == '1':
    return
  import pytest  # pylint: disable=g-import-not-at-top
  skip = pytest.mark.skip(reason='slow; run with TINYTRAIN_SLOW=1')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)
