"""Runs a groupvit_jax command-line entry point the way a user would, in a subprocess."""

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module: str, *args: str) -> subprocess.CompletedProcess:
  """`python -m module args...` from the repository root; returns the finished process."""
  env = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(
      [REPO_ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    ),
  )
  return subprocess.run(
    [sys.executable, '-m', module, *map(str, args)],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    check=False,
  )
