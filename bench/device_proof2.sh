#!/usr/bin/env bash
# Second device call: checkpoints, scheduler proof, faults, seed repro, dashboard on the GPU.
set -u
. bench/device_env.sh
{
  echo "== checkpoints"; [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT
  echo "== blip2 speed"; python3 bench/blip2_speed.py $ROOT/blip2-opt-2.7b 2>&1 | grep variant
  echo "== fault proof"; python3 bench/fault_proof.py $ROOT
  echo "== seed repro"; python3 bench/gpu_probes.py seed $ROOT
  echo "== doctor"; python3 -m gputui doctor
  echo "== tui"; python3 bench/tui_gpu_proof.py
  echo "== refresh bench (real GPU)"; python3 bench/refresh_bench.py --real --seconds 5
  which tmux || echo "no tmux on the device"
} 2>&1 | tee "$OUT/proof2.log"
