#!/usr/bin/env bash
# The CPU demo: FSPO on a tiny local Qwen2-style model and a synthetic verifiable task, through verl's real
# V1 trainer on CPU (Ray, TransferQueue, FSDP2 over gloo, the embedded `hf` rollout). Nothing is downloaded.
# Extra Hydra overrides pass through, e.g.:  recipes/cpu_demo.sh downsampling=pods trainer.total_training_steps=5
set -euo pipefail

OVERRIDES=(
  algorithm=fspo
  model=tiny_cpu
  data=countdown_cpu
  cluster=cpu
)

# FSPO_VERL_COMMAND=validate composes and checks these overrides without launching anything.
exec fspo-verl "${FSPO_VERL_COMMAND:-train}" "${OVERRIDES[@]}" "$@"
