#!/usr/bin/env bash
# PODS reproduction (arXiv 2504.13818), single-GPU setting: Qwen2.5-3B-Instruct on GSM8K, generate n=64
# rollouts per prompt, train on the m=16 with maximal reward variance.
# Batch geometry: 16 prompts per step -> 1024 rollouts generated, 256 trained. ppo_mini_batch_size counts
# prompts x n, so one update per step is prompts_per_update * m / n = 16 * 16 / 64 = 4.
#   python recipes/data/prepare_gsm8k.py --out ~/data/fspo_verl/gsm8k
set -euo pipefail
DATA_DIR=${DATA_DIR:-~/data/fspo_verl/gsm8k}

OVERRIDES=(
  algorithm=pods
  model=qwen2_5_3b_instruct
  data=gsm8k
  cluster=1gpu
  data.train_files="${DATA_DIR}/train.parquet"
  data.val_files="${DATA_DIR}/test.parquet"
  data.train_batch_size=16
  actor_rollout_ref.actor.ppo_mini_batch_size=4
  actor_rollout_ref.actor.optim.lr=1e-6
  trainer.total_training_steps=300
  trainer.test_freq=10
  trainer.project_name=fspo_verl
  trainer.experiment_name=pods_64_16_qwen2_5_3b_gsm8k
)

# FSPO_VERL_COMMAND=validate composes and checks these overrides without launching anything.
exec fspo-verl "${FSPO_VERL_COMMAND:-train}" "${OVERRIDES[@]}" "$@"
