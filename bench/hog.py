#!/usr/bin/env python3
"""Fill a GPU the way another user's process would, for proofs and fault tests on the device.

python bench/hog.py --leave-mib 60 [--device 0] [--seconds 600]
Allocates with the CUDA driver API (no torch caching allocator), prints 'ready <free MiB>' and
holds the memory until killed.
"""

import argparse
import ctypes
import sys
import time


def start(leave_mib: int):  # type: ignore[no-untyped-def]
    """Start a hog in its own process; returns (process, free MiB it left). For the proofs."""
    import subprocess
    from pathlib import Path

    p = subprocess.Popen([sys.executable, str(Path(__file__)), "--leave-mib", str(leave_mib)],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline() if p.stdout else ""
    return p, int(line.split()[1]) if line.startswith("ready") else -1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leave-mib", type=int, required=True)
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=600)
    a = ap.parse_args()
    cuda = ctypes.CDLL("libcuda.so.1")

    def ok(r: int, what: str) -> None:
        if r != 0:
            sys.exit(f"{what} failed: CUresult {r}")

    ok(cuda.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    ok(cuda.cuDeviceGet(ctypes.byref(dev), a.device), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    ok(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "ctx")
    ok(cuda.cuCtxSetCurrent(ctx), "set ctx")
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    held = []
    chunk = 1 << 30
    while True:
        ok(cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "meminfo")
        want = free.value - (a.leave_mib << 20)
        if want <= 0:
            break
        size = min(chunk, want)
        p = ctypes.c_uint64()
        if cuda.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(size)) != 0:
            if chunk > (1 << 20):
                chunk //= 2
                continue
            break
        held.append(p)
    ok(cuda.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "meminfo")
    print(f"ready {free.value >> 20}", flush=True)
    time.sleep(a.seconds)


if __name__ == "__main__":
    main()
