"""What a checkpoint directory holds, read from headers only (standard library, no torch).

The scheduler's preflight uses this to compute the exact weight bytes of a model before any
process or GPU memory is touched, and to reject a broken checkpoint (bad header, truncated
file, missing shard) up front rather than halfway through a load.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bytes per element of safetensors dtypes.
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
TARGET_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit


class CheckpointError(ValueError):
    """The checkpoint is broken or is not what it was said to be; the message names the file."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    nbytes: int
    begin: int = 0  # offset of the tensor's bytes within the file's data section

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_config(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (give the checkpoint's folder)")
    if not cfg.is_file():
        raise CheckpointError(f"{path}: no config.json, so this is not a model checkpoint folder")
    try:
        data = json.loads(cfg.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg}: expected a JSON object")
    return data


def read_safetensors_header(file: Path) -> list[TensorInfo]:
    """Parse one .safetensors header and check every tensor lies inside the file."""
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{file}: truncated (no header)")
            (n,) = struct.unpack("<Q", raw_len)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(f"{file}: bad safetensors header length {n}")
            header = json.loads(f.read(n))
    except OSError as e:
        raise CheckpointError(f"{file}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{file}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: safetensors header is not a JSON object")
    data_size = size - 8 - n
    out = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file}: malformed entry for tensor {name!r}") from None
        if dtype not in DTYPE_BYTES:
            raise CheckpointError(f"{file}: tensor {name!r} has unknown dtype {dtype}")
        info = TensorInfo(name, dtype, shape, file, end - start, start)
        if info.numel * DTYPE_BYTES[dtype] != end - start or not 0 <= start <= end:
            raise CheckpointError(f"{file}: tensor {name!r} shape {list(shape)} does not match its byte range")
        if end > data_size:
            raise CheckpointError(f"{file}: truncated: tensor {name!r} ends past the end of the file")
        out.append(info)
    return out


def weight_files(path: Path) -> tuple[str, list[Path]]:
    """("safetensors" | "bin", files), preferring safetensors; missing shards are an error."""
    for fmt, index_name in (("safetensors", "model.safetensors.index.json"), ("bin", "pytorch_model.bin.index.json")):
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text("utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CheckpointError(f"{index}: not a valid shard index") from None
            files = sorted({path / f for f in weight_map.values()})
            for f in files:
                if Path(os.path.normpath(f)).parent != path or not f.is_file():
                    raise CheckpointError(f"{path}: missing shard {f.name} listed in {index_name}")
            return fmt, files
    st = sorted(path.glob("*.safetensors"))
    if st:
        return "safetensors", st
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        return "bin", bins
    raise CheckpointError(f"{path}: no weights found (*.safetensors or pytorch_model*.bin)")


def tensor_infos(path: Path) -> list[TensorInfo]:
    """Every tensor of a safetensors checkpoint, from headers only."""
    fmt, files = weight_files(path)
    if fmt != "safetensors":
        raise CheckpointError(f"{path}: .bin checkpoint has no readable header")
    return [t for f in files for t in read_safetensors_header(f)]


def weight_bytes(path: Path, dtype: str) -> int:
    """Exact bytes the weights take on the device once cast to `dtype`.

    Floating tensors take the target dtype's size; integer buffers keep theirs. For a .bin
    checkpoint (no header to read without unpickling) the file sizes are the estimate.
    """
    fmt, files = weight_files(path)
    if fmt == "bin":
        return sum(f.stat().st_size for f in files)
    per = TARGET_BYTES[dtype]
    total = 0
    for t in tensor_infos(path):
        total += t.numel * (per if t.dtype in FLOAT_DTYPES else DTYPE_BYTES[t.dtype])
    return total
