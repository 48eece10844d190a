#!/usr/bin/env bash
# One device call: install carried wheels, write real-size checkpoints, run every proof.
# Usage on the device: bash bench/device_proof.sh   (results under $OUT)
set -u
. bench/device_env.sh
{
  echo "== versions"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  echo "== status vs nvidia-smi"
  python3 -m gputui status --json > "$OUT/status.json"; nvidia-smi --query-gpu=index,uuid,pci.bus_id,memory.used,memory.total --format=csv > "$OUT/smi.csv"
  python3 - <<'PY'
import json, os
out = os.environ["OUT"]
doc = json.load(open(f"{out}/status.json"))
rows = [l.split(", ") for l in open(f"{out}/smi.csv").read().strip().splitlines()[1:]]
for g, r in zip(doc["gpus"], rows):
    print("gputui", g["index"], g["uuid"], g["pci_bus_id"], g["memory"]["used_bytes"] >> 20, g["memory"]["total_bytes"] >> 20)
    print("smi   ", *r)
PY
  echo "== context probe"; python3 bench/gpu_probes.py context
  echo "== cublas threshold"; python3 bench/gpu_probes.py cublas
  echo "== checkpoints"; [ -d $ROOT/chatglm3-6b ] || python3 bench/make_checkpoints.py $ROOT
  du -sh $ROOT/*
  echo "== seed repro"; python3 bench/gpu_probes.py seed $ROOT
  echo "== scheduler proof"; python3 bench/scheduler_proof.py $ROOT
} 2>&1 | tee "$OUT/proof.log"
