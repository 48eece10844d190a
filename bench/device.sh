#!/usr/bin/env bash
# The device machine's entry: the carried wheels (the image lacks textual, platformdirs,
# tomli-w: `../shared/tools/device-wheels textual platformdirs tomli-w` fills .whl/), this
# checkout on the path, the real-size checkpoints (made once per machine), then the suites.
#   device run: bash bench/device.sh ready decode blip2     (carry .whl)
# JSON lines to $OUT/bench-SUITES.jsonl, everything else to $OUT/bench-SUITES.log.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1
name=$(echo "$*" | tr ' ' '-')
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -m bench "$@" --root /tmp/ckpt > >(tee "$OUT/bench-$name.jsonl") 2> >(grep -v "Writing model" > "$OUT/bench-$name.log")
