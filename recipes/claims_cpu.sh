#!/usr/bin/env bash
# Each down-sampling / baseline paper's headline claim, checked in real training on CPU: every variant on the
# demo task (data=countdown_cpu), same seeds, same number of optimizer updates and the same prompts, through
# verl's real trainer (`fspo-verl train`, one sweep over seeds per variant), then one table per claim
# (fspo_verl.analysis.claims). docs/claims.md gives the figures this recipe made and what they show.
#
#   recipes/claims_cpu.sh [pods|gfpo|opo|all] [extra overrides for every run...]
#
# Claims and variants (16 prompts x n=16 samples a step, two optimizer updates of 8 prompts each):
#   pods (arXiv 2504.13818): grpo trains on all n=16; pods_max_variance / pods_random / pods_max_reward
#        generate n=16 and train on m=4 per prompt, chosen by the rule (the paper's n:m is 4:1, 64:16); their
#        mini-batch holds 8 prompts' 4 kept samples = 32, so the micro-batch is 16 (one per data-parallel rank)
#   gfpo (arXiv 2508.09726): grpo; gfpo_token_efficiency / gfpo_shortest keep m=8 of n=16
#   opo  (arXiv 2505.23585): grpo (16 prompts a step, 2 updates: the second is off-policy); opo and
#        grpo_on_policy take 8 prompts a step, 1 update (exact on-policy), for twice the steps: the same
#        updates and the same prompts as grpo
# Env (defaults in brackets):
#   SEEDS   one run per variant and seed                 ["1 2 3"]  (data.seed; the rollout seed follows it)
#   STEPS   trainer steps of the 2-update variants        [20]       (opo, grpo_on_policy: 2 x STEPS)
#   OUT     output folder                                 [outputs/claims_cpu]
#   FSPO_VERL_COMMAND=validate   compose and check every variant's sweep in one process, launch nothing
# Writes $OUT/runs/<variant>/seed<k>/ (one fspo-verl run directory each), then $OUT/<claim>.{md,json,png}.
# A variant whose runs already finished (status_0.json "ok" for every seed) is not run again, so an
# interrupted recipe resumes at the first unfinished variant; delete $OUT/runs/<variant> to re-run one.
set -euo pipefail

CLAIM=${1:-all}
case "${CLAIM}" in pods | gfpo | opo | all) shift || true ;; *) CLAIM=all ;; esac
SEEDS=${SEEDS:-"1 2 3"}
STEPS=${STEPS:-20}
OUT=$(mkdir -p "${OUT:-outputs/claims_cpu}" && cd "${OUT:-outputs/claims_cpu}" && pwd)
COMMAND=${FSPO_VERL_COMMAND:-train}
PYTHON=${PYTHON:-python}
SAMPLER=trainer.v1.sampler.sampler_kwargs

# variant -> its overrides (the shared ones are below)
variant_overrides() {
  case "$1" in
    grpo) echo "algorithm=grpo trainer.total_training_steps=${STEPS}" ;;
    pods_max_variance) echo "algorithm=pods actor_rollout_ref.rollout.n=16 ${SAMPLER}.keep=4 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 ${SAMPLER}.rule=max_variance trainer.total_training_steps=${STEPS}" ;;
    pods_random) echo "algorithm=pods actor_rollout_ref.rollout.n=16 ${SAMPLER}.keep=4 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 ${SAMPLER}.rule=random trainer.total_training_steps=${STEPS}" ;;
    pods_max_reward) echo "algorithm=pods actor_rollout_ref.rollout.n=16 ${SAMPLER}.keep=4 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 ${SAMPLER}.rule=max_reward trainer.total_training_steps=${STEPS}" ;;
    gfpo_token_efficiency) echo "algorithm=gfpo actor_rollout_ref.rollout.n=16 ${SAMPLER}.keep=8 ${SAMPLER}.rule=token_efficiency trainer.total_training_steps=${STEPS}" ;;
    gfpo_shortest) echo "algorithm=gfpo actor_rollout_ref.rollout.n=16 ${SAMPLER}.keep=8 ${SAMPLER}.rule=shortest trainer.total_training_steps=${STEPS}" ;;
    grpo_on_policy) echo "algorithm=grpo data.train_batch_size=8 trainer.total_training_steps=$((2 * STEPS))" ;;
    opo) echo "algorithm=opo actor_rollout_ref.rollout.n=16 data.train_batch_size=8 trainer.total_training_steps=$((2 * STEPS))" ;;
  esac
}
claim_variants() {
  case "$1" in
    pods) echo "grpo pods_max_variance pods_random pods_max_reward" ;;
    gfpo) echo "grpo gfpo_token_efficiency gfpo_shortest" ;;
    opo) echo "grpo grpo_on_policy opo" ;;
  esac
}
CLAIMS=${CLAIM}
[ "${CLAIM}" = all ] && CLAIMS="pods gfpo opo"
VARIANTS=$(for c in ${CLAIMS}; do claim_variants "$c"; done | tr ' ' '\n' | awk 'NF && !seen[$0]++' | xargs)

# Single quotes keep ${...} for Hydra/OmegaConf to resolve per job (not for the shell):
# shellcheck disable=SC2016
SHARED=(
  'actor_rollout_ref.rollout.seed=${data.seed}'
  trainer.save_freq=-1
  trainer.resume_mode=disable
  'trainer.test_freq=${trainer.total_training_steps}'
)

finished() {  # every seed of variant $1 ended with status ok
  local seed
  for seed in ${SEEDS}; do
    grep -qs '"status": "ok"' "${OUT}/runs/$1/seed${seed}/status_0.json" || return 1
  done
}

SEED_LIST=$(echo "${SEEDS}" | xargs | tr ' ' ',')
mkdir -p "${OUT}/runs"
if [ "${COMMAND}" != train ]; then
  # every variant's sweep composed and checked in one process (fspo-verl validate --jobs: one sweep a line)
  for variant in ${VARIANTS}; do
    echo "$(variant_overrides "${variant}") data.seed=${SEED_LIST}"
  done | fspo-verl "${COMMAND}" --jobs - "${SHARED[@]}" "$@"
  exit 0
fi
for variant in ${VARIANTS}; do
  # shellcheck disable=SC2207
  overrides=($(variant_overrides "${variant}"))
  if finished "${variant}"; then
    echo "claims_cpu: ${variant} already finished in ${OUT}/runs/${variant}; skipped" >&2
    continue
  fi
  rm -rf "${OUT}/runs/${variant}"
  # shellcheck disable=SC2016  # hydra.sweep.subdir's ${...} is Hydra's, resolved per job
  fspo-verl train -m "${overrides[@]}" data.seed="${SEED_LIST}" "${SHARED[@]}" \
    hydra.sweep.dir="${OUT}/runs/${variant}" 'hydra.sweep.subdir=seed${data.seed}' "$@"
done

for c in ${CLAIMS}; do
  read -ra claim_runs <<< "$(claim_variants "${c}")"
  "${PYTHON}" -m fspo_verl.analysis.claims --claim "${c}" --runs "${OUT}/runs" --out "${OUT}" \
    --variants "${claim_runs[@]}"
done
