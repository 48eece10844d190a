#!/usr/bin/env bash
# Session 2, fourth run: loader variants toward 20 GiB/s, and the dashboard in tmux with both
# real-size models from a profile (fused decode on, cuDNN attention off in the workers).
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  echo "== loader variants"; python3 bench/loader_variants.py $ROOT/chatglm3-6b
  write_two_model_profile /tmp/two.toml
  tmux kill-server 2>/dev/null
  tmux new-session -d -s g -x 150 -y 44 "env PYTHONPATH=$PYTHONPATH python3 -m gputui --profile /tmp/two.toml"
  for i in $(seq 1 90); do sleep 1; tmux capture-pane -p -t g | grep -q "blip2 .*ready" && break; done
  sleep 2; tmux capture-pane -p -t g > "$OUT/tmux_two_models.txt"; cat "$OUT/tmux_two_models.txt"
  tmux send-keys -t g q; sleep 3; tmux kill-server 2>/dev/null
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv
} 2>&1 | tee "$OUT/proof8.log"
