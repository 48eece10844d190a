#!/usr/bin/env bash
# Session 3, final check of the submitted code: doctor, the split check, the scheduler proof
# (BLIP2 now through our loader), where ready time goes, and both models in tmux.
set -u
. bench/device_env.sh >/dev/null 2>&1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"
  python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model" | tail -3
  echo "== doctor"; python3 -m gputui doctor 2>&1 | tail -12
  echo "== split check"; python3 bench/split_check.py $ROOT 2>&1 | grep -v Warn
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT --quick
  echo "== ready breakdown"; python3 bench/ready_breakdown.py $ROOT
  echo "== dashboard"; two_models_in_tmux tmux_two_models.txt
} 2>&1 | tee "$OUT/proof14.log"
