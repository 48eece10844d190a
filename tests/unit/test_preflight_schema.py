"""Preflight validates a checkpoint by schema (hostile-server issue, item 7).

Each case damages a copy of the tiny ChatGLM3 (or BLIP2) checkpoint the way a crafted or
broken one would, and the preflight must refuse it with a CheckpointError naming the file and
the field: not a TypeError that leaves the model at "preflight" for ever, not a hang on a FIFO,
not a number it believes ("needs nan MiB", a negative need, holes a loader would fill).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from gputui.core.checkpoint_info import CheckpointError, read_safetensors_header
from gputui.core.kinds import kind_named, preflight_costs
from gputui.core.requests import ModelRequest
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.scheduler import Scheduler
from gputui.scheduler.timeline import Timeline
from tests.fakes.fake_worker import FakeLauncher


def set_config(**values: object) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        for k, v in values.items():
            if v is KeyError:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        (folder / "config.json").write_text(json.dumps(cfg))
    return damage


def raw_config(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "config.json").write_text(text)


def first_shard(folder: Path) -> Path:
    return sorted(folder.glob("*.safetensors"))[0]


def rewrite_header(edit: Callable[[dict], None], extra_bytes: int = 0) -> Callable[[Path], None]:
    """Change the first shard's header (keeping the data), optionally adding trailing bytes."""
    def damage(folder: Path) -> None:
        f = first_shard(folder)
        raw = f.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        edit(header)
        new = json.dumps(header).encode()
        f.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:] + b"\0" * extra_bytes)
    return damage


def first_tensor(header: dict) -> dict:
    name = min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    return header[name]


def second_tensor(header: dict) -> dict:
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    return header[names[1]]


def index_map(value: object) -> Callable[[Path], None]:
    return lambda folder: (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": value}))


def fifo_at(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        target = first_shard(folder) if name == "shard" else folder / name
        target.unlink()
        os.mkfifo(target)
    return damage


def overlap(h: dict) -> None:
    second_tensor(h)["data_offsets"][0] -= 4
    second_tensor(h)["shape"] = [second_tensor(h)["data_offsets"][1] - second_tensor(h)["data_offsets"][0]]
    second_tensor(h)["dtype"] = "U8"


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    # config.json: what the estimator multiplies
    "missing num_attention_heads": (set_config(num_attention_heads=KeyError), "num_attention_heads is missing"),
    "zero heads": (set_config(num_attention_heads=0), "num_attention_heads must be a whole number"),
    "a size as a string": (set_config(hidden_size="64"), "hidden_size must be a whole number"),
    "a negative vocabulary": (set_config(padded_vocab_size=-1e9), "padded_vocab_size must be"),
    "NaN": (raw_config('{"model_type": "chatglm", "num_layers": NaN}'), "num_layers must be"),
    "a flag that is text": (set_config(multi_query_attention="yes"), "multi_query_attention must be true or false"),
    "model_type a list": (set_config(model_type=["chatglm"]), "not chatglm3"),
    "config nested 200k deep": (raw_config("[" * 200_000), "nested too deeply"),
    "config is a FIFO": (fifo_at("config.json"), "not a regular file"),
    # safetensors headers: what the loader would allocate
    "dtype as a list": (rewrite_header(lambda h: first_tensor(h).update(dtype=["F32"])), "unknown dtype"),
    "offsets as strings": (rewrite_header(lambda h: first_tensor(h).update(data_offsets=["0", "8"])), "data_offsets must be"),
    "offsets null": (rewrite_header(lambda h: first_tensor(h).update(data_offsets=None)), "data_offsets must be"),
    "a negative dimension": (rewrite_header(lambda h: first_tensor(h).update(shape=[-1, 4])), "shape must be"),
    "a float dimension": (rewrite_header(lambda h: first_tensor(h).update(shape=[2.5])), "shape must be"),
    "an absurd shape": (rewrite_header(lambda h: first_tensor(h).update(shape=[1 << 40, 1 << 40])), "does not match"),
    "overlapping tensors": (rewrite_header(overlap), "overlaps"),
    "a hole between tensors": (rewrite_header(lambda h: None, extra_bytes=3_200_000), "belong to no tensor"),
    "metadata not strings": (rewrite_header(lambda h: h.update(__metadata__={"format": 1})), "__metadata__"),
    "a shard that is a FIFO": (fifo_at("shard"), "not a regular file"),
    # the shard index
    "weight_map a list": (index_map(["a"]), "weight_map must map"),
    "weight_map values ints": (index_map({"x": 1}), "weight_map must map"),
    "a shard outside the folder": (index_map({"x": "../model.safetensors"}), "outside the checkpoint folder"),
    # the tokenizer
    "garbage tokenizer.model": (lambda f: (f / "tokenizer.model").write_bytes(b"\xff\xfegarbage"), "tokenizer.model"),
    "no tokenizer.model": (lambda f: (f / "tokenizer.model").unlink(), "missing tokenizer.model"),
}


@pytest.fixture
def broken(tiny_chatglm3_path: Path, tmp_path: Path) -> Callable[[str], Path]:
    def make(case: str) -> Path:
        folder = tmp_path / "model"
        shutil.copytree(tiny_chatglm3_path, folder)
        CASES[case][0](folder)
        return folder
    return make


@pytest.mark.timeout(60)  # a FIFO must never block the preflight: fail, do not hang the suite
@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_checkpoint_is_one_error_naming_file_and_field(case: str, broken: Callable[[str], Path]) -> None:
    folder = broken(case)
    with pytest.raises(CheckpointError) as e:
        preflight_costs(kind_named("chatglm3"), folder, "bfloat16", 256, ("auto",))
    text = str(e.value)
    assert CASES[case][1] in text and str(folder) in text and "\n" not in text


async def test_the_scheduler_refuses_it_and_goes_on(broken: Callable[[str], Path], tiny_chatglm3_path: Path) -> None:
    """In the TUI a type error used to leave the model at "preflight" for ever."""
    server = SimulatedServer(make_gpus(1))
    sched = Scheduler(server, FakeLauncher(server), timeline=Timeline())
    bad = await sched.load(ModelRequest("bad", "chatglm3", str(broken("a size as a string"))))
    assert bad.state == "failed" and "hidden_size must be a whole number" in (bad.error or "")
    good = await sched.load(ModelRequest("good", "chatglm3", str(tiny_chatglm3_path), max_context=256))
    assert good.state == "ready"
    await sched.close()


def test_blip2_sub_configs_are_checked(tiny_blip2_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    shutil.copytree(tiny_blip2_path, folder)
    for value, expect in (([1, 2], "text_config must be an object"), ({"hidden_size": "big"}, "text_config.hidden_size")):
        set_config(text_config=value)(folder)
        with pytest.raises(CheckpointError, match=expect):
            preflight_costs(kind_named("blip2"), folder, "float16", None, ("auto",))


def test_every_safetensors_dtype_is_understood(tmp_path: Path) -> None:
    """The header reader used to refuse valid files with U16/U32/U64/F8_E8M0/C64 tensors."""
    tensors = {"u16": ("U16", [3], 6), "u32": ("U32", [2], 8), "u64": ("U64", [1], 8), "e8m0": ("F8_E8M0", [5], 5),
               "c64": ("C64", [1], 8), "f4": ("F4", [4], 2)}
    header, at = {}, 0
    for name, (dtype, shape, n) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}
        at += n
    raw = json.dumps(header).encode()
    f = tmp_path / "all.safetensors"
    f.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * at)
    assert {t.name: t.nbytes for t in read_safetensors_header(f)} == {k: v[2] for k, v in tensors.items()}
