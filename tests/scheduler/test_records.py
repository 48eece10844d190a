"""The model table: a state moves only along the transition table, and the one place that sets a
state writes its timeline record and announces the change, in that order."""

from __future__ import annotations

import itertools

import pytest

from gputui.api.views import ModelState
from gputui.core.requests import ModelRequest
from gputui.scheduler.records import TRANSITIONS, IllegalTransition, ModelRecord, ModelTable
from gputui.scheduler.timeline import Timeline


def record(state: ModelState) -> ModelRecord:
    return ModelRecord(ModelRequest("glm", "chatglm3", "/m"), state=state)


@pytest.mark.parametrize(("src", "dst"), [(a, b) for a, b in itertools.product(ModelState, ModelState) if a != b])
def test_a_state_moves_only_along_the_table(src: ModelState, dst: ModelState) -> None:
    table = ModelTable(Timeline())
    rec = record(src)
    table.models[rec.name] = rec
    if dst in TRANSITIONS[src]:
        table.to(rec, dst)
        assert rec.state == dst and rec.stage == dst.value
    else:
        with pytest.raises(IllegalTransition, match=f"{src.value} -> {dst.value}"):
            table.to(rec, dst)
        assert rec.state == src  # unchanged


def test_the_table_has_a_way_on_from_every_state_and_ready_only_through_loading() -> None:
    assert set(TRANSITIONS) == set(ModelState)
    assert all(TRANSITIONS[s] for s in ModelState)
    assert [s for s in ModelState if ModelState.READY in TRANSITIONS[s]] == [ModelState.LOADING]


def test_a_state_its_record_and_the_clients_event_come_from_one_call() -> None:
    timeline = Timeline()
    table = ModelTable(timeline)
    rec = record(ModelState.LOADING)
    table.models[rec.name] = rec
    seen = []
    table.subscribe(lambda view: seen.append((view.state, view.stage)))
    table.to(rec, ModelState.READY, record={"pid": 7})
    table.stage(rec, "moving: loading_weights")  # a stage is not a state: no record
    assert seen == [(ModelState.READY, "ready"), (ModelState.READY, "moving: loading_weights")]
    events = [(e.type, e.data.get("state") or e.data.get("event")) for e in table.events._ring]
    assert events == [("model", "ready"), ("timeline", "ready"), ("model", "ready")]
    assert [r["event"] for r in timeline.events if r.get("model") == "glm"] == ["ready"]
