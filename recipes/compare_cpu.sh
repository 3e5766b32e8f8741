#!/usr/bin/env bash
# The FSPO paper's comparison (arXiv 2509.09177) in real training on CPU: every method on the same task, with
# the same seeds, steps and batch geometry, through verl's real trainer (`fspo-verl train`, one run each), then
# the clip rate by response-length bin per method (fspo_verl.analysis.comparison).
#
#   recipes/compare_cpu.sh [extra overrides for every run...]
#
# Env (defaults in brackets):
#   METHODS      algorithm presets to compare            ["fspo gspo grpo sspo"]
#   SEEDS        one run per method and seed              ["1 2 3"]   (data.seed; actor_rollout_ref.rollout.seed follows it)
#   STEPS        trainer.total_training_steps per run     [40]
#   DATA         data preset                              [unset: the launcher's default, the demo task]
#   LENGTH_BINS  length_bins for every run, e.g. [8,16,32,64,128]  [unset: each preset's own; they must agree]
#   OUT          output folder                            [outputs/compare_cpu]
#   MIN_SEQS     bins with fewer sequences (all seeds and steps) stay out of the spread  [400]
#   FSPO_VERL_COMMAND=validate   compose and check every run's config in one process, launch nothing
# Runs one Hydra sweep over METHODS x SEEDS (fspo-verl train -m), each job in $OUT/runs/<method>_seed<k>/
# (metrics_0.jsonl, plots_0/, tensorboard/, config_0.yaml; see fspo_verl.cli.run_dir), then writes
# $OUT/{clip_rate_by_length.png,reward.png,comparison.json,comparison.md}. A run starts fresh each time (no
# checkpoints kept, no resume). The same sweep by hand:
#   fspo-verl train -m algorithm=fspo,gspo,grpo,sspo data.seed=1,2,3 trainer.total_training_steps=40 \
#     'actor_rollout_ref.rollout.seed=${data.seed}' trainer.save_freq=-1 hydra.sweep.dir=outputs/compare_cpu/runs
#   python -m fspo_verl.analysis.comparison --sweep outputs/compare_cpu/runs --out outputs/compare_cpu
set -euo pipefail

METHODS=${METHODS:-"fspo gspo grpo sspo"}
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-40}
OUT=$(mkdir -p "${OUT:-outputs/compare_cpu}" && cd "${OUT:-outputs/compare_cpu}" && pwd)
COMMAND=${FSPO_VERL_COMMAND:-train}
PYTHON=${PYTHON:-python}

comma() { echo "$*" | xargs | tr ' ' ','; }

# Single quotes keep ${...} for Hydra/OmegaConf to resolve per job (not for the shell):
# shellcheck disable=SC2016
OVERRIDES=(
  ${DATA:+data="${DATA}"}
  trainer.total_training_steps="${STEPS}"
  'actor_rollout_ref.rollout.seed=${data.seed}'
  trainer.save_freq=-1
  trainer.resume_mode=disable
  ${LENGTH_BINS:+++actor_rollout_ref.actor.policy_loss.length_bins="${LENGTH_BINS}"}
)

if [ "${COMMAND}" != train ]; then
  # compose and check every job of the sweep in one process (the sweep's driver runs the same checks before
  # launching); each job's resolved config goes to $OUT/runs/validate.txt after a "# job <n>: <overrides>" line
  mkdir -p "${OUT}/runs"
  fspo-verl "${COMMAND}" -m algorithm="$(comma "${METHODS}")" data.seed="$(comma "${SEEDS}")" "${OVERRIDES[@]}" "$@" \
    > "${OUT}/runs/validate.txt"
  exit 0
fi

# One Hydra sweep (fspo-verl train -m, the checked sweeper): every job is composed and checked in the driver
# before any starts; each runs in its own job directory $OUT/runs/<method>_seed<k>/ (metrics_0.jsonl, plots_0/,
# tensorboard/, config_0.yaml); $OUT/runs/jobs.json lists them, and the comparison reads it.
rm -rf "${OUT}/runs"
# shellcheck disable=SC2016  # hydra.sweep.subdir's ${...} are Hydra's, resolved per job
fspo-verl train -m algorithm="$(comma "${METHODS}")" data.seed="$(comma "${SEEDS}")" "${OVERRIDES[@]}" \
  hydra.sweep.dir="${OUT}/runs" 'hydra.sweep.subdir=${hydra:runtime.choices.algorithm}_seed${data.seed}' "$@"
"${PYTHON}" -m fspo_verl.analysis.comparison --sweep "${OUT}/runs" --out "${OUT}" --min-seqs "${MIN_SEQS:-400}"
