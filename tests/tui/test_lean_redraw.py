"""An idle dashboard writes next to nothing to the terminal (issue 20): a GPU line is repainted
only when what it says changed."""

from __future__ import annotations

import dataclasses

from textual.app import App, ComposeResult

from gputui.hardware.simulated import SimulatedServer, make_gpus
from gputui.tui.widgets.gpu_table import GpuTable
from gputui.tui.widgets.lean import LeanStatic


class One(App[None]):
    def compose(self) -> ComposeResult:
        yield GpuTable()


async def test_only_the_gpu_line_that_changed_is_repainted(monkeypatch) -> None:  # noqa: ANN001
    updates: list[str] = []
    real = LeanStatic.update

    def counted(self, content="", **kw):  # noqa: ANN001, ANN202
        updates.append(str(content))
        return real(self, content, **kw)

    monkeypatch.setattr(LeanStatic, "update", counted)
    snap = SimulatedServer(make_gpus(3)).snapshot()
    app = One()
    async with app.run_test(size=(100, 10)) as pilot:
        table = app.query_one(GpuTable)
        table.show(snap)
        await pilot.pause()
        assert len(updates) == 4  # the header and three GPUs
        assert "GPU" in table.text() and table.text().count("GiB") >= 3
        updates.clear()
        table.show(snap)  # the same numbers again: nothing is repainted
        await pilot.pause()
        assert updates == []
        busy = dataclasses.replace(snap.gpus[1], util_percent=77)
        table.show(dataclasses.replace(snap, gpus=[snap.gpus[0], busy, snap.gpus[2]]))
        await pilot.pause()
        assert len(updates) == 1 and "77%" in updates[0]


async def test_a_new_power_reading_repaints_only_the_power(monkeypatch) -> None:  # noqa: ANN001
    from gputui.tui.widgets.gpu_panel import GpuPanel

    snap = SimulatedServer(make_gpus(1)).snapshot()
    g = dataclasses.replace(snap.gpus[0], power_w=123.2, power_limit_w=700.0, util_percent=0, temperature_c=39)

    class Panel(App[None]):
        def compose(self) -> ComposeResult:
            yield GpuPanel(g, id="gpu-0")

    updates: list[tuple[str, bool]] = []
    real = LeanStatic.update

    def counted(self, content="", **kw):  # noqa: ANN001, ANN202
        updates.append((str(self.id), bool(kw.get("layout"))))
        return real(self, content, **kw)

    app = Panel()
    async with app.run_test(size=(120, 20)) as pilot:
        panel = app.query_one(GpuPanel)
        for _ in range(3):  # the history line's first samples are drawn at once; then every 10 s
            panel.show(g)
            await pilot.pause()
        monkeypatch.setattr(LeanStatic, "update", counted)
        panel.show(dataclasses.replace(g, power_w=123.4))  # the same watts on the screen
        await pilot.pause()
        assert updates == []
        panel.show(dataclasses.replace(g, power_w=125.0))
        await pilot.pause()
        assert updates == [("power", False)]
        assert "125 W / 700 W" in str(app.query_one("#power", LeanStatic).render())
