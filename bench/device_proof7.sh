#!/usr/bin/env bash
# Session 2, third run: scheduler proof after the fixes (BLIP2's first answer, ready time with
# a cold then warm Triton cache, worker UUID vs NVML), then the GPU fault cases 1 3 5 16 19.
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT --quick
  echo "== fault proof"; python3 bench/fault_proof.py $ROOT
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv
} 2>&1 | tee "$OUT/proof7.log"
