#!/usr/bin/env bash
# Session 2: the Triton kernels compiled on parallel threads: first load with a cold cache, twice.
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT --only chatglm3 2>&1 | grep -v "Writing model"
  python3 bench/ready_breakdown.py $ROOT --cold-twice
} 2>&1 | tee "$OUT/proof11.log"
