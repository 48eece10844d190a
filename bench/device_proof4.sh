#!/usr/bin/env bash
# Final device check of the submitted code: scheduler proof, and the dashboard in tmux with both
# real-size models loaded from a profile (our workers marked, predicted vs measured memory).
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  two_models_in_tmux tmux_two_models.txt
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT 2>&1 | grep -v '"step": "ready_time_variant"'
} 2>&1 | tee "$OUT/proof4.log"
