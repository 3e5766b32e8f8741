#!/usr/bin/env bash
# FSPO reproduction (arXiv 2509.09177) and its baselines under one budget: Qwen3-8B-Base trained on MATH,
# validated on MATH-500, AIME24 and AIME25, on one 8-GPU node.
#   recipes/qwen3_8b_math.sh [fspo|sspo|grpo|gspo] [extra overrides...]      (default: fspo)
# The paper's exact hyperparameters are not public: group size, batch, learning rate and lengths below are
# our choices for a comparable run, identical for every algorithm; each algorithm's own settings come
# from its preset (configs/algorithm/<name>.yaml). Prepare data first:
#   python recipes/data/prepare_math.py --out ~/data/fspo_verl/math
# Env: DATA_DIR (default ~/data/fspo_verl/math); FSPO_VERL_COMMAND=validate to check without launching.
set -euo pipefail
ALGORITHM=fspo
case "${1:-}" in fspo|sspo|grpo|gspo) ALGORITHM=$1; shift ;; esac
DATA_DIR=${DATA_DIR:-~/data/fspo_verl/math}

OVERRIDES=(
  algorithm="${ALGORITHM}"
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
  trainer.save_freq=50
  trainer.project_name=fspo_verl
  trainer.experiment_name="${ALGORITHM}_qwen3_8b_math"
  "trainer.logger=[console,tensorboard]"
)

exec fspo-verl "${FSPO_VERL_COMMAND:-train}" "${OVERRIDES[@]}" "$@"
