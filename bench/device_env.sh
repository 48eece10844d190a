# Sourced by the bench/device_proof*.sh scripts on the device machine: the carried wheels
# (textual, platformdirs, tomli-w: the image lacks them) and this checkout on the path.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 OUT HF_HUB_DISABLE_PROGRESS_BARS=1
ROOT=/tmp/ckpt
