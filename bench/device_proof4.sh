#!/usr/bin/env bash
# Final device check of the submitted code: scheduler proof, and the dashboard in tmux with both
# real-size models loaded from a profile (our workers marked, predicted vs measured memory).
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  write_two_model_profile /tmp/two.toml
  tmux kill-server 2>/dev/null
  tmux new-session -d -s g -x 150 -y 44 "env PYTHONPATH=$PYTHONPATH python3 -m gputui --profile /tmp/two.toml"
  for i in $(seq 1 60); do sleep 1; tmux capture-pane -p -t g | grep -q "blip2 .*ready" && break; done
  sleep 2; tmux capture-pane -p -t g > "$OUT/tmux_two_models.txt"; cat "$OUT/tmux_two_models.txt"
  tmux send-keys -t g q; sleep 3; tmux kill-server 2>/dev/null
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT 2>&1 | grep -v '"step": "ready_time_variant"'
} 2>&1 | tee "$OUT/proof4.log"
