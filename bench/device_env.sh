# Sourced by the bench/device_proof*.sh scripts on the device machine: the carried wheels
# (textual, platformdirs, tomli-w: the image lacks them) and this checkout on the path.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OUT HF_HUB_DISABLE_PROGRESS_BARS=1
ROOT=/tmp/ckpt

# A profile with both real-size models on GPU 0 (UUID for one, index for the other), at $1.
write_two_model_profile() {
  cat > "$1" <<TOML
name = "two"
[[models]]
name = "chatglm3"
kind = "chatglm3"
path = "$ROOT/chatglm3-6b"
gpus = ["$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1)"]
max_context = 8192
[[models]]
name = "blip2"
kind = "blip2"
path = "$ROOT/blip2-opt-2.7b"
gpus = ["$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader | head -1)"]
dtype = "float16"
TOML
}

# The dashboard in tmux with both real-size models from a profile; its picture to $OUT/$1.
two_models_in_tmux() {
  write_two_model_profile /tmp/two.toml
  tmux kill-server 2>/dev/null
  tmux new-session -d -s g -x 150 -y 44 "env PYTHONPATH=$PYTHONPATH python3 -m gputui --profile /tmp/two.toml"
  for i in $(seq 1 90); do sleep 1; tmux capture-pane -p -t g | grep -q "blip2 .*ready" && break; done
  sleep 2; tmux capture-pane -p -t g > "$OUT/$1"; cat "$OUT/$1"
  tmux send-keys -t g q; sleep 3; tmux kill-server 2>/dev/null
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv
}
