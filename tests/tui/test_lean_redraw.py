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
