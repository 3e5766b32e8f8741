#!/usr/bin/env bash
# GSPO baseline for the FSPO comparison: same model, data and budget as fspo_qwen3_8b_math.sh, with
# verl's built-in loss and the preset's paper settings (configs/algorithm/gspo.yaml).
set -euo pipefail
DATA_DIR=${DATA_DIR:-~/data/fspo_verl/math}

OVERRIDES=(
  algorithm=gspo
  model=qwen3_8b_base
  data=math
  cluster=8gpu
  data.train_files="${DATA_DIR}/train.parquet"
  "data.val_files=[${DATA_DIR}/math500.parquet,${DATA_DIR}/aime24.parquet,${DATA_DIR}/aime25.parquet]"
  data.train_batch_size=128
  data.max_response_length=4096
  actor_rollout_ref.rollout.n=8
  actor_rollout_ref.actor.ppo_mini_batch_size=32
  actor_rollout_ref.actor.optim.lr=1e-6
  trainer.total_training_steps=500
  trainer.test_freq=20
  trainer.project_name=fspo_verl
  trainer.experiment_name=gspo_qwen3_8b_math
)

exec fspo-verl train "${OVERRIDES[@]}" "$@"
