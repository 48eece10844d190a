#!/usr/bin/env bash
# Session 2 device run: the fused decode step (agreement, speed, kernels), move by handover vs
# reload, and the scheduler proof with the fused step on by default (cold Triton cache first).
set -u
. bench/device_env.sh
{
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  echo "== fused decode (own Triton cache)"; TRITON_CACHE_DIR=/tmp/tc-bench python3 bench/fused_decode.py $ROOT/chatglm3-6b
  echo "== move: handover vs reload"; python3 bench/move_handover.py $ROOT/chatglm3-6b
  echo "== scheduler proof (default Triton cache, cold)"; python3 bench/scheduler_proof.py $ROOT --quick
  echo "== blip2 in-process"; python3 bench/blip2_speed.py $ROOT/blip2-opt-2.7b
} 2>&1 | tee "$OUT/proof5.log"
