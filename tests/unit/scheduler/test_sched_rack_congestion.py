"""Congested rack uplinks (scheduler.core.rack_flow): keep a rack's parents inside it.

Once a rack's peers report pieces from other racks' normal peers much slower than from
rack-mates, the scheduler stops handing them normal peers of other racks while a
rack-mate or a seed peer will do. No setting is needed; ``rack_congestion_ratio: 0``
turns it off.
"""

from __future__ import annotations

import pytest

from scheduler.core import FilterReason, Parents, SchedulerSettings
from scheduler.core.rack_flow import RackFlows
from tests.unit.scheduler.swarm import PIECE_BYTES, Swarm, check_invariants

R1 = ("", "r1")


def _parents(decision: object) -> list[str]:
    assert isinstance(decision, Parents), decision
    return sorted(p.peer_id for p in decision.parents)


def _other_rack_rejections(decision: object) -> set[str]:
    assert isinstance(decision, Parents)
    return {r.peer_id for r in decision.rejected if r.reason is FilterReason.OTHER_RACK}


def _flows(cross_s: float, inside_s: float, pieces: int, ratio: float = 2.0) -> RackFlows:
    flows = RackFlows()
    for _ in range(pieces):
        flows.record(R1, False, PIECE_BYTES, cross_s, ratio, 5)
        flows.record(R1, True, PIECE_BYTES, inside_s, ratio, 5)
    return flows


def test_congested_once_cross_rack_pieces_are_ratio_times_slower_over_enough_pieces() -> None:
    assert _flows(cross_s=3.0, inside_s=1.0, pieces=5).congested == {R1}
    assert not _flows(cross_s=3.0, inside_s=1.0, pieces=4).congested
    assert not _flows(cross_s=1.5, inside_s=1.0, pieces=5).congested
    assert not _flows(cross_s=3.0, inside_s=1.0, pieces=5, ratio=0.0).congested  # off


def test_it_clears_when_cross_rack_pieces_speed_up_again() -> None:
    flows = _flows(cross_s=4.0, inside_s=1.0, pieces=5)
    assert flows.congested == {R1}
    # A few fast pieces do not flip it (the averages span about twenty pieces)...
    for _ in range(3):
        flows.record(R1, False, PIECE_BYTES, 1.0, 2.0, 5)
    assert flows.congested == {R1}
    # ...a run of them does.
    for _ in range(40):
        flows.record(R1, False, PIECE_BYTES, 1.0, 2.0, 5)
    assert not flows.congested


def test_pieces_without_a_cost_or_bytes_teach_nothing() -> None:
    flows = RackFlows()
    for _ in range(5):
        flows.record(R1, False, PIECE_BYTES, 0.0, 1.0, 1)
        flows.record(R1, True, 0, 1.0, 1.0, 1)
    flows.record(R1, True, PIECE_BYTES, 1.0, 1.0, 1)
    assert not flows.congested


def _congested_swarm(settings: SchedulerSettings | None = None) -> Swarm:
    """Rack r1: ``mate`` got pieces 0-5 from ``far`` (rack r2) at 4 s each, ``helper``
    got them from ``mate`` at 1 s each; ``child`` (r1) has nothing yet."""
    swarm = Swarm(settings)
    swarm.full("far", rack="r2")
    swarm.peer("mate", rack="r1")
    swarm.peer("helper", rack="r1")
    swarm.peer("child", rack="r1")
    swarm.report("mate", "far", range(6), cost_s=4.0)
    swarm.report("helper", "mate", range(6), cost_s=1.0)
    return swarm


def test_a_congested_racks_peers_take_rack_mates_while_any_will_do() -> None:
    swarm = _congested_swarm()
    assert swarm.state.rack_flows.congested == {R1}
    decision = swarm.schedule("child")
    assert _parents(decision) == ["helper", "mate"]
    assert _other_rack_rejections(decision) == {"far"}
    check_invariants(swarm.state)


def test_other_racks_still_serve_when_no_rack_mate_will_do() -> None:
    swarm = _congested_swarm()
    swarm.peer("ahead", rack="r1", pieces=range(6))  # r1 holds nothing it lacks
    assert _parents(swarm.schedule("ahead")) == ["far"]


def test_seed_peers_count_as_inside_every_rack() -> None:
    swarm = _congested_swarm()
    swarm.full("seed", rack="seeds", seed=True)
    assert _parents(swarm.schedule("child")) == ["helper", "mate", "seed"]


@pytest.mark.parametrize(
    "settings",
    [SchedulerSettings(rack_congestion_ratio=0.0), SchedulerSettings(rack_congestion_ratio=8.0)],
)
def test_off_or_below_the_ratio_other_racks_compete_as_before(settings: SchedulerSettings) -> None:
    swarm = _congested_swarm(settings)
    assert _parents(swarm.schedule("child")) == ["far", "helper", "mate"]


def test_pieces_from_seed_peers_say_nothing_about_the_uplink() -> None:
    swarm = Swarm()
    swarm.full("seed", rack="seeds", seed=True)
    swarm.peer("a", rack="r1")
    swarm.peer("b", rack="r1")
    swarm.report("a", "seed", range(8), cost_s=8.0)
    swarm.report("b", "a", range(8), cost_s=1.0)
    assert not swarm.state.rack_flows.congested


def test_a_bad_ratio_fails_at_start() -> None:
    with pytest.raises(ValueError, match="rack_congestion_ratio"):
        SchedulerSettings(rack_congestion_ratio=0.5)
