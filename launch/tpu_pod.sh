#!/usr/bin/env bash
# Trains groupvit_jax on a Cloud TPU VM slice (a pod slice of several hosts, or a single host):
# create | setup | train | stop | status | logs | delete. `launch/tpu_pod.sh --help` says more.
set -euo pipefail

PROG=${0##*/}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REMOTE_ARCHIVE=groupvit_jax-src.tar.gz # where `setup` copies the working tree, in the home dir

usage() {
  cat <<EOF
Usage: $PROG COMMAND [OPTIONS] [-- TRAINER_FLAGS...]

Runs groupvit_jax on a Cloud TPU VM slice created through a queued resource, with gcloud.

Commands:
  create   request the slice: gcloud compute tpus queued-resources create (spot or on-demand)
  setup    install the project on every worker: copy this working tree (or clone --repo-url),
           make a Python virtualenv and pip install -r requirements.txt and jax[tpu]
  train    start python -m groupvit_jax.main --distributed on all workers at once, in the
           background (nohup), each worker logging to ~/REMOTE_DIR/logs/train.log
  stop     send SIGTERM to the training on all workers: they save one agreed step and exit
  status   show the queued resource and its state (WAITING_FOR_RESOURCES, ACTIVE, SUSPENDED...)
  logs     print the end of one worker's training log (--follow to keep printing)
  delete   delete the queued resource and its TPU VMs

'$PROG COMMAND --help' shows the options each command reads.

Options (each flag also reads an environment variable, named in capitals; a flag wins):
  --name NAME             queued resource and TPU node ID                   [NAME, groupvit]
  --zone ZONE             e.g. us-central2-b; empty: gcloud's compute/zone              [ZONE]
  --project PROJECT       empty: gcloud's core/project                               [PROJECT]
  --dry-run               print each command, quoted for bash, one per line, without running
                          anything                                              [DRY_RUN=1]
  -h, --help              this help

Preemption: a spot slice can be taken back at any time. Its queued resource then goes to
SUSPENDED and the VMs and their disks are gone. Make a new slice (delete, create, setup) and
run the same train command again: it resumes from the last checkpoint in the gs:// workdir.
Each worker's training also receives SIGTERM when its VM shuts down, and saves a checkpoint if
the shutdown leaves it time.

Example, a spot v5e slice with 64 chips (16 hosts):
  export NAME=groupvit ZONE=us-west4-a PROJECT=my-project
  $PROG create --accelerator=v5litepod-64 --spot
  $PROG status        # wait for ACTIVE
  $PROG setup
  $PROG train --workdir=gs://my-bucket/groupvit/run1 -- \\
      --config.data.shards='gs://my-bucket/cc12m/{00000..01242}.tar'
  $PROG logs --follow
  $PROG delete
EOF
}

usage_create() {
  cat <<EOF
Usage: $PROG create [OPTIONS]

Requests a TPU VM slice: gcloud compute tpus queued-resources create NAME --node-id=NAME ...
Then wait until '$PROG status' says ACTIVE; the VMs exist from then on.

  --accelerator TYPE      e.g. v5litepod-64, v4-128, v5p-128, v6e-64 (required)  [ACCELERATOR]
  --runtime-version V     the TPU VM image; default for the generation:      [RUNTIME_VERSION]
                            v6e: v2-alpha-tpuv6e, v5p: v2-alpha-tpuv5,
                            v5e (v5litepod): v2-alpha-tpuv5-lite, v4/v3/v2: tpu-ubuntu2204-base
  --spot                  spot capacity: cheaper, can be preempted at any time     [SPOT=1]
  --on-demand             on-demand capacity (the default)                         [SPOT=0]
  --name, --zone, --project, --dry-run: see '$PROG --help'.
EOF
}

usage_setup() {
  cat <<EOF
Usage: $PROG setup [OPTIONS]

Installs the project on every worker (--worker=all), in ~/REMOTE_DIR. By default it copies this
working tree (the files git tracks plus untracked ones .gitignore does not exclude) with
'gcloud compute tpus tpu-vm scp --worker=all'; with --repo-url it clones that repository there
instead. Then it makes the virtualenv ~/REMOTE_DIR/.venv with PYTHON (installing PYTHON from the
deadsnakes PPA if the image lacks it: the pinned jax needs Python 3.11 or newer and the Ubuntu
22.04 images have 3.10) and runs 'pip install -r requirements.txt jax[tpu]'. Running setup again
updates the code and the packages and keeps the virtualenv and the logs.

  --repo-url URL          git clone URL instead of copying this working tree        [REPO_URL]
  --ref REF               branch, tag or commit of --repo-url to check out (default: the
                          remote's default branch)                                       [REF]
  --remote-dir DIR        install directory on the workers, relative to the home directory
                          or absolute                                [REMOTE_DIR, groupvit_jax]
  --python PYTHON         interpreter for the virtualenv             [PYTHON, python3.11]
  --name, --zone, --project, --dry-run: see '$PROG --help'.
EOF
}

usage_train() {
  cat <<EOF
Usage: $PROG train --workdir=gs://BUCKET/PATH [OPTIONS] [--config.KEY=VALUE...] [-- FLAGS...]

Starts on all workers at once (ssh --worker=all), in the background with nohup:
  cd ~/REMOTE_DIR && .venv/bin/python -m groupvit_jax.main --distributed \\
      --config=CONFIG --workdir=WORKDIR [overrides...] >> logs/train.log 2>&1
and returns; each worker appends to its own ~/REMOTE_DIR/logs/train.log ('$PROG logs').
jax.distributed.initialize() finds the other workers by itself on a TPU VM. A worker that is
still training refuses to start a second run ('$PROG stop' first).

The workdir must be on Cloud Storage (gs://): a TPU VM's disk is lost when the VM is preempted
or deleted, and all workers must read and write the same checkpoints. The TPU VMs' service
account needs read and write access to the bucket.

Resuming: running the same train command again resumes from the latest checkpoint in WORKDIR,
on the same slice after '$PROG stop' or on a new slice after a preemption (delete, create,
setup, train).

Trainer flags: arguments that start with --config. and everything after '--' go to the trainer
as they are (quote them as for a local run; they are quoted again for the workers' shell):
  $PROG train --workdir=gs://b/run1 --config.batch_size=4096 -- \\
      --config.data.shards='gs://b/cc12m/{00000..01242}.tar' --config.profile_steps='(10, 15)'

  --workdir gs://...      checkpoints, metrics and TensorBoard files (required)      [WORKDIR]
  --config FILE           config file, relative to the repository
                                                  [CONFIG, configs/cc_yfcc_2stage.py]
  --env KEY=VALUE         set an environment variable for the trainer (repeatable), e.g.
                          --env=LIBTPU_INIT_ARGS=--xla_tpu_enable_async_collective_fusion=true
  --remote-dir DIR        where setup installed the project          [REMOTE_DIR, groupvit_jax]
  --name, --zone, --project, --dry-run: see '$PROG --help'.
EOF
}

usage_stop() {
  cat <<EOF
Usage: $PROG stop [OPTIONS]

Sends SIGTERM to the training process on every worker (the pid in ~/REMOTE_DIR/logs/train.pid).
The trainer saves a checkpoint at one step all processes agree on and exits; '$PROG train'
resumes from it.

  --remote-dir DIR        where setup installed the project          [REMOTE_DIR, groupvit_jax]
  --name, --zone, --project, --dry-run: see '$PROG --help'.
EOF
}

usage_status() {
  cat <<EOF
Usage: $PROG status [OPTIONS]

Shows the queued resource: gcloud compute tpus queued-resources describe NAME. Its state.state
is WAITING_FOR_RESOURCES or PROVISIONING until the slice is ready, ACTIVE while it runs, and
SUSPENDED or FAILED once a spot slice was preempted or the request failed (then 'delete').

  --name, --zone, --project, --dry-run: see '$PROG --help'.
EOF
}

usage_logs() {
  cat <<EOF
Usage: $PROG logs [OPTIONS]

Prints the last lines of one worker's ~/REMOTE_DIR/logs/train.log. Worker 0 is the process
that logs the metrics; every worker logs its own errors.

  --worker N              which worker                                      [WORKER, 0]
  --lines N               how many lines                                    [LOG_LINES, 100]
  -f, --follow            keep printing what is appended (Ctrl-C to stop watching; the
                          training goes on)
  --remote-dir DIR        where setup installed the project          [REMOTE_DIR, groupvit_jax]
  --name, --zone, --project, --dry-run: see '$PROG --help'.
EOF
}

usage_delete() {
  cat <<EOF
Usage: $PROG delete [OPTIONS]

Deletes the queued resource and its TPU VMs (gcloud compute tpus queued-resources delete
--force), with everything on their disks; the gs:// workdir stays. gcloud asks to confirm
unless --yes.

  -y, --yes               do not ask (gcloud --quiet)
  --name, --zone, --project, --dry-run: see '$PROG --help'.
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}

# Quotes $1 for bash exactly as Python's shlex.quote does, into the variable named $2.
quote_into() {
  local LC_ALL=C
  if [[ -n $1 && $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf -v "$2" '%s' "$1"
  else
    printf -v "$2" "'%s'" "${1//\'/\'\"\'\"\'}"
  fi
}

# Prints its arguments as one line of bash (shlex.join), without a newline.
join_quoted() {
  local arg quoted out=()
  for arg in "$@"; do
    quote_into "$arg" quoted
    out+=("$quoted")
  done
  local IFS=' '
  printf '%s' "${out[*]}"
}

# Runs a command, or prints it with --dry-run.
run() {
  if ((DRY_RUN)); then
    join_quoted "$@"
    echo
  else
    "$@"
  fi
}

# Arguments gcloud commands share: the zone and project, when given.
location_flags=()
set_location_flags() {
  location_flags=()
  [[ -n $ZONE ]] && location_flags+=("--zone=$ZONE")
  [[ -n $PROJECT ]] && location_flags+=("--project=$PROJECT")
  return 0
}

# Runs (or prints) gcloud ARGS... with the zone and project flags after them.
# (${a[@]+"${a[@]}"}: an empty array under set -u in bash 3.2, macOS's bash.)
gcloud_run() {
  run gcloud "$@" ${location_flags[@]+"${location_flags[@]}"}
}

# Runs (or prints) a shell command on worker $1 (a number, or all) over ssh.
ssh_run() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "--worker=$1" \
    ${location_flags[@]+"${location_flags[@]}"} "--command=$2"
}

default_runtime_version() {
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v4-* | v3-* | v2-*) echo tpu-ubuntu2204-base ;;
    *) die "no default runtime version for accelerator '$1': pass --runtime-version" ;;
  esac
}

check_remote_dir() {
  # Components start with a letter, digit or _, so no '.', '..' or empty ones: setup deletes
  # the directory's old contents.
  [[ $REMOTE_DIR =~ ^/?[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$ ]] ||
    die '--remote-dir must be a plain path such as groupvit_jax or /opt/groupvit_jax,' \
      "got '$REMOTE_DIR'"
}

cmd_create() {
  [[ -n $ACCELERATOR ]] ||
    die 'create needs --accelerator (or ACCELERATOR), e.g. v5litepod-64 or v4-128'
  local runtime=$RUNTIME_VERSION
  if [[ -z $runtime ]]; then
    runtime=$(default_runtime_version "$ACCELERATOR")
  fi
  local args=(compute tpus queued-resources create "$NAME" "--node-id=$NAME"
    "--accelerator-type=$ACCELERATOR" "--runtime-version=$runtime")
  [[ $SPOT == 1 ]] && args+=(--spot)
  gcloud_run "${args[@]}"
  ((DRY_RUN)) || echo "$PROG: requested; '$PROG status' shows ACTIVE once the slice is ready" >&2
}

# The shell command that makes the virtualenv and installs the packages, on a worker.
install_command() {
  local python dir
  quote_into "$PYTHON" python
  quote_into "$REMOTE_DIR" dir
  printf '%s' "cd $dir && if ! command -v $python >/dev/null" \
    " || ! $python -c 'import ensurepip' 2>/dev/null;" \
    " then sudo add-apt-repository -y ppa:deadsnakes/ppa" \
    " && sudo apt-get -o DPkg::Lock::Timeout=600 install -y $python $python-venv; fi" \
    " && if [ ! -x .venv/bin/python ]; then $python -m venv .venv; fi" \
    " && .venv/bin/pip install --upgrade pip" \
    " && .venv/bin/pip install -r requirements.txt 'jax[tpu]'" \
    " && .venv/bin/python -c 'import jax; print(\"jax\", jax.__version__)'"
}

cmd_setup() {
  check_remote_dir
  local dir command
  quote_into "$REMOTE_DIR" dir
  if [[ -n $REPO_URL ]]; then
    local url ref
    quote_into "$REPO_URL" url
    quote_into "${REF:-HEAD}" ref
    command="if [ ! -d $dir/.git ]; then git clone --no-checkout $url $dir; fi"
    command+=" && git -C $dir fetch origin $ref && git -C $dir checkout --force --detach FETCH_HEAD"
  else
    local archive=${TMPDIR:-/tmp}/groupvit_jax-$NAME.tar.gz
    git -C "$REPO_ROOT" rev-parse --git-dir >/dev/null 2>&1 ||
      die "$REPO_ROOT is not a git checkout: setup copies the files git lists; use --repo-url"
    local deleted
    deleted=$(git -C "$REPO_ROOT" ls-files --deleted)
    [[ -z $deleted ]] || die "files deleted from the working tree but still in git's index" \
      "(git rm or restore them first): $(echo "$deleted" | tr '\n' ' ')"
    local list=(git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard)
    local pack=(tar -czf "$archive" -C "$REPO_ROOT" --null -T -)
    if ((DRY_RUN)); then
      echo "$(join_quoted "${list[@]}") | $(join_quoted "${pack[@]}")"
    else
      # shellcheck disable=SC2064 # $archive is local: expand it now
      trap "rm -f $(printf %q "$archive")" EXIT
      "${list[@]}" | "${pack[@]}"
    fi
    gcloud_run compute tpus tpu-vm scp "$archive" "$NAME:$REMOTE_ARCHIVE" --worker=all
    # A fresh copy of the tree, keeping the virtualenv and the logs.
    command="mkdir -p $dir && find $dir -mindepth 1 -maxdepth 1 ! -name .venv ! -name logs"
    command+=" -exec rm -rf {} + && tar -xzf $REMOTE_ARCHIVE -C $dir && rm $REMOTE_ARCHIVE"
  fi
  command+=" && $(install_command)"
  ssh_run all "$command"
}

# Is the pid in logs/train.pid alive? (a shell test, on a worker, in the install directory)
# shellcheck disable=SC2016 # expanded on the worker
RUNNING_TEST='[ -f logs/train.pid ] && kill -0 "$(cat logs/train.pid)" 2>/dev/null'

cmd_train() {
  [[ -n $WORKDIR ]] || die 'train needs --workdir=gs://BUCKET/PATH (or WORKDIR)'
  [[ $WORKDIR =~ ^gs://[^/]+ ]] || die "the workdir must be a gs:// path, got '$WORKDIR':" \
    "a TPU VM's disk is lost when the VM is preempted or deleted, and all workers must share" \
    'the checkpoints'
  check_remote_dir
  local trainer=()
  if ((${#TRAIN_ENV[@]})); then
    trainer+=(env "${TRAIN_ENV[@]}")
  fi
  trainer+=(.venv/bin/python -m groupvit_jax.main --distributed "--config=$CONFIG"
    "--workdir=$WORKDIR" ${OVERRIDES[@]+"${OVERRIDES[@]}"})
  local dir trainer_quoted
  quote_into "$REMOTE_DIR" dir
  trainer_quoted=$(join_quoted "${trainer[@]}")
  local command="set -e; cd $dir; mkdir -p logs"
  command+="; if $RUNNING_TEST; then echo \"\$(hostname): already training"
  command+=" (pid \$(cat logs/train.pid)), stop it first with $PROG stop\" >&2; exit 1; fi"
  command+="; echo \"=== \$(date -u +%Y-%m-%dT%H:%M:%SZ) $PROG train\" >> logs/train.log"
  command+="; nohup $trainer_quoted >> logs/train.log 2>&1 < /dev/null &"
  command+=" echo \$! > logs/train.pid"
  command+="; echo \"\$(hostname): training, pid \$(cat logs/train.pid), log $dir/logs/train.log\""
  ssh_run all "$command"
}

cmd_stop() {
  check_remote_dir
  local dir
  quote_into "$REMOTE_DIR" dir
  local command="cd $dir && if $RUNNING_TEST; then kill -TERM \"\$(cat logs/train.pid)\""
  command+=" && echo \"\$(hostname): sent SIGTERM to pid \$(cat logs/train.pid)\";"
  command+=" else echo \"\$(hostname): not training\"; fi"
  ssh_run all "$command"
}

cmd_status() {
  gcloud_run compute tpus queued-resources describe "$NAME"
}

cmd_logs() {
  check_remote_dir
  [[ $WORKER =~ ^[0-9]+$ ]] || die "--worker must be a worker number, got '$WORKER'"
  [[ $LOG_LINES =~ ^[0-9]+$ ]] || die "--lines must be a number, got '$LOG_LINES'"
  local dir follow=''
  quote_into "$REMOTE_DIR/logs/train.log" dir
  ((FOLLOW)) && follow=' -F'
  ssh_run "$WORKER" "tail -n $LOG_LINES$follow $dir"
}

cmd_delete() {
  local args=(compute tpus queued-resources delete "$NAME" --force)
  ((YES)) && args+=(--quiet)
  gcloud_run "${args[@]}"
}

# The options that take a value, as --option=VALUE or --option VALUE.
VALUE_OPTIONS='name|zone|project|accelerator|runtime-version|repo-url|ref|remote-dir|python'
VALUE_OPTIONS+='|config|workdir|env|worker|lines'

main() {
  NAME=${NAME:-groupvit}
  ZONE=${ZONE:-}
  PROJECT=${PROJECT:-}
  ACCELERATOR=${ACCELERATOR:-}
  RUNTIME_VERSION=${RUNTIME_VERSION:-}
  SPOT=${SPOT:-0}
  REPO_URL=${REPO_URL:-}
  REF=${REF:-}
  REMOTE_DIR=${REMOTE_DIR:-groupvit_jax}
  PYTHON=${PYTHON:-python3.11}
  CONFIG=${CONFIG:-configs/cc_yfcc_2stage.py}
  WORKDIR=${WORKDIR:-}
  WORKER=${WORKER:-0}
  LOG_LINES=${LOG_LINES:-100}
  DRY_RUN=${DRY_RUN:-0}
  [[ $DRY_RUN == 1 ]] || DRY_RUN=0
  FOLLOW=0
  YES=0
  TRAIN_ENV=()
  OVERRIDES=()
  local command='' help=0
  while (($#)); do
    local arg=$1 value=''
    shift
    if [[ $arg == --config.* ]]; then # a trainer flag, as it is
      OVERRIDES+=("$arg")
      continue
    fi
    # --flag=value and --flag value
    if [[ $arg == --*=* ]]; then
      value=${arg#*=}
      arg=${arg%%=*}
    elif [[ $arg =~ ^--($VALUE_OPTIONS)$ ]]; then
      (($#)) || die "$arg needs a value"
      value=$1
      shift
    fi
    case $arg in
      -h | --help) help=1 ;;
      --dry-run) DRY_RUN=1 ;;
      --name) NAME=$value ;;
      --zone) ZONE=$value ;;
      --project) PROJECT=$value ;;
      --accelerator) ACCELERATOR=$value ;;
      --runtime-version) RUNTIME_VERSION=$value ;;
      --spot) SPOT=1 ;;
      --on-demand) SPOT=0 ;;
      --repo-url) REPO_URL=$value ;;
      --ref) REF=$value ;;
      --remote-dir) REMOTE_DIR=$value ;;
      --python) PYTHON=$value ;;
      --config) CONFIG=$value ;;
      --workdir) WORKDIR=$value ;;
      --env)
        [[ $value =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs KEY=VALUE, got '$value'"
        TRAIN_ENV+=("$value")
        ;;
      --worker) WORKER=$value ;;
      --lines) LOG_LINES=$value ;;
      -f | --follow) FOLLOW=1 ;;
      -y | --yes) YES=1 ;;
      --)
        OVERRIDES+=("$@")
        break
        ;;
      -*) die "unknown option '$arg' (see $PROG --help)" ;;
      *)
        [[ -z $command ]] || die "unexpected argument '$arg' (see $PROG --help)"
        command=$arg
        ;;
    esac
  done
  if [[ -z $command ]]; then
    ((help)) && { usage; exit 0; }
    usage >&2
    exit 2
  fi
  case $command in
    create | setup | train | stop | status | logs | delete) ;;
    help) usage && exit 0 ;;
    *) die "unknown command '$command' (see $PROG --help)" ;;
  esac
  if ((help)); then
    "usage_$command"
    exit 0
  fi
  local flag
  for flag in ${OVERRIDES[@]+"${OVERRIDES[@]}"}; do
    [[ $flag != --dry-run ]] ||
      die "--dry-run after '--' would go to the trainer: put it before '--'"
  done
  if ((${#OVERRIDES[@]})) && [[ $command != train ]]; then
    die "trainer flags are for train only, got: $(join_quoted "${OVERRIDES[@]}")"
  fi
  [[ -n $NAME ]] || die 'NAME is empty'
  if ((!DRY_RUN)) && ! command -v gcloud >/dev/null; then
    die 'gcloud not found: install the Google Cloud CLI (https://cloud.google.com/sdk)'
  fi
  set_location_flags
  "cmd_$command"
}

main "$@"
