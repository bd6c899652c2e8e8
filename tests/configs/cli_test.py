"""The launcher edge's persistent compilation cache."""
import pathlib

import jax
import pytest

from tinytrain_jax.configs import cli


@pytest.fixture(autouse=True)
def _restore_jax_config():
  before = jax.config.jax_compilation_cache_dir
  yield
  jax.config.update('jax_compilation_cache_dir', before)


def test_default_is_the_derived_cache(tmp_path, monkeypatch):
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.setenv('TINYTRAIN_CACHE', str(tmp_path))
  jax.config.update('jax_compilation_cache_dir', None)
  path = cli.enable_compilation_cache()
  assert path == tmp_path / 'xla'
  assert jax.config.jax_compilation_cache_dir == str(path)


def test_a_users_folder_is_kept(monkeypatch):
  jax.config.update('jax_compilation_cache_dir', None)
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', '/x/y')
  assert cli.enable_compilation_cache() == pathlib.Path('/x/y')
  assert jax.config.jax_compilation_cache_dir is None
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR')
  jax.config.update('jax_compilation_cache_dir', '/a/b')
  assert cli.enable_compilation_cache() == pathlib.Path('/a/b')
