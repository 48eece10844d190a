#!/usr/bin/env bash
# Third device call: tmux dashboard, seed repro at several margins, loaders, decode compile,
# a profile applied with `gputui run`, steady-state command->ready.
set -u
. bench/device_env.sh
{
  echo "== tmux"; bash bench/tmux_proof.sh
  echo "== checkpoints"; [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT 2>&1 | grep -v "Writing model"
  write_two_model_profile /tmp/two.toml
  echo "== gputui run (dry run, then apply)"; python3 -m gputui run /tmp/two.toml --dry-run
  python3 -m gputui run /tmp/two.toml --exit --compare --save-as /tmp/saved.toml; cat /tmp/saved.toml
  echo "== ready time"; python3 bench/ready_time.py $ROOT
  echo "== loaders"; python3 bench/loader_bench.py $ROOT/chatglm3-6b
  echo "== seed repro"; python3 bench/gpu_probes.py seed $ROOT 64,100
  echo "== decode compile"; timeout 300 python3 bench/decode_compile.py $ROOT/chatglm3-6b
} 2>&1 | tee "$OUT/proof3.log"
