"""Runs a groupvit_jax command-line entry point the way a user would, in a subprocess."""

import json
import os
import subprocess
import sys
import time

from groupvit_jax.training import train_checkpoints
from groupvit_jax.training.metric_writers import METRICS_FILE

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


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
  """`python -c code args...` from the repository root; returns the finished process."""
  return subprocess.run(
    [sys.executable, '-c', code, *map(str, args)],
    cwd=REPO_ROOT,
    env=_environment(),
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


# What a training run has written so far, for tests that watch and interrupt runs.


def read_metrics(workdir):
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


def train_rows(workdir):
  return {row['step']: row for row in read_metrics(workdir) if 'loss' in row}


def wait_for(condition, process, timeout=300):
  start = time.time()
  while not condition():
    assert process.poll() is None, 'the run ended before it was interrupted'
    assert time.time() - start < timeout, 'timed out waiting for the run'
    time.sleep(0.2)


def checkpoint_steps(workdir):
  directory = os.path.join(workdir, train_checkpoints.CHECKPOINT_DIR)
  return (
    sorted(int(d) for d in os.listdir(directory) if d.isdigit()) if os.path.isdir(directory) else []
  )


def worker_processes(pid: int) -> list[int]:
  """The multiprocessing workers that process `pid` spawned (grain's decoding workers), read
  from /proc: children whose command line runs multiprocessing's spawn_main."""
  workers = []
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat') as f:
        parent = int(f.read().rsplit(')', 1)[1].split()[1])
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        command = f.read()
    except OSError:  # the process ended meanwhile
      continue
    if parent == pid and b'spawn_main' in command:
      workers.append(int(entry))
  return workers
