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
