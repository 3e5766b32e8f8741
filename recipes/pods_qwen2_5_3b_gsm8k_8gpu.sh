#!/usr/bin/env bash
# PODS reproduction (arXiv 2504.13818), eight-GPU setting: n=128 rollouts, keep m=32 by max variance.
# 64 prompts per step; one update per step: ppo_mini_batch_size = 64 * 32 / 128 = 16.
set -euo pipefail
DATA_DIR=${DATA_DIR:-~/data/fspo_verl/gsm8k}

OVERRIDES=(
  algorithm=pods_128_32
  model=qwen2_5_3b_instruct
  data=gsm8k
  cluster=8gpu
  data.train_files="${DATA_DIR}/train.parquet"
  data.val_files="${DATA_DIR}/test.parquet"
  data.train_batch_size=64
  actor_rollout_ref.actor.ppo_mini_batch_size=16
  actor_rollout_ref.actor.optim.lr=1e-6
  trainer.total_training_steps=300
  trainer.test_freq=10
  trainer.project_name=fspo_verl
  trainer.experiment_name=pods_128_32_qwen2_5_3b_gsm8k
)

# FSPO_VERL_COMMAND=validate composes and checks these overrides without launching anything.
exec fspo-verl "${FSPO_VERL_COMMAND:-train}" "${OVERRIDES[@]}" "$@"
