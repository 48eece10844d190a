#!/usr/bin/env bash
# Session 2, fourth run: loader variants toward 20 GiB/s, and the dashboard in tmux with both
# real-size models from a profile (fused decode on, cuDNN attention off in the workers).
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  echo "== loader variants"; python3 bench/loader_variants.py $ROOT/chatglm3-6b
  two_models_in_tmux tmux_two_models.txt
} 2>&1 | tee "$OUT/proof8.log"
