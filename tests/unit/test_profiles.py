"""Placement profiles: every bad file is one clear error naming file and line; saves are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gputui.core.profiles import (
    Profile,
    ProfileError,
    dump_profile,
    load_profile,
    parse_profile,
    save_profile,
)
from gputui.core.requests import ModelRequest

DATA = Path(__file__).parent.parent / "data" / "profiles"


@pytest.mark.parametrize("name,line,words", [
    ("unknown_key.toml", 6, "unknown key 'colour'"),
    ("wrong_type.toml", 6, "max_context must be a whole number"),
    ("missing_path.toml", 5, "does not exist"),
    ("duplicate_names.toml", 8, "duplicate model name 'glm'"),
    ("invalid_toml.toml", 2, "invalid TOML"),
    ("unknown_kind.toml", 4, "unknown kind 'llava'"),
    ("no_models.toml", None, "at least one [[models]]"),
    ("bad_gpus.toml", 6, "gpus must be a list"),
    ("nan_temperature.toml", 7, "temperature must be a number"),
    ("zero_top_p.toml", 7, "top_p must be above 0"),
    ("infinite_tokens.toml", 7, "max_new_tokens must be a number"),
])
def test_each_bad_profile_gives_one_clear_error(name: str, line: int | None, words: str) -> None:
    with pytest.raises(ProfileError) as e:
        load_profile(DATA / name)
    msg = str(e.value)
    assert "\n" not in msg and words in msg
    assert msg.startswith(f"{DATA / name}:{line}:" if line else f"{DATA / name}:")


def test_shipped_profiles_parse() -> None:
    shipped = Path(__file__).parents[2] / "profiles"
    names = {load_profile(p, check_paths=False).name for p in shipped.glob("*.toml")}
    assert {"demo", "blip2-chatglm3-one-gpu", "blip2-chatglm3-two-gpus"} <= names


def test_relative_paths_are_taken_from_the_profile_folder(tmp_path: Path) -> None:
    (tmp_path / "models" / "glm").mkdir(parents=True)
    f = tmp_path / "p.toml"
    f.write_text('name = "p"\n[[models]]\nname = "glm"\nkind = "chatglm3"\npath = "models/glm"\n')
    assert load_profile(f).models[0].path == str((tmp_path / "models" / "glm").resolve())


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "huge.toml"
    f.write_text("# x\n" * 100_000)
    with pytest.raises(ProfileError, match="too large"):
        load_profile(f)


def test_save_is_atomic_and_keeps_a_backup(tmp_path: Path) -> None:
    target = tmp_path / "mine.toml"
    p1 = Profile("one", (ModelRequest("glm", "chatglm3", "demo:chatglm3"),))
    p2 = Profile("two", (ModelRequest("glm", "chatglm3", "demo:chatglm3", ("GPU-x",), gpu_index_hint=1),))
    save_profile(p1, target)
    save_profile(p2, target)
    assert load_profile(target).name == "two"
    assert load_profile(target.with_name("mine.toml.bak")).name == "one"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
entries = st.builds(
    ModelRequest,
    name=names,
    kind=st.sampled_from(["chatglm3", "blip2"]),
    path=st.sampled_from(["demo:chatglm3", "demo:blip2"]),
    gpus=st.lists(st.one_of(st.just("auto"), st.from_regex(r"GPU-[0-9a-f]{8}", fullmatch=True), st.sampled_from(["0", "1"])),
                  min_size=1, max_size=2).map(tuple),
    gpu_index_hint=st.one_of(st.none(), st.integers(0, 7)),
    dtype=st.one_of(st.none(), st.sampled_from(["float32", "float16", "bfloat16"])),
    max_context=st.one_of(st.none(), st.integers(16, 131072)),
    generation=st.fixed_dictionaries({}, optional={"max_new_tokens": st.integers(1, 4096),
                                                    "temperature": st.floats(0, 2, allow_nan=False),
                                                    "top_p": st.floats(0.01, 1)}),
)


@settings(max_examples=200, deadline=None)
@given(name=names, models=st.lists(entries, min_size=1, max_size=4, unique_by=lambda m: m.name),
       description=st.text(max_size=40))
def test_save_then_load_round_trips_any_valid_profile(name: str, models: list[ModelRequest], description: str) -> None:
    p = Profile(name, tuple(models), description)
    back = parse_profile(dump_profile(p), check_paths=False)
    assert back.name == p.name and back.models == p.models and back.description == p.description


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text_never_crashes_the_parser(text: str) -> None:
    try:
        parse_profile(text, "fuzz.toml", check_paths=False)
    except ProfileError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.toml")


def test_toml_nested_200k_deep_is_one_error_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 200_000)
    with pytest.raises(ProfileError, match="nested too deeply|invalid TOML"):
        load_profile(path)


def test_max_batch_is_for_a_kind_that_batches() -> None:
    base = 'name = "p"\n[[models]]\nname = "m"\nkind = "{kind}"\npath = "demo:{kind}"\nmax_batch = {n}\n'
    p = parse_profile(base.format(kind="chatglm3", n=8), check_paths=False)
    assert p.models[0].max_batch == 8
    assert parse_profile(dump_profile(p), check_paths=False).models == p.models  # saved and read back
    with pytest.raises(ProfileError, match="blip2 answers one request at a time; max_batch is for chatglm3"):
        parse_profile(base.format(kind="blip2", n=2), check_paths=False)
    for bad in ("0", "257", "true", '"8"'):
        with pytest.raises(ProfileError, match="max_batch must be a whole number"):
            parse_profile(base.format(kind="chatglm3", n=bad), check_paths=False)


def test_the_preflight_counts_a_kv_cache_per_slot(tiny_chatglm3_path: Path, tiny_blip2_path: Path) -> None:
    from gputui.core.kinds import estimate, kind_named

    glm = kind_named("chatglm3")
    one, four = (estimate(glm, tiny_chatglm3_path, "bfloat16", 256, slots) for slots in (None, 4))
    assert four.kv_cache_bytes == 4 * one.kv_cache_bytes > 0
    assert four.total_bytes - one.total_bytes == 3 * one.kv_cache_bytes
    blip = kind_named("blip2")
    assert estimate(blip, tiny_blip2_path, "float16", 64, 4) == estimate(blip, tiny_blip2_path, "float16", 64)


def test_a_model_without_kind_takes_the_one_its_folder_names(tiny_chatglm3_path: Path, tmp_path: Path) -> None:
    text = f'name = "p"\n[[models]]\nname = "m"\npath = "{tiny_chatglm3_path}"\n'
    assert parse_profile(text).models[0].kind == "chatglm3"
    assert parse_profile('name = "p"\n[[models]]\nname = "m"\npath = "demo:blip2"\n').models[0].kind == "blip2"
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ProfileError, match="no kind given, and none found: .*model_type 't5' is not one gputui runs"):
        parse_profile(f'name = "p"\n[[models]]\nname = "m"\npath = "{tmp_path}"\n')
