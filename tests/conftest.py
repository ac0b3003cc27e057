"""Gives jax 8 virtual CPU devices (set before jax is imported) for the sharded loss tests."""

import os

_DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'
if _DEVICE_COUNT_FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {_DEVICE_COUNT_FLAG}=8'.strip()
