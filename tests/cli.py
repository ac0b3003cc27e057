"""Runs a groupvit_jax command-line entry point the way a user would, in a subprocess."""

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _environment(**overrides: str) -> dict:
  """This environment, with the repository first on PYTHONPATH, and `overrides`."""
  paths = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
  return dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT] + paths), **overrides)


def run(module: str, *args: str, **env_overrides: str) -> subprocess.CompletedProcess:
  """`python -m module args...` from the repository root; returns the finished process."""
  env = _environment(**env_overrides)
  return subprocess.run(
    [sys.executable, '-m', module, *map(str, args)],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )


def start(module: str, *args: str, log_path: str, **env_overrides: str) -> subprocess.Popen:
  """`python -m module args...` started in the background, its output going to `log_path`."""
  env = _environment(**env_overrides)
  log = open(log_path, 'w')
  return subprocess.Popen(
    [sys.executable, '-m', module, *map(str, args)],
    cwd=REPO_ROOT,
    env=env,
    stdout=log,
    stderr=subprocess.STDOUT,
    text=True,
  )
