#!/usr/bin/env bash
# Submit `fspo-verl train cluster=multinode ...` to an EXISTING Ray cluster with `ray job submit`, installing
# fspo_verl on every node through the job's runtime_env (Ray 2.60: the `pip` field makes a virtualenv with
# --system-site-packages on each node, so the image's verl/vLLM/torch stay in use and only the plugin and any
# missing dependency are added; every driver, TaskRunner and worker of the job runs in it, so verl's
# `verl.plugins` entry point registers fspo_verl everywhere).
#
#   RAY_ADDRESS=http://head:8265 NNODES=2 GPUS_PER_NODE=8 recipes/ray_job_submit.sh \
#       algorithm=fspo model=qwen3_8b_base data=math data.train_files=/shared/math/train.parquet ...
#
# Arguments are Hydra overrides. The cluster preset is `cluster=multinode` (GPU nodes, vLLM) unless the
# arguments choose one: `cluster=<name>` among them replaces that default, and the script then adds no
# preset of its own (e.g. `cluster=cpu` on a CPU-only Ray cluster: the embedded CPU backend, which reads the
# running cluster's resources). The overrides are composed and checked locally first (`fspo-verl validate`,
# with RAY_ADDRESS set: against the running cluster's resources for cluster=cpu), so a bad setting fails
# here, before anything is uploaded.
#
# Environment (all optional except RAY_ADDRESS):
#   RAY_ADDRESS          the cluster's job server (dashboard), e.g. http://head-node:8265. Required unless DRY_RUN=1.
#                        With token authentication on (Ray 2.60's default for `ray start`), set RAY_AUTH_TOKEN
#                        (or have the cluster's token in ~/.ray/auth_token) here, as for any `ray job submit`.
#   NNODES               nodes the run uses; set, it becomes trainer.nnodes=$NNODES (placed before the arguments,
#                        so an explicit trainer.nnodes=... among them wins) and is forwarded to the job. Default 2
#                        with the default cluster=multinode preset; with a cluster= of your own, the preset's value.
#   GPUS_PER_NODE        GPUs per node (FSDP workers per node); trainer.n_gpus_per_node, the same way. Default 8
#                        with cluster=multinode; with cluster=cpu they are logical GPUs (nothing uses a GPU).
#   FSPO_VERL_PIP        pip requirement that installs the plugin on every node: a wheel or checkout on storage
#                        every node mounts (/shared/wheels/fspo_verl-0.1.0-py3-none-any.whl), a git URL
#                        (git+https://host/org/fspo_verl.git@<ref>), or a released version (fspo-verl==0.1.0).
#                        Default: build a wheel of this checkout and ship it in the job's working_dir, so the
#                        nodes need neither shared storage nor a route to git. The wheel sits under a folder named
#                        by its sha256: Ray caches pip environments by the requirement string, so new code gets a
#                        new environment instead of a stale cached one.
#   FSPO_VERL_PIP_OPTIONS  options for that `pip install` (runtime_env pip_install_options), space-separated, e.g.
#                        "--no-deps" on an air-gapped cluster whose image already has every dependency. Default:
#                        Ray's own (--disable-pip-version-check --no-cache-dir); dependencies are then resolved
#                        against the image, and only missing ones (e.g. TransferQueue) are downloaded.
#   FSPO_VERL_FORWARD_ENV  names of variables copied into the job's env_vars when set here (space-separated).
#                        Default: HF_TOKEN HF_HOME HF_ENDPOINT HF_HUB_OFFLINE TRANSFORMERS_OFFLINE WANDB_API_KEY
#                        WANDB_ENTITY WANDB_BASE_URL WANDB_MODE NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME NCCL_IB_HCA
#   SUBMISSION_ID        Ray job id (default fspo-verl-<UTC time>).
#   NO_WAIT=1            return after submitting instead of streaming the logs (ray job submit --no-wait).
#   STAGING_DIR          where the job's working_dir is assembled (default: a new temporary folder).
#   PYTHON               interpreter that builds the wheel (default: python3).
#   SKIP_LOCAL_VALIDATE=1  do not run `fspo-verl validate` here (e.g. no fspo_verl installed locally).
#   FSPO_VERL_COMMAND    train (default) or validate: what the job's entrypoint runs.
#   DRY_RUN=1            assemble everything and print the runtime_env and the exact `ray job submit` command;
#                        submit nothing.
#
# Always forwarded: VERL_USE_EXTERNAL_MODULES=fspo_verl (verl then imports the plugin loudly in every
# process: an import error fails the job instead of silently dropping the plugin) and
# RAY_OVERRIDE_JOB_RUNTIME_ENV=1 (verl's run_ppo passes its own runtime_env to ray.init inside the job; with
# this, a key set in both is taken from verl's instead of failing the merge).
# Checkpoints: the job runs in a temporary working_dir on each node; pass trainer.default_local_dir=<shared path>.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# the cluster preset: multinode, unless an argument chooses one (Hydra group override `cluster=<name>`)
CLUSTER_PRESET=(cluster=multinode)
for arg in "$@"; do
  if [[ "$arg" == cluster=* ]]; then CLUSTER_PRESET=(); fi
done
if [[ ${#CLUSTER_PRESET[@]} -gt 0 ]]; then
  export NNODES=${NNODES:-2} GPUS_PER_NODE=${GPUS_PER_NODE:-8}
fi
SIZE=()
if [[ -n "${NNODES:-}" ]]; then export NNODES; SIZE+=("trainer.nnodes=$NNODES"); fi
if [[ -n "${GPUS_PER_NODE:-}" ]]; then export GPUS_PER_NODE; SIZE+=("trainer.n_gpus_per_node=$GPUS_PER_NODE"); fi
PYTHON=${PYTHON:-python3}
COMMAND=${FSPO_VERL_COMMAND:-train}
FORWARD_ENV=${FSPO_VERL_FORWARD_ENV:-HF_TOKEN HF_HOME HF_ENDPOINT HF_HUB_OFFLINE TRANSFORMERS_OFFLINE WANDB_API_KEY WANDB_ENTITY WANDB_BASE_URL WANDB_MODE NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME NCCL_IB_HCA}
SUBMISSION_ID=${SUBMISSION_ID:-fspo-verl-$(date -u +%Y%m%d-%H%M%S)}

if [[ "${DRY_RUN:-0}" != 1 && -z "${RAY_ADDRESS:-}" ]]; then
  echo "error: RAY_ADDRESS is not set; set it to the cluster's job server, e.g. RAY_ADDRESS=http://head-node:8265 (or DRY_RUN=1 to only print the commands)" >&2
  exit 2
fi

OVERRIDES=("${CLUSTER_PRESET[@]}" "${SIZE[@]}" "$@")
if [[ "${SKIP_LOCAL_VALIDATE:-0}" != 1 ]]; then
  # the data and model paths name the cluster's files: absent here, they are checked by the job's driver
  if ! FSPO_VERL_FILES_ELSEWHERE=1 fspo-verl validate "${OVERRIDES[@]}" >/dev/null; then
    echo "error: the overrides above do not validate (NNODES=${NNODES:-unset} GPUS_PER_NODE=${GPUS_PER_NODE:-unset}); nothing was submitted" >&2
    exit 1
  fi
  if [[ " $* " != *" trainer.default_local_dir="* ]]; then
    echo "warning: no trainer.default_local_dir=<shared path> given; checkpoints land in the job's temporary working_dir" >&2
  fi
fi

# The plugin requirement, and the working_dir that carries it when it is built from this checkout.
WORKING_DIR=""
if [[ -n "${FSPO_VERL_PIP:-}" ]]; then
  PIP_SPEC=$FSPO_VERL_PIP
else
  WORKING_DIR=${STAGING_DIR:-$(mktemp -d -t fspo-verl-job.XXXXXX)}
  build="$WORKING_DIR/build" src="$WORKING_DIR/src"
  rm -rf "$build" "$src" && mkdir -p "$build" "$src"
  # Build from a copy of the files git sees (tracked + untracked, not ignored): a stale build/ or .venv in
  # the checkout must not leak into the wheel.
  git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard \
    | tar -C "$REPO_ROOT" --null --ignore-failed-read -T - -cf - | tar -C "$src" -xf -
  export SOURCE_DATE_EPOCH=315532800  # fixed zip timestamps: same code, same wheel, same digest
  if ! "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$build" "$src" >&2; then
    echo "note: building without isolation failed (setuptools>=77 missing?); retrying in an isolated build" >&2
    "$PYTHON" -m pip wheel --quiet --no-deps -w "$build" "$src" >&2
  fi
  wheel=$(cd "$build" && ls fspo_verl-*.whl)
  digest=$(sha256sum "$build/$wheel" | cut -c1-16)
  mkdir -p "$WORKING_DIR/wheels/$digest"
  mv "$build/$wheel" "$WORKING_DIR/wheels/$digest/$wheel"
  rm -rf "$build" "$src"
  # Ray expands this variable to the job's working_dir on each node before `pip install -r` (Ray 2.60
  # runtime_env_agent + working_dir.with_working_dir_env); pip expands ${VAR} inside requirement files.
  PIP_SPEC="\${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/wheels/$digest/$wheel"
fi

FORWARDED=()
for name in $FORWARD_ENV; do
  if [[ -n "${!name:-}" ]]; then FORWARDED+=("$name"); fi
done

RUNTIME_ENV=$(
  PIP_SPEC="$PIP_SPEC" WORKING_DIR="$WORKING_DIR" PIP_OPTIONS="${FSPO_VERL_PIP_OPTIONS:-}" \
  FORWARDED="${FORWARDED[*]:-}" "$PYTHON" - <<'PY'
import json, os
pip = {"packages": [os.environ["PIP_SPEC"]], "pip_check": False}
if os.environ["PIP_OPTIONS"].split():
    pip["pip_install_options"] = os.environ["PIP_OPTIONS"].split()
env_vars = {name: os.environ[name] for name in ("NNODES", "GPUS_PER_NODE") if os.environ.get(name)}
env_vars.update({"VERL_USE_EXTERNAL_MODULES": "fspo_verl", "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"})
env_vars.update({name: os.environ[name] for name in os.environ["FORWARDED"].split()})
runtime_env = {"pip": pip, "env_vars": env_vars}
if os.environ["WORKING_DIR"]:
    runtime_env["working_dir"] = os.environ["WORKING_DIR"]
print(json.dumps(runtime_env, sort_keys=True))
PY
)

# The entrypoint as separate words: Ray 2.60's `ray job submit` shell-quotes each word after `--` and joins
# them into the string the job server runs with `sh -c`, so overrides such as data.val_files=[a,b] reach the
# job intact. (One pre-quoted string would reach `sh` as a single word: "not found", exit 127.)
SUBMIT=(ray job submit --submission-id "$SUBMISSION_ID" --runtime-env-json "$RUNTIME_ENV")
if [[ -n "${RAY_ADDRESS:-}" ]]; then SUBMIT+=(--address "$RAY_ADDRESS"); fi
if [[ "${NO_WAIT:-0}" == 1 ]]; then SUBMIT+=(--no-wait); fi
SUBMIT+=(-- python -m fspo_verl.cli "$COMMAND" "${OVERRIDES[@]}")

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  # Values of forwarded secrets (names containing TOKEN, KEY, SECRET or PASSWORD) are printed as ***.
  mask() { "$PYTHON" -c 'import re,sys; print(re.sub(r"(\"[A-Z0-9_]*(?:TOKEN|KEY|SECRET|PASSWORD)[A-Z0-9_]*\\?\":\\? \\?\")[^\"\\]*", r"\1***", sys.stdin.read()), end="")'; }
  echo "# runtime_env"
  echo "$RUNTIME_ENV" | mask
  echo "# command"
  printf '%q ' "${SUBMIT[@]}" | mask
  echo
  exit 0
fi
exec "${SUBMIT[@]}"
