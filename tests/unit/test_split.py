"""Spreading one model's layers over the GPUs a user listed: the pure planner, the placement
that uses it, and the costs read from a real checkpoint's headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from gputui.core.checkpoint_info import CheckpointError, weight_bytes
from gputui.core.kinds import estimate, kind_named, split_costs
from gputui.core.placement import PlacementPolicy, PlacementRefused, choose_gpu
from gputui.core.snapshot import GpuSnapshot, ServerSnapshot
from gputui.core.split import SplitCosts, SplitRefused, split_layers
from gputui.core.units import GiB, MiB

LAYER = 400 * MiB
COSTS = SplitCosts(layer_bytes=(LAYER,) * 28, first_bytes=1 * GiB, last_bytes=1 * GiB, per_gpu_bytes=1 * GiB)


def fits(costs: SplitCosts, usable: list[int], ranges: list[range]) -> bool:
    n = len(usable)
    return all(costs.need(i, n, r) <= usable[i] for i, r in enumerate(ranges))


@pytest.mark.parametrize("usable_gib,expect", [
    ([20, 20], [14, 14]),  # equal GPUs: half each
    ([12, 24], [9, 19]),  # room after fixed costs 10 : 22 GiB -> 8.75 : 19.25 layers
    ([40, 8], [24, 4]),  # 38 : 6 GiB -> 24.2 : 3.8
    ([10, 10, 10], [9, 10, 9]),  # the middle GPU has no embedding or head to hold
])
def test_layers_go_out_in_proportion_to_each_gpus_room(usable_gib: list[int], expect: list[int]) -> None:
    usable = [g * GiB for g in usable_gib]
    ranges = split_layers(COSTS, usable, [f"GPU {i}" for i in range(len(usable))])
    assert [len(r) for r in ranges] == expect
    assert ranges[0].start == 0 and ranges[-1].stop == 28
    assert all(a.stop == b.start for a, b in zip(ranges, ranges[1:], strict=False))  # contiguous, in order
    assert fits(COSTS, usable, ranges)


def test_a_tight_fit_is_found_when_the_proportional_share_would_not_fit() -> None:
    """Room for exactly all layers: the planner must not leave the last GPU over-full."""
    room = 28 * LAYER
    a = 1 * GiB + 1 * GiB + 20 * LAYER  # context + embedding + 20 layers
    b = room - 20 * LAYER + 1 * GiB + 1 * GiB
    ranges = split_layers(COSTS, [a, b], ["GPU 0", "GPU 1"])
    assert [len(r) for r in ranges] == [20, 8] and fits(COSTS, [a, b], ranges)


def test_a_gpu_with_room_for_no_layer_is_named() -> None:
    with pytest.raises(SplitRefused, match=r"^GPU 1 has room for no layer: 1\.2 GiB usable"):
        split_layers(COSTS, [30 * GiB, int(1.2 * GiB)], ["GPU 0", "GPU 1"])


def test_too_little_memory_in_all_says_how_much_is_needed() -> None:
    with pytest.raises(SplitRefused) as e:
        split_layers(COSTS, [6 * GiB, 6 * GiB], ["GPU 0", "GPU 1"])
    msg = str(e.value)
    assert "GPU 0 + GPU 1" in msg and "needs 14.9 GiB in all" in msg and "12.0 GiB usable" in msg


def test_more_gpus_than_layers_is_refused() -> None:
    costs = SplitCosts((LAYER,) * 2, 0, 0, 0)
    with pytest.raises(SplitRefused, match="2 layers, fewer than the 3 GPUs"):
        split_layers(costs, [GiB] * 3, ["a", "b", "c"])


def gpu(i: int, free_gib: float) -> GpuSnapshot:
    return GpuSnapshot(i, f"GPU-{i:04d}", f"0000:{i:02x}:00.0", "H100", total_bytes=80 * GiB,
                       used_bytes=int((80 - free_gib) * GiB), free_bytes=int(free_gib * GiB))


def snapshot(*free: float) -> ServerSnapshot:
    return ServerSnapshot(taken_at=0.0, backend="test", gpus=tuple(gpu(i, f) for i, f in enumerate(free)))


POLICY = PlacementPolicy(margin_bytes=0)


def test_several_gpus_named_give_a_split_placement_in_the_order_listed() -> None:
    p = choose_gpu(snapshot(40, 8, 20), COSTS.total_bytes, ("GPU-0002", "0000:01:00.0"), POLICY, set(), COSTS)
    assert p.split and p.label == "2+1" and p.uuids == ["GPU-0002", "GPU-0001"]
    assert [s.layers for s in p.shares] == [(0, 21), (21, 28)]  # room 18 : 6 GiB -> 21 : 7 layers
    assert p.layer_split() == [[0, 21], [21, 28]]
    for s in p.shares:
        assert s.need_bytes <= s.usable_bytes
        assert p.need_on(s.uuid) == s.need_bytes
    assert sum(s.need_bytes for s in p.shares) == COSTS.total_bytes + COSTS.per_gpu_bytes


def test_a_split_that_does_not_fit_names_the_short_gpu_and_one_that_would_hold_it_all() -> None:
    with pytest.raises(PlacementRefused, match=r"^GPU 1 has room for no layer: 1\.0 GiB usable.*$") as e:
        choose_gpu(snapshot(10, 1), COSTS.total_bytes, ("0", "1"), POLICY, set(), COSTS)
    assert "would fit" not in str(e.value)
    with pytest.raises(PlacementRefused, match=r"^GPU 1 has room for no layer.*; GPU 2 \(GPU-0002\) would fit it alone$"):
        choose_gpu(snapshot(10, 1, 40), COSTS.total_bytes, ("0", "1"), POLICY, set(), COSTS)


def test_a_gpu_listed_twice_is_refused() -> None:
    with pytest.raises(PlacementRefused, match=r"GPU 'GPU-0000' is listed twice .*name each GPU once"):
        choose_gpu(snapshot(40, 40), COSTS.total_bytes, ("0", "GPU-0000"), POLICY, set(), COSTS)


def test_several_gpus_for_a_model_that_cannot_split_is_refused() -> None:
    with pytest.raises(PlacementRefused, match="runs on one GPU; name one of 0, 1"):
        choose_gpu(snapshot(40, 40), COSTS.total_bytes, ("0", "1"), POLICY, set(), None)


def test_split_costs_of_a_real_checkpoint_add_up_to_its_estimate(tiny_chatglm3_path: Path) -> None:
    kind = kind_named("chatglm3")
    costs = split_costs(kind, tiny_chatglm3_path, "float32", 64)
    est = estimate(kind, tiny_chatglm3_path, "float32", 64)
    assert len(costs.layer_bytes) == 2  # the tiny model's layers
    assert costs.total_bytes == est.total_bytes
    weights = sum(costs.layer_bytes) - est.kv_cache_bytes + costs.first_bytes + costs.last_bytes
    assert weights == weight_bytes(tiny_chatglm3_path, "float32")
    assert costs.first_bytes > 0 and costs.last_bytes > 0  # the embedding; norm and head


def test_blip2_cannot_be_split(tiny_blip2_path: Path) -> None:
    with pytest.raises(CheckpointError, match="blip2 models run on one GPU"):
        split_costs(kind_named("blip2"), tiny_blip2_path, "float32")


def test_a_split_over_two_cluster_nodes_is_refused_and_one_nodes_gpus_are_labelled_with_it() -> None:
    """One worker holds all of a split model's layers, so its GPUs must share a node."""
    from dataclasses import replace

    snap = snapshot(40, 40, 40)
    snap = replace(snap, gpus=tuple(replace(g, host="node-a" if g.index < 2 else "node-b") for g in snap.gpus))
    with pytest.raises(PlacementRefused, match=r"on different nodes \(node-a, node-b\); a split model needs one node"):
        choose_gpu(snap, COSTS.total_bytes, ("1", "2"), POLICY, set(), COSTS)
    p = choose_gpu(snap, COSTS.total_bytes, ("0", "1"), POLICY, set(), COSTS)
    assert [s.label for s in p.shares] == ["node-a:0", "node-a:1"]
