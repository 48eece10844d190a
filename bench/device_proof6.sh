#!/usr/bin/env bash
# Session 2, second run: fused step vs a float32 reference, BLIP2's slow first answer, and
# command -> ready with a cold and then a warm Triton cache.
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  echo "== fused decode"; TRITON_CACHE_DIR=/tmp/tc-bench python3 bench/fused_decode.py $ROOT/chatglm3-6b
  echo "== blip2 first answer"; python3 bench/blip2_first_call.py $ROOT/blip2-opt-2.7b
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT --quick
} 2>&1 | tee "$OUT/proof6.log"
