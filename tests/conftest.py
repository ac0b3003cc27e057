"""Gives jax 8 virtual CPU devices (set before jax is imported) for the sharded loss tests,
and fixtures that several test files share."""

import os

import pytest

_DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'
if _DEVICE_COUNT_FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {_DEVICE_COUNT_FLAG}=8'.strip()

# The `gcs` fixture: a local Cloud Storage emulator (tests/gcs_emulator.py).
pytest_plugins = ['tests.gcs_emulator']


@pytest.fixture(scope='session')
def compile_cache(tmp_path_factory) -> dict:
  """Environment for training subprocesses that share one XLA persistent cache, so that a
  program (e.g. the 2-process step) compiles once per test session."""
  return dict(
    JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('xla_cache')),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )
