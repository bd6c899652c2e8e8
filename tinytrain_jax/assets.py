"""Asset cache: where pretrained weights and datasets are found on disk.

Like torchvision's or TFDS's caches, third-party files are never shipped with the
project. They live under one root directory:

  $TINYTRAIN_ASSETS            (default: ~/.cache/tinytrain_jax)
    weights/<model>.npz|.json  ImageNet-pretrained backbones (see models/pretrained.py)
    data/<dataset>.npz|.json   embedded datasets (see data/embedded.py)
    data/mini-imagenet/        mini-ImageNet JPEGs + split CSVs (data/minimagenet.py)

Derived files (decoded datasets, meta-trained backbones) go to a separate,
writable cache, because the asset folder may be read-only:

  $TINYTRAIN_CACHE             (default: ~/.cache/tinytrain_jax/derived)

The README commands and `.ci/run` point TINYTRAIN_ASSETS at the repository's sibling
`../shared` folder when it exists, which has exactly this layout.
"""
import os
import pathlib

ENV_VAR = 'TINYTRAIN_ASSETS'
DEFAULT_ROOT = pathlib.Path('~/.cache/tinytrain_jax')
CACHE_ENV_VAR = 'TINYTRAIN_CACHE'
DEFAULT_CACHE = pathlib.Path('~/.cache/tinytrain_jax/derived')


def assets_root() -> pathlib.Path:
  """Returns the asset cache root ($TINYTRAIN_ASSETS or ~/.cache/tinytrain_jax)."""
  return pathlib.Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT).expanduser()


def derived_cache_dir() -> pathlib.Path:
  """Writable cache of derived files ($TINYTRAIN_CACHE or the default)."""
  return pathlib.Path(os.environ.get(CACHE_ENV_VAR) or
                      DEFAULT_CACHE).expanduser()


def asset_path(kind: str, filename: str) -> pathlib.Path:
  """Returns `<root>/<kind>/<filename>`; kind is 'weights' or 'data'."""
  if kind not in ('weights', 'data'):
    raise ValueError(f"asset kind must be 'weights' or 'data', got {kind!r}")
  return assets_root() / kind / filename


def missing_asset_message(path: pathlib.Path, what: str) -> str:
  """One-line explanation of how to fill the cache for a missing asset."""
  return (f'{what} not found at {path}; set ${ENV_VAR} to a folder holding '
          f'{path.parent.name}/{path.name} (e.g. export {ENV_VAR}=../shared) '
          'or run once on a machine with internet access to fill the cache')
