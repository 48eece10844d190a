"""The settings file: each key parsed and refused in one line, and each one acting where it
should (placement, keep-alive, refresh, theme), with `gputui config` showing what is in effect."""

from __future__ import annotations

import json

import pytest
import tomllib

from gputui.cli import main
from gputui.core.placement import PlacementRefused, choose_gpu
from gputui.core.settings import Settings, SettingsError, parse_settings, template
from gputui.core.units import GiB, MiB
from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.paths import settings_path


def parse(text: str) -> Settings:
    return parse_settings(tomllib.loads(text), "settings.toml")


def test_every_key_is_read() -> None:
    s = parse('refresh = 2\ntheme = "nord"\nkeep_alive = "10m"\nallow_shared = true\nreserve = "4GiB"\n'
              'never_touch = [3, "GPU-abc"]\n')
    assert s == Settings(refresh_s=2.0, theme="nord", keep_alive_s=600, allow_shared=True, reserve_bytes=4 * GiB,
                         never_touch=("3", "GPU-abc"))
    assert parse('keep_alive = "forever"').keep_alive_s is None
    assert parse("").policy().reserve_bytes == 0


def test_the_template_is_every_default() -> None:
    """`gputui config --init` writes the keys commented out; uncommenting any gives the default."""
    text = template()
    assert parse(text) == Settings()
    uncommented = "\n".join(line[2:] for line in text.splitlines()[1:])
    assert parse(uncommented) == Settings()


@pytest.mark.parametrize("text, key", [
    ("refesh = 1", "refesh"), ('refresh = "fast"', "refresh"), ("refresh = 0.001", "refresh"),
    ("refresh = nan", "refresh"), ("theme = 3", "theme"), ('keep_alive = "soon"', "keep_alive"),
    ('allow_shared = "yes"', "allow_shared"), ('reserve = "lots"', "reserve"), ("reserve = -1", "reserve"),
    ("never_touch = 0", "never_touch"), ("never_touch = [true]", "never_touch"),
])
def test_a_bad_value_names_its_key(text: str, key: str) -> None:
    with pytest.raises(SettingsError) as e:
        parse(text)
    assert str(e.value).startswith(f"settings.toml: {key}: ") and "\n" not in str(e.value)


def snapshot_with_a_neighbour():  # type: ignore[no-untyped-def]
    server = SimulatedServer(make_gpus(3, 10 * GiB))
    server.allocate(server.gpus[2].uuid, 777, 1 * GiB, "bob", "train.py")  # bob's, and the emptiest otherwise
    server.allocate(server.gpus[0].uuid, 778, 2 * GiB, "carol", "x")
    return server.snapshot()


def test_never_touch_keeps_auto_off_a_gpu_and_refuses_it_by_name() -> None:
    snap = snapshot_with_a_neighbour()
    free = Settings(allow_shared=True)
    assert choose_gpu(snap, 1 * GiB, policy=free.policy()).shares[0].index == 1
    avoid = Settings(allow_shared=True, never_touch=("1", snap.gpus[2].uuid))
    assert choose_gpu(snap, 1 * GiB, policy=avoid.policy()).shares[0].index == 0
    with pytest.raises(PlacementRefused, match="never_touch"):
        choose_gpu(snap, 1 * GiB, ["1"], policy=avoid.policy())


def test_reserve_is_left_free_and_said() -> None:
    snap = SimulatedServer(make_gpus(1, 10 * GiB)).snapshot()
    assert choose_gpu(snap, 9 * GiB, ["0"], policy=Settings().policy())
    with pytest.raises(PlacementRefused, match="4.0 GiB reserve for others"):
        choose_gpu(snap, 9 * GiB, ["0"], policy=Settings(reserve_bytes=4 * GiB).policy())


def test_a_refusal_over_shared_gpus_names_the_setting_that_allows_them() -> None:
    server = SimulatedServer(make_gpus(1, 10 * GiB))
    server.allocate(server.gpus[0].uuid, 777, 100 * MiB, "bob", "train.py")
    with pytest.raises(PlacementRefused) as e:
        choose_gpu(server.snapshot(), 1 * GiB, policy=Settings().policy())
    assert "allow_shared = true" in str(e.value) and "gputui config" in str(e.value)
    assert choose_gpu(server.snapshot(), 1 * GiB, policy=Settings(allow_shared=True).policy())


def test_gputui_config_prints_the_path_and_the_values_in_effect(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["path"] == str(settings_path()) and doc["exists"] is False and doc["settings"]["refresh_s"] == 0.5
    assert main(["config", "--init"]) == 0
    assert settings_path().stat().st_mode & 0o077 == 0
    settings_path().write_text('reserve = "512MiB"\nkeep_alive = "2h"\n')
    capsys.readouterr()
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert str(settings_path()) in out and 'keep_alive = "7200s"' in out and 'reserve = "512MiB"' in out
    assert main(["config", "--init"]) == 2  # never overwrites the user's file
    assert "exists already" in capsys.readouterr().err
    settings_path().write_text("refresh = [\n")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid TOML" in err


def test_the_local_scheduler_takes_its_policy_from_the_settings() -> None:
    from gputui.cli.common import local_client
    from gputui.hardware.simulated import demo_server

    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text('reserve = "1GiB"\nnever_touch = [1]\nkeep_alive = "5m"\n')
    client = local_client(demo_server())
    scheduler = client.scheduler
    assert scheduler.policy.reserve_bytes == GiB and scheduler.policy.never_touch == ("1",)
    assert scheduler.default_keep_alive_s == 300


async def test_the_theme_setting_reaches_the_dashboard_and_a_wrong_one_is_said() -> None:
    from gputui.hardware.simulated import demo_server
    from gputui.tui.app import make_app

    app = make_app(demo_server(), interval=0.05, theme="nord")
    async with app.run_test(size=(100, 30)):
        assert app.theme == "nord"
    app = make_app(demo_server(), interval=0.05, theme="no-such-theme")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert app.theme == "textual-dark"
        assert any("no-such-theme" in str(n.message) for n in app._notifications)


def test_a_fifo_where_the_settings_or_a_profile_should_be_is_refused_not_waited_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Opening a FIFO for reading waits for a writer for ever: the dashboard's `l` (which reads
    every profile) and every command (which reads the settings) would hang."""
    import os

    from gputui.core.profiles import ProfileError, load_profile
    from gputui.core.settings import load_settings_file

    os.mkfifo(tmp_path / "trap.toml")
    with pytest.raises(ProfileError, match="not a regular file"):
        load_profile(tmp_path / "trap.toml", check_paths=False)
    os.mkfifo(tmp_path / "settings.toml")
    with pytest.raises(SettingsError, match="not a regular file"):
        load_settings_file(tmp_path / "settings.toml")


def test_api_load_names_one_profile_or_several() -> None:
    assert parse('api_load = "demo"\n').api_load == ("demo",)
    assert parse('api_load = ["demo", "mine"]\n').api_load == ("demo", "mine")
    assert parse('api_load = ""\n').api_load == ()
    with pytest.raises(SettingsError, match="api_load"):
        parse('api_load = ["demo", "a b"]\n')
    lines = parse('api_load = ["demo", "mine"]\n').to_toml_lines()
    assert 'api_load = ["demo", "mine"]' in lines


def test_several_api_load_profiles_make_one_list_the_first_name_winning() -> None:
    import logging

    from gputui.cli.server import _loadable
    from gputui.core.profiles import Profile
    from gputui.core.requests import ModelRequest

    a = Profile("a", (ModelRequest("glm", "chatglm3", "demo:chatglm3"),))
    b = Profile("b", (ModelRequest("glm", "blip2", "demo:blip2"), ModelRequest("cap", "blip2", "demo:blip2")))
    merged = _loadable([a, b], logging.getLogger("test"))
    assert [(m.name, m.kind) for m in merged.models] == [("glm", "chatglm3"), ("cap", "blip2")]
    assert _loadable([], logging.getLogger("test")) is None
