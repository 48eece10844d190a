#!/usr/bin/env bash
# Session 2, final check of the submitted code: doctor (fast-decode check), both models in
# the dashboard in tmux, and the scheduler proof.
set -u
. bench/device_env.sh
{
  [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  echo "== doctor"; python3 -m gputui doctor 2>&1 | tail -12
  echo "== dashboard"; two_models_in_tmux tmux_two_models.txt
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT --quick
} 2>&1 | tee "$OUT/proof12.log"
