"""Test defaults: CPU JAX and the asset cache at ../shared when present."""
import os
import pathlib

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_SHARED = pathlib.Path(__file__).resolve().parents[1].parent / 'shared'
if not os.environ.get('TINYTRAIN_ASSETS') and (_SHARED / 'weights').is_dir():
  os.environ['TINYTRAIN_ASSETS'] = str(_SHARED)
