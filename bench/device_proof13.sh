#!/usr/bin/env bash
# Session 3: a split ChatGLM3 on one GPU (gpu+cpu and gpu+gpu), the scheduler proof again
# (nothing regressed), and where the weight load's time goes now that the ring is pinned ahead.
set -u
. bench/device_env.sh
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"
  python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model" | tail -3
  echo "== split check"; python3 bench/split_check.py $ROOT
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT --quick
  echo "== ready breakdown"; python3 bench/ready_breakdown.py $ROOT
} 2>&1 | tee "$OUT/proof13.log"
