#!/usr/bin/env bash
# Session 2, last run: the scheduler proof with the one-pool loader (weights stage in the
# worker, ready time with and without the spare, pageable loader for comparison).
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT
  echo "== loader"; python3 bench/loader_variants.py $ROOT/chatglm3-6b 2>&1 | head -2
} 2>&1 | tee "$OUT/proof9.log"
