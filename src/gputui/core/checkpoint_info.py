"""What a checkpoint directory holds, read from headers only (standard library, no torch).

The scheduler's preflight uses this to compute the exact weight bytes of a model before any
process or GPU memory is touched, and to reject a broken checkpoint (bad header, truncated
file, missing shard) up front rather than halfway through a load.

Everything here reads files another user may have crafted, so it validates by schema: every
malformed value (wrong type, negative or absurd size, NaN, holes or overlaps between tensors,
a FIFO or device where a file should be, JSON nested too deep) is a CheckpointError naming the
file and the field, never a TypeError, a hang, or a number the preflight would believe.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gputui.core import files

# Bits per element of every safetensors dtype (the format's own list; sub-byte ones pack).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "C64": 64, "F64": 64, "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}  # what a load casts to the dtype asked for
TARGET_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
MAX_JSON_BYTES = 64 << 20  # config.json and shard indexes are kilobytes; a bigger one is not ours
MAX_DIMS = 8


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
        return math.prod(self.shape)


def regular_file(path: Path, what: str = "") -> Path:
    """`path`, after checking it is a regular file (a FIFO would block a reader for ever; a
    device or folder is not a checkpoint file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: missing {what or path.name}") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file")
    return path


def open_regular(path: Path) -> BinaryIO:
    """Open for reading without ever blocking on a FIFO (core/files.py), as a CheckpointError."""
    try:
        return files.open_regular(path)
    except files.NotRegularFile as e:
        raise CheckpointError(str(e)) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None


def _loads(raw: bytes, path: Path, what: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: {what} is nested too deeply") from None


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON object file (config, shard index), validated as one."""
    with open_regular(path) as f:
        raw = f.read(MAX_JSON_BYTES + 1)
    if len(raw) > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: over {MAX_JSON_BYTES >> 20} MiB, too large for a config file")
    data = _loads(raw, path, "the file")
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (give the checkpoint's folder)")
    cfg = path / "config.json"
    if not cfg.exists():
        raise CheckpointError(f"{path}: no config.json, so this is not a model checkpoint folder")
    return read_json(cfg)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_safetensors_header(file: Path) -> list[TensorInfo]:
    """Parse one .safetensors header and check it as the format requires: every tensor inside
    the file, its byte range exactly its shape times its dtype, and the ranges tiling the data
    section with no hole and no overlap (a hole is bytes a loader would read that no preflight
    counted; an overlap is two tensors sharing memory)."""
    with open_regular(file) as f:
        size = os.fstat(f.fileno()).st_size
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise CheckpointError(f"{file}: truncated (no header)")
        (n,) = struct.unpack("<Q", raw_len)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{file}: bad safetensors header length {n}")
        header = _loads(f.read(n), file, "the safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: safetensors header is not a JSON object")
    data_size = size - 8 - n
    out = []
    for name, meta in header.items():
        if name == "__metadata__":
            if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                raise CheckpointError(f"{file}: __metadata__ must map names to strings")
            continue
        out.append(_tensor_info(file, name, meta, data_size))
    out.sort(key=lambda t: t.begin)
    at = 0
    for t in out:
        if t.begin != at:
            what = "overlaps the tensor before it" if t.begin < at else f"starts after a hole of {t.begin - at} bytes"
            raise CheckpointError(f"{file}: tensor {t.name!r} {what}")
        at = t.begin + t.nbytes
    if at != data_size:
        raise CheckpointError(f"{file}: {data_size - at} bytes after the last tensor belong to no tensor")
    return out


def _tensor_info(file: Path, name: str, meta: Any, data_size: int) -> TensorInfo:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{file}: tensor {name!r}: {why}")

    if not isinstance(meta, dict):
        raise bad("its entry is not an object")
    dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise bad(f"unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_whole(d) for d in shape):
        raise bad(f"shape must be a list of at most {MAX_DIMS} whole numbers >= 0")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(o) for o in offsets):
        raise bad("data_offsets must be two whole numbers >= 0")
    begin, end = offsets
    if begin > end:
        raise bad("data_offsets end before they begin")
    if end > data_size:
        raise bad("truncated: it ends past the end of the file")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        raise bad(f"shape {shape} of {dtype} does not match its byte range of {end - begin}")
    return TensorInfo(name, dtype, tuple(shape), file, end - begin, begin)


def weight_files(path: Path) -> tuple[str, list[Path]]:
    """("safetensors" | "bin", files), preferring safetensors; missing shards are an error."""
    for fmt, index_name in (("safetensors", "model.safetensors.index.json"), ("bin", "pytorch_model.bin.index.json")):
        index = path / index_name
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map or \
                    not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
                raise CheckpointError(f"{index}: weight_map must map tensor names to shard file names")
            files = sorted({path / f for f in weight_map.values()})
            for f in files:
                if Path(os.path.normpath(f)).parent != path:
                    raise CheckpointError(f"{index}: shard {f.name!r} is outside the checkpoint folder")
                regular_file(f, f"shard {f.name} listed in {index_name}")
            return fmt, files
    st = sorted(path.glob("*.safetensors"))
    if st:
        return "safetensors", [regular_file(f) for f in st]
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        return "bin", [regular_file(f) for f in bins]
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
    return sum(device_bytes(t, dtype) for t in tensor_infos(path))


def device_bytes(t: TensorInfo, dtype: str) -> int:
    """A tensor's bytes on the device: floating tensors are cast to `dtype`, the rest kept."""
    return t.numel * TARGET_BYTES[dtype] if t.dtype in FLOAT_DTYPES else t.nbytes
