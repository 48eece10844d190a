#!/usr/bin/env bash
# Session 2, last run: where command -> ready goes (weights read in the worker, Triton cold/warm).
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT --only chatglm3 2>&1 | grep -v "Writing model"
  python3 bench/ready_breakdown.py $ROOT
} 2>&1 | tee "$OUT/proof10.log"
