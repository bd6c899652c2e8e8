"""Skips @pytest.mark.slow tests of tests/train unless TINYTRAIN_SLOW=1."""
import os
import pathlib

import pytest

_HERE = pathlib.Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
  del config
  if os.environ.get('TINYTRAIN_SLOW') == '1':
    return
  skip = pytest.mark.skip(reason='slow; run with TINYTRAIN_SLOW=1')
  for item in items:
    if 'slow' in item.keywords and _HERE in pathlib.Path(
        str(item.fspath)).resolve().parents:
      item.add_marker(skip)
