#!/usr/bin/env bash
# The FSPO paper's comparison (arXiv 2509.09177) in real training on CPU: every method on the same task, with
# the same seeds, steps and batch geometry, through verl's real trainer (`fspo-verl train`, one run each), then
# the clip rate by response-length bin per method (fspo_verl.diagnostics.comparison).
#
#   recipes/compare_cpu.sh [extra overrides for every run...]
#
# Env (defaults in brackets):
#   METHODS      algorithm presets to compare            ["fspo gspo grpo sspo"]
#   SEEDS        one run per method and seed              ["1 2 3"]   (data.seed and actor_rollout_ref.rollout.seed)
#   STEPS        trainer.total_training_steps per run     [40]
#   DATA         data preset                              [unset: the launcher's default, the demo task]
#   LENGTH_BINS  length_bins for every run, e.g. [8,16,32,64,128]  [unset: each preset's own; they must agree]
#   OUT          output folder                            [outputs/compare_cpu]
#   MIN_SEQS     bins with fewer sequences (all seeds and steps) stay out of the spread  [400]
#   FSPO_VERL_COMMAND=validate   compose and check every run's config, launch nothing
# Writes each run into its own Hydra run directory $OUT/runs/<method>/seed<k>/ (metrics_0.jsonl, plots_0/,
# tensorboard/, config_0.yaml; see fspo_verl.run_dir), then $OUT/{clip_rate_by_length.png,reward.png,
# comparison.json,comparison.md}. A run starts fresh each time (no checkpoints, no resume).
set -euo pipefail

METHODS=${METHODS:-"fspo gspo grpo sspo"}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-40}
OUT=$(mkdir -p "${OUT:-outputs/compare_cpu}" && cd "${OUT:-outputs/compare_cpu}" && pwd)
COMMAND=${FSPO_VERL_COMMAND:-train}
PYTHON=${PYTHON:-python}

RUN_ARGS=()
for method in ${METHODS}; do
  paths=()
  for seed in ${SEEDS}; do
    dir="${OUT}/runs/${method}/seed${seed}"
    mkdir -p "${dir}"
    OVERRIDES=(
      algorithm="${method}"
      ${DATA:+data="${DATA}"}
      trainer.total_training_steps="${STEPS}"
      data.seed="${seed}"
      actor_rollout_ref.rollout.seed="${seed}"
      trainer.save_freq=-1
      trainer.resume_mode=disable
      trainer.experiment_name="${method}_seed${seed}"
      ${LENGTH_BINS:+++actor_rollout_ref.actor.policy_loss.length_bins="${LENGTH_BINS}"}
    )
    if [ "${COMMAND}" != train ]; then
      fspo-verl "${COMMAND}" "${OVERRIDES[@]}" "$@" > "${dir}/validate.txt"
      echo "ok: ${method} seed ${seed}"
      continue
    fi
    rm -rf "${dir}" && mkdir -p "${dir}"  # a fresh run directory: its metrics are metrics_0.jsonl
    echo "=== ${method}, seed ${seed}: ${dir}"
    (cd "${dir}" && fspo-verl train "${OVERRIDES[@]}" hydra.run.dir="${dir}" "$@" > "${dir}/train.log" 2>&1)  \
      || { echo "failed: ${method} seed ${seed}; see ${dir}/train.log" >&2; tail -n 30 "${dir}/train.log" >&2; exit 1; }
    paths+=("${dir}/metrics_0.jsonl")
  done
  if [ "${#paths[@]}" -gt 0 ]; then
    RUN_ARGS+=(--run "${method}=$(IFS=,; echo "${paths[*]}")")
  fi
done

if [ "${COMMAND}" = train ]; then
  "${PYTHON}" -m fspo_verl.diagnostics.comparison "${RUN_ARGS[@]}" --out "${OUT}" --min-seqs "${MIN_SEQS:-400}"
fi
