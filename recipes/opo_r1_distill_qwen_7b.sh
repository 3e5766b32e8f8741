#!/usr/bin/env bash
# OPO reproduction (arXiv 2505.23585): DeepSeek-R1-Distill-Qwen-7B, K=8 responses per prompt, batch 1024
# responses (128 prompts x 8), trained exactly on-policy (one gradient step per batch; the preset and the
# driver check enforce it). Reported: AIME24 pass@1 68.5% (OPO) vs 67.96% (GRPO).
set -euo pipefail
DATA_DIR=${DATA_DIR:-~/data/fspo_verl/math}

OVERRIDES=(
  algorithm=opo
  model=deepseek_r1_distill_qwen_7b
  data=math
  cluster=8gpu
  data.train_files="${DATA_DIR}/train.parquet"
  "data.val_files=[${DATA_DIR}/aime24.parquet]"
  data.train_batch_size=128
  data.max_response_length=8192
  actor_rollout_ref.rollout.n=8
  actor_rollout_ref.actor.optim.lr=1e-6
  trainer.total_training_steps=300
  trainer.project_name=fspo_verl
  trainer.experiment_name=opo_r1_distill_qwen_7b
)

# FSPO_VERL_COMMAND=validate composes and checks these overrides without launching anything.
exec fspo-verl "${FSPO_VERL_COMMAND:-train}" "${OVERRIDES[@]}" "$@"
