"""launch/: tpu_pod.sh's gcloud commands, printed with --dry-run and run against a recording
gcloud stub, and what its train command does on a (stub) worker; slurm.sbatch run by bash with
SLURM's variables and a stub srun that starts the tasks on this machine: jax's SLURM detection,
SIGTERM and requeue, and a 2-process training run. No network."""

import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import time

import pytest

import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_POD = os.path.join(REPO, 'launch', 'tpu_pod.sh')
SBATCH = os.path.join(REPO, 'launch', 'slurm.sbatch')
COMMANDS = ('create', 'setup', 'train', 'stop', 'status', 'logs', 'delete')

# Trainer flags with what a shell would expand or split: braces, parentheses and spaces, both
# kinds of quotes, $, backquotes and ;.
OVERRIDES = [
  '--config.data.shards=gs://b/cc12m/{00000..01242}.tar',
  '--config.profile_steps=(10, 15)',
  '--config.name=it\'s a "test"',
  '--config.note=$HOME `id`; echo *',
]


def _write_script(path, text: str) -> str:
  with open(path, 'w') as f:
    f.write(text)
  os.chmod(path, 0o755)
  return str(path)


# --- tpu_pod.sh ---------------------------------------------------------------------------

# The environment variables tpu_pod.sh reads, kept out of its runs unless a test sets them.
TPU_POD_VARIABLES = (
  'NAME',
  'ZONE',
  'PROJECT',
  'ACCELERATOR',
  'RUNTIME_VERSION',
  'SPOT',
  'REPO_URL',
  'REF',
  'REMOTE_DIR',
  'PYTHON',
  'CONFIG',
  'WORKDIR',
  'WORKER',
  'LOG_LINES',
  'DRY_RUN',
)
LOCATION = {'ZONE': 'us-central2-b', 'PROJECT': 'my-project'}
LOCATION_FLAGS = ['--zone=us-central2-b', '--project=my-project']

# Records each call's arguments as one JSON list a line; keeps a copy of the archive scp sends.
GCLOUD_STUB = """#!{python}
import json, os, shutil, sys
with open(os.environ['GCLOUD_STUB_LOG'], 'a') as f:
  f.write(json.dumps(sys.argv[1:]) + '\\n')
if sys.argv[1:5] == ['compute', 'tpus', 'tpu-vm', 'scp']:
  shutil.copy(sys.argv[5], os.environ['GCLOUD_STUB_LOG'] + '.tar.gz')
"""


@pytest.fixture
def gcloud(tmp_path):
  """A recording `gcloud` first on PATH; `gcloud.calls()` lists each call's argv."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  _write_script(bin_dir / 'gcloud', GCLOUD_STUB.format(python=sys.executable))

  class Stub:
    log = tmp_path / 'gcloud_calls.jsonl'
    archive = tmp_path / 'gcloud_calls.jsonl.tar.gz'
    path = f'{bin_dir}{os.pathsep}{os.environ["PATH"]}'

    def calls(self):
      if not self.log.exists():
        return []
      return [['gcloud', *json.loads(line)] for line in self.log.read_text().splitlines()]

  return Stub()


def tpu_pod(gcloud, *args: str, **env: str) -> subprocess.CompletedProcess:
  environment = {k: v for k, v in os.environ.items() if k not in TPU_POD_VARIABLES}
  environment.update(PATH=gcloud.path, GCLOUD_STUB_LOG=str(gcloud.log), **env)
  return subprocess.run(
    [TPU_POD, *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
  )


INSTALL = (
  'cd groupvit_jax && if ! command -v python3.11 >/dev/null'
  " || ! python3.11 -c 'import ensurepip' 2>/dev/null;"
  ' then sudo add-apt-repository -y ppa:deadsnakes/ppa'
  ' && sudo apt-get -o DPkg::Lock::Timeout=600 install -y python3.11 python3.11-venv; fi'
  ' && if [ ! -x .venv/bin/python ]; then python3.11 -m venv .venv; fi'
  ' && .venv/bin/pip install --upgrade pip'
  " && .venv/bin/pip install -r requirements.txt 'jax[tpu]'"
  """ && .venv/bin/python -c 'import jax; print("jax", jax.__version__)'"""
)
RUNNING = '[ -f logs/train.pid ] && kill -0 "$(cat logs/train.pid)" 2>/dev/null'


def train_command(trainer: list[str]) -> str:
  """The shell command `train` runs on every worker, for the trainer's argv."""
  return (
    f'set -e; cd groupvit_jax; mkdir -p logs; if {RUNNING};'
    ' then echo "$(hostname): already training (pid $(cat logs/train.pid)),'
    ' stop it first with tpu_pod.sh stop" >&2; exit 1; fi'
    '; echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) tpu_pod.sh train" >> logs/train.log'
    f'; nohup {shlex.join(trainer)} >> logs/train.log 2>&1 < /dev/null &'
    ' echo $! > logs/train.pid'
    '; echo "$(hostname): training, pid $(cat logs/train.pid), log groupvit_jax/logs/train.log"'
  )


STOP_COMMAND = (
  f'cd groupvit_jax && if {RUNNING}; then kill -TERM "$(cat logs/train.pid)"'
  ' && echo "$(hostname): sent SIGTERM to pid $(cat logs/train.pid)";'
  ' else echo "$(hostname): not training"; fi'
)
SSH_ALL = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'groupvit', '--worker=all']
QUEUED = ['gcloud', 'compute', 'tpus', 'queued-resources']
TRAINER = ['.venv/bin/python', '-m', 'groupvit_jax.main', '--distributed']

# name: (arguments, environment, the gcloud calls expected)
CASES = {
  'create_spot': (
    ['create', '--accelerator=v4-128', '--spot'],
    LOCATION,
    [
      [
        *QUEUED,
        'create',
        'groupvit',
        '--node-id=groupvit',
        '--accelerator-type=v4-128',
        '--runtime-version=tpu-ubuntu2204-base',
        '--spot',
        *LOCATION_FLAGS,
      ]
    ],
  ),
  'create_on_demand': (
    ['create', '--name', 'run2', '--accelerator', 'v5litepod-64', '--zone', 'us-west4-a'],
    {},
    [
      [
        *QUEUED,
        'create',
        'run2',
        '--node-id=run2',
        '--accelerator-type=v5litepod-64',
        '--runtime-version=v2-alpha-tpuv5-lite',
        '--zone=us-west4-a',
      ]
    ],
  ),
  'create_from_the_environment': (
    ['create', '--runtime-version=v2-alpha-tpuv6e-custom'],
    {**LOCATION, 'NAME': 'big', 'ACCELERATOR': 'v6e-256', 'SPOT': '1'},
    [
      [
        *QUEUED,
        'create',
        'big',
        '--node-id=big',
        '--accelerator-type=v6e-256',
        '--runtime-version=v2-alpha-tpuv6e-custom',
        '--spot',
        *LOCATION_FLAGS,
      ]
    ],
  ),
  'setup_from_git': (
    ['setup', '--repo-url=https://github.com/me/groupvit jax.git', '--ref=v1.0'],
    LOCATION,
    [
      [
        *SSH_ALL,
        *LOCATION_FLAGS,
        "--command=if [ ! -d groupvit_jax/.git ]; then git clone --no-checkout 'https://github"
        ".com/me/groupvit jax.git' groupvit_jax; fi && git -C groupvit_jax fetch origin v1.0"
        ' && git -C groupvit_jax checkout --force --detach FETCH_HEAD && ' + INSTALL,
      ]
    ],
  ),
  'train': (
    ['train', '--workdir=gs://b/run1', '--config.batch_size=4096', '--', *OVERRIDES],
    LOCATION,
    [
      [
        *SSH_ALL,
        *LOCATION_FLAGS,
        '--command='
        + train_command(
          [
            *TRAINER,
            '--config=configs/cc_yfcc_2stage.py',
            '--workdir=gs://b/run1',
            '--config.batch_size=4096',
            *OVERRIDES,
          ]
        ),
      ]
    ],
  ),
  'train_with_environment': (
    ['train', '--config', 'configs/cc_1stage.py', '--env', 'LIBTPU_INIT_ARGS=--a=1 --b=2'],
    {**LOCATION, 'WORKDIR': 'gs://b/run 2'},
    [
      [
        *SSH_ALL,
        *LOCATION_FLAGS,
        '--command='
        + train_command(
          [
            'env',
            'LIBTPU_INIT_ARGS=--a=1 --b=2',
            *TRAINER,
            '--config=configs/cc_1stage.py',
            '--workdir=gs://b/run 2',
          ]
        ),
      ]
    ],
  ),
  'stop': (['stop'], LOCATION, [[*SSH_ALL, *LOCATION_FLAGS, '--command=' + STOP_COMMAND]]),
  'status': (['status'], LOCATION, [[*QUEUED, 'describe', 'groupvit', *LOCATION_FLAGS]]),
  'logs': (
    ['logs', '--worker=3', '--lines', '50', '--follow'],
    LOCATION,
    [
      [
        'gcloud',
        'compute',
        'tpus',
        'tpu-vm',
        'ssh',
        'groupvit',
        '--worker=3',
        *LOCATION_FLAGS,
        '--command=tail -n 50 -F groupvit_jax/logs/train.log',
      ]
    ],
  ),
  'delete': (['delete'], LOCATION, [[*QUEUED, 'delete', 'groupvit', '--force', *LOCATION_FLAGS]]),
  'delete_without_asking': (
    ['delete', '--yes'],
    LOCATION,
    [[*QUEUED, 'delete', 'groupvit', '--force', '--quiet', *LOCATION_FLAGS]],
  ),
}


@pytest.mark.parametrize('command', [None, *COMMANDS])
def test_help_for_the_script_and_each_command(gcloud, command):
  args = ['--help'] if command is None else [command, '--help']
  result = tpu_pod(gcloud, *args)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f'Usage: tpu_pod.sh {command or "COMMAND"}')
  assert not gcloud.calls()


def test_the_script_help_documents_options_and_preemption(gcloud):
  text = tpu_pod(gcloud, '--help').stdout
  for word in ('NAME', 'ZONE', 'PROJECT', '--dry-run', 'SUSPENDED', 'resumes', *COMMANDS):
    assert word in text
  text = tpu_pod(gcloud, 'train', '--help').stdout
  for word in ('WORKDIR', 'CONFIG', 'gs://', 'resumes', 'preemption', '--config.profile_steps'):
    assert word in text


@pytest.mark.parametrize(
  'args, message',
  [
    ([], 'Usage'),
    (['launch'], "unknown command 'launch'"),
    (['status', '--frobnicate'], "unknown option '--frobnicate'"),
    (['status', 'extra'], "unexpected argument 'extra'"),
    (['status', '--config.batch_size=8'], 'for train only'),
    (['create'], 'needs --accelerator'),
    (['create', '--accelerator=v9-8'], 'pass --runtime-version'),
    (['setup', '--remote-dir=../x'], '--remote-dir'),
    (['logs', '--worker=all'], '--worker'),
  ],
)
def test_usage_errors(gcloud, args, message):
  for dry_run in ([], ['--dry-run']):
    result = tpu_pod(gcloud, *dry_run, *args)
    assert result.returncode == 2
    assert message in result.stderr
  assert not gcloud.calls()


@pytest.mark.parametrize('case', CASES)
def test_dry_run_prints_each_command_quoted_one_per_line(gcloud, case):
  args, env, expected = CASES[case]
  result = tpu_pod(gcloud, '--dry-run', *args, **env)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [shlex.join(call) for call in expected]
  assert [shlex.split(line) for line in result.stdout.splitlines()] == expected
  assert not gcloud.calls()


@pytest.mark.parametrize('case', CASES)
def test_gcloud_is_called_with_the_expected_arguments(gcloud, case):
  args, env, expected = CASES[case]
  result = tpu_pod(gcloud, *args, **env)
  assert result.returncode == 0, result.stderr
  assert gcloud.calls() == expected


def test_setup_copies_the_working_tree_to_every_worker(gcloud, tmp_path):
  archive = f'{tmp_path}/groupvit_jax-groupvit.tar.gz'
  scp = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', archive, 'groupvit:groupvit_jax-src.tar.gz']
  unpack = (
    'mkdir -p groupvit_jax && find groupvit_jax -mindepth 1 -maxdepth 1 ! -name .venv'
    ' ! -name logs -exec rm -rf {} + && tar -xzf groupvit_jax-src.tar.gz -C groupvit_jax'
    ' && rm groupvit_jax-src.tar.gz'
  )
  expected = [
    [*scp, '--worker=all', *LOCATION_FLAGS],
    [*SSH_ALL, *LOCATION_FLAGS, f'--command={unpack} && {INSTALL}'],
  ]
  pack = (
    f'git -C {REPO} ls-files -z --cached --others --exclude-standard'
    f' | tar -czf {archive} -C {REPO} --null -T -'
  )
  result = tpu_pod(gcloud, 'setup', '--dry-run', TMPDIR=str(tmp_path), **LOCATION)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [pack, *map(shlex.join, expected)]
  assert not gcloud.calls() and not os.path.exists(archive)

  result = tpu_pod(gcloud, 'setup', TMPDIR=str(tmp_path), **LOCATION)
  assert result.returncode == 0, result.stderr
  assert gcloud.calls() == expected
  assert not os.path.exists(archive)  # removed once sent
  with tarfile.open(gcloud.archive) as tar:
    names = set(tar.getnames())
  for name in ('groupvit_jax/main.py', 'requirements.txt', 'configs/cc_yfcc_2stage.py'):
    assert name in names
  assert not [n for n in names if n.startswith(('.venv', '.git/')) or '__pycache__' in n]


@pytest.mark.parametrize('workdir', ['/tmp/run1', 'run1', 'gs:/b/run1', 'GS://b/run1', 'gs://'])
def test_train_refuses_a_workdir_off_cloud_storage(gcloud, workdir):
  for dry_run in ([], ['--dry-run']):
    result = tpu_pod(gcloud, 'train', f'--workdir={workdir}', *dry_run, **LOCATION)
    assert result.returncode == 2
    assert 'must be a gs:// path' in result.stderr and 'preempted' in result.stderr
  result = tpu_pod(gcloud, 'train', **LOCATION)
  assert result.returncode == 2 and 'train needs --workdir=gs://' in result.stderr
  assert not gcloud.calls()


# The trainer on a stub worker: records its argv and waits for SIGTERM.
PYTHON_STUB = """#!{python}
import json, os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
with open('logs/python.json.tmp', 'w') as f:
  json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd()}}, f)
os.replace('logs/python.json.tmp', 'logs/python.json')
received = signal.sigtimedwait([signal.SIGTERM], 60)
with open('logs/python_sigterm', 'w') as f:
  f.write(str(received is not None))
"""


def _wait_for_file(path, timeout=30):
  start = time.time()
  while not os.path.exists(path):
    assert time.time() - start < timeout, f'{path} did not appear'
    time.sleep(0.05)


def test_the_train_command_starts_the_trainer_with_its_flags_intact_on_a_worker(gcloud, tmp_path):
  args, env, _ = CASES['train']
  assert tpu_pod(gcloud, *args, **env).returncode == 0
  assert tpu_pod(gcloud, 'stop', **env).returncode == 0
  (train, stop) = [call[-1].removeprefix('--command=') for call in gcloud.calls()]
  home = tmp_path / 'worker'
  (home / 'groupvit_jax' / '.venv' / 'bin').mkdir(parents=True)
  _write_script(
    home / 'groupvit_jax' / '.venv' / 'bin' / 'python', PYTHON_STUB.format(python=sys.executable)
  )
  logs = home / 'groupvit_jax' / 'logs'

  def on_the_worker(command):  # as `gcloud ... ssh --command` runs it: the login shell's -c
    return subprocess.run(
      ['bash', '-c', command],
      cwd=home,
      env=dict(os.environ, HOME=str(home)),
      capture_output=True,
      text=True,
      timeout=30,
    )

  try:
    result = on_the_worker(train)
    assert result.returncode == 0, result.stderr
    assert 'training, pid' in result.stdout
    _wait_for_file(logs / 'python.json')
    recorded = json.loads((logs / 'python.json').read_text())
    assert recorded['argv'] == [
      '-m',
      'groupvit_jax.main',
      '--distributed',
      '--config=configs/cc_yfcc_2stage.py',
      '--workdir=gs://b/run1',
      '--config.batch_size=4096',
      *OVERRIDES,
    ]
    assert recorded['cwd'] == str(home / 'groupvit_jax')
    assert (logs / 'train.log').read_text().startswith('=== ')

    result = on_the_worker(train)  # a second run while the first trains
    assert result.returncode == 1 and 'already training' in result.stderr

    result = on_the_worker(stop)
    assert result.returncode == 0 and 'sent SIGTERM' in result.stdout, result.stderr
    _wait_for_file(logs / 'python_sigterm')
    assert (logs / 'python_sigterm').read_text() == 'True'
  finally:
    if (logs / 'train.pid').exists():
      try:
        os.kill(int((logs / 'train.pid').read_text()), signal.SIGKILL)
      except ProcessLookupError:
        pass


# --- slurm.sbatch ---------------------------------------------------------------------------

# Starts SLURM_NTASKS tasks of its command on this machine, each with the variables srun gives
# a task on one node, forwards SIGTERM to them and exits with the first failure's status.
SRUN_STUB = """#!{python}
import json, os, signal, subprocess, sys
args = sys.argv[1:]
options = []
while args and args[0].startswith('-'):
  options.append(args.pop(0))
with open(os.environ['LAUNCH_SRUN_LOG'], 'a') as f:
  f.write(json.dumps({{'options': options, 'command': args}}) + '\\n')
count = int(os.environ['SLURM_NTASKS'])
tasks = []
for rank in range(count):
  env = dict(
    os.environ,
    SLURM_PROCID=str(rank),
    SLURM_LOCALID=str(rank),
    SLURM_NODEID='0',
    SLURM_STEP_ID='0',
    SLURM_STEP_NODELIST=os.environ['SLURM_JOB_NODELIST'],
    SLURM_STEP_NUM_NODES='1',
    SLURM_STEP_NUM_TASKS=str(count),
  )
  tasks.append(subprocess.Popen(args, env=env))
signal.signal(signal.SIGTERM, lambda *_: [t.send_signal(signal.SIGTERM) for t in tasks])
codes = [task.wait() for task in tasks]
codes = [128 - code if code < 0 else code for code in codes]
sys.exit(next((code for code in codes if code), 0))
"""
SCONTROL_STUB = """#!{python}
import json, os, sys
with open(os.environ['LAUNCH_SCONTROL_LOG'], 'a') as f:
  f.write(json.dumps(sys.argv[1:]) + '\\n')
"""
SBATCH_VARIABLES = (
  'WORKDIR',
  'CONFIG',
  'PYTHON',
  'MODULE',
  'REPO_DIR',
  'REQUEUE',
  'JAX_COORDINATOR_PORT',
  'JAX_LOCAL_DEVICE_IDS',
  'XLA_FLAGS',
)


def _job_id_with_a_free_port() -> int:
  """A job id for which jax's coordinator port is free: jax/_src/clusters/slurm_cluster.py
  takes port 61440 + SLURM_JOB_ID % 4096."""
  for _ in range(200):
    port = random.randrange(61440, 65536)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
      try:
        s.bind(('', port))
      except OSError:
        continue
    return 4096 * 1234 + port - 61440
  raise AssertionError('no free port in 61440-65535')


@pytest.fixture
def slurm(tmp_path):
  """The environment of a 2-task job on this machine, with stub srun and scontrol first on
  PATH; `slurm.env(**extra)`, `slurm.srun_calls()`, `slurm.scontrol_calls()`."""
  bin_dir = tmp_path / 'slurm_bin'
  bin_dir.mkdir()
  _write_script(bin_dir / 'srun', SRUN_STUB.format(python=sys.executable))
  _write_script(bin_dir / 'scontrol', SCONTROL_STUB.format(python=sys.executable))
  probe_out = tmp_path / 'probe'
  probe_out.mkdir()

  class Job:
    job_id = _job_id_with_a_free_port()
    srun_log = tmp_path / 'srun.jsonl'
    scontrol_log = tmp_path / 'scontrol.jsonl'
    out = probe_out

    def env(self, **extra: str) -> dict:
      env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(('SLURM_', 'SBATCH_', 'SRUN_', 'OMPI_', 'PMI_', 'PMIX_'))
        and k not in SBATCH_VARIABLES
      }
      env.update(
        PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
        PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tests')]),
        PYTHON=sys.executable,
        SLURM_JOB_ID=str(self.job_id),
        SLURM_JOB_NAME='groupvit',
        SLURM_NTASKS='2',
        SLURM_NNODES='1',
        SLURM_JOB_NUM_NODES='1',
        SLURM_NODELIST='localhost',
        SLURM_JOB_NODELIST='localhost',
        SLURM_TASKS_PER_NODE='2',
        SLURM_CPUS_PER_TASK='1',
        SLURM_SUBMIT_DIR=REPO,
        JAX_PLATFORMS='cpu',
        XLA_FLAGS='--xla_force_host_platform_device_count=4',
        JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
        LAUNCH_PROBE_OUT=str(probe_out),
        LAUNCH_SRUN_LOG=str(self.srun_log),
        LAUNCH_SCONTROL_LOG=str(self.scontrol_log),
      )
      env.update(extra)
      return env

    def records(self):
      return [json.loads((probe_out / f'process_{rank}.json').read_text()) for rank in (0, 1)]

    def srun_calls(self):
      return [json.loads(line) for line in self.srun_log.read_text().splitlines()]

    def scontrol_calls(self):
      if not self.scontrol_log.exists():
        return []
      return [json.loads(line) for line in self.scontrol_log.read_text().splitlines()]

  return Job()


def sbatch(env: dict, *args: str, cwd, timeout=120) -> subprocess.CompletedProcess:
  """`launch/slurm.sbatch` as the batch step runs it (its #SBATCH lines are comments to bash).
  Past `timeout` the whole job (bash, srun, the tasks) is killed and the test fails."""
  job = subprocess.Popen(
    ['bash', SBATCH, *args],
    cwd=cwd,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  )
  try:
    stdout, stderr = job.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    _kill_group(job)
    stdout, stderr = job.communicate()
    raise AssertionError(f'the job ran past {timeout} s:\n{stderr[-5000:]}') from None
  finally:
    _kill_group(job)
  return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def _kill_group(job: subprocess.Popen) -> None:
  """Ends what is left of a job started with start_new_session: bash, srun and its tasks."""
  try:
    os.killpg(job.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  job.wait()


def test_sbatch_help_and_usage_errors(slurm, tmp_path):
  result = sbatch(slurm.env(), '--help', cwd=tmp_path)
  assert result.returncode == 0 and result.stdout.startswith('Usage: sbatch')
  for word in ('WORKDIR', 'CONFIG', 'SIGTERM', 'requeue', 'resumes', 'SLURM_JOB_ID'):
    assert word in result.stdout
  result = sbatch(slurm.env(), cwd=tmp_path)
  assert result.returncode == 2 and 'set WORKDIR' in result.stderr
  env = slurm.env(WORKDIR=str(tmp_path))
  del env['SLURM_JOB_ID']
  result = sbatch(env, cwd=tmp_path)
  assert result.returncode == 2 and 'not in a SLURM job' in result.stderr
  result = sbatch(slurm.env(REPO_DIR=str(tmp_path)), f'--workdir={tmp_path}', cwd=tmp_path)
  assert result.returncode == 2 and 'not the repository root' in result.stderr
  assert not slurm.srun_log.exists()


def test_sbatch_header_asks_for_one_task_per_gpu_sigterm_and_requeue():
  with open(SBATCH) as f:
    header = [line.split()[1] for line in f if line.startswith('#SBATCH')]
  options = dict(option.removeprefix('--').partition('=')[::2] for option in header)
  assert options['ntasks-per-node'] == options['gpus-per-node']
  assert 'requeue' in options and options['signal'].startswith('B:TERM@')
  assert 'gpus-per-task' not in options and 'gpu-bind' not in options


def test_jax_finds_the_job_from_slurm_variables(slurm, tmp_path):
  """Each task's jax.distributed.initialize(), with no arguments, sees 2 processes of 4 CPU
  devices each, its rank from SLURM_PROCID, and reaches the other process."""
  workdir = tmp_path / 'run'
  env = slurm.env(MODULE='launch_probe', WORKDIR=str(workdir))
  result = sbatch(env, *OVERRIDES[:2], cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-5000:]
  for rank, record in enumerate(slurm.records()):
    assert record['process_index'] == rank
    assert record['process_count'] == 2
    assert record['device_count'] == 8 and record['local_device_count'] == 4
    assert record['all_process_indices'] == [0, 1]
    assert record['argv'] == [
      '--distributed',
      '--config=configs/cc_yfcc_2stage.py',
      f'--workdir={workdir}',
      *OVERRIDES[:2],
    ]
  (call,) = slurm.srun_calls()
  assert call['options'] == ['--kill-on-bad-exit=1', '--cpus-per-task=1']
  assert call['command'][:3] == [sys.executable, '-m', 'launch_probe']
  assert not slurm.scontrol_calls()  # a run that ends by itself is not requeued


def test_sigterm_reaches_the_tasks_and_the_job_is_requeued(slurm, tmp_path):
  env = slurm.env(MODULE='launch_probe', LAUNCH_PROBE_MODE='wait_for_term')
  args = ['--workdir', str(tmp_path / 'run'), '--config', 'configs/cc_1stage.py', OVERRIDES[2]]
  job = subprocess.Popen(
    ['bash', SBATCH, *args],
    cwd=tmp_path,
    env=env,
    stderr=subprocess.PIPE,
    text=True,
    start_new_session=True,
  )
  try:
    for rank in (0, 1):
      _wait_for_file(slurm.out / f'ready_{rank}')
    job.send_signal(signal.SIGTERM)  # as --signal=B:TERM@180 does before the time limit
    _, stderr = job.communicate(timeout=60)
  finally:
    _kill_group(job)
  assert job.returncode == 0, stderr
  for record in slurm.records():
    assert record['sigterm']
    assert record['argv'] == [
      '--distributed',
      '--config=configs/cc_1stage.py',
      f'--workdir={tmp_path / "run"}',
      OVERRIDES[2],
    ]
  assert slurm.scontrol_calls() == [['requeue', str(slurm.job_id)]]


@pytest.mark.slow  # ~2 minutes: kept out of CI's default run (README, Install and run)
def test_two_process_training_through_sbatch(slurm, tmp_path, compile_cache):
  """The real trainer, 2 processes of 4 CPU devices each with gloo collectives (~100 s on a
  2-core machine: 6 s a step; less when test_multiprocess.py compiled the step already)."""
  workdir = tmp_path / 'run'
  result = sbatch(
    slurm.env(**compile_cache),
    '--config=tests/tiny_train_config.py',
    f'--workdir={workdir}',
    cwd=tmp_path,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-5000:]
  assert sorted(cli.train_rows(workdir)) == list(range(1, 9))
  assert 8 in cli.checkpoint_steps(workdir)
  assert not slurm.scontrol_calls()


@pytest.mark.slow  # 70 s
def test_sigterm_through_sbatch_saves_an_agreed_step_and_requeues(slurm, tmp_path, compile_cache):
  """The time limit's SIGTERM reaches a 2-process training run: both processes save one step
  and exit 0 well before the run's end, and the job is requeued."""
  workdir = tmp_path / 'run'
  args = [
    '--config=tests/tiny_train_config.py',
    f'--workdir={workdir}',
    '--config.total_steps=40',
    '--config.checkpoint_every_steps=100',
  ]
  with open(tmp_path / 'job.log', 'w') as log:
    job = subprocess.Popen(
      ['bash', SBATCH, *args],
      cwd=tmp_path,
      env=slurm.env(**compile_cache),
      stdout=log,
      stderr=subprocess.STDOUT,
      start_new_session=True,
    )
  try:
    cli.wait_for(lambda: os.path.exists(workdir / 'metrics.jsonl'), job)
    job.send_signal(signal.SIGTERM)
    job.wait(timeout=120)
  finally:
    _kill_group(job)
  assert job.returncode == 0, (tmp_path / 'job.log').read_text()[-5000:]
  (saved,) = cli.checkpoint_steps(workdir)
  assert 1 <= saved < 40 and max(cli.train_rows(workdir)) == saved
  assert slurm.scontrol_calls() == [['requeue', str(slurm.job_id)]]
