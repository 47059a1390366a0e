"""Registration, finishing, leaving, event validation and the ``apply`` dispatcher."""

from __future__ import annotations

from typing import Any

import pytest

from peer.pieces import PieceLayout
from scheduler.core import (
    ConflictError,
    HostAnnounced,
    InvalidEventError,
    PeerFailed,
    PeerFinished,
    PeerLeft,
    PeerRegistered,
    PeerState,
    PieceReport,
    PiecesReported,
    SchedulerError,
    SchedulerSettings,
)
from tests.unit.scheduler.swarm import PIECE_BYTES, PIECES, TASK, Swarm, check_invariants


@pytest.mark.parametrize("size_bytes", [0, 1, PIECE_BYTES - 1, PIECE_BYTES, 10 * PIECE_BYTES + 1])
def test_piece_count_agrees_with_the_peer_piece_layout(size_bytes: int) -> None:
    swarm = Swarm()
    swarm.host("h")
    swarm.state.register_peer(PeerRegistered("p", TASK, "h", size_bytes, PIECE_BYTES), 0.0)
    assert swarm.state.tasks[TASK].piece_count == PieceLayout(size_bytes, PIECE_BYTES).count


def test_registration_is_idempotent_and_merges_pieces() -> None:
    swarm = Swarm()
    swarm.peer("p", pieces=[0])
    swarm.peer("p", "h-p", pieces=[1])
    peer = swarm.state.peers["p"]
    assert peer.finished_piece_count == 2
    assert peer.task.availability[:3] == [1, 1, 0]
    check_invariants(swarm.state)


def test_registering_with_every_piece_makes_a_finished_peer() -> None:
    swarm = Swarm()
    peer = swarm.full("p")
    assert peer.state is PeerState.SUCCEEDED


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host_id": "h-other"}, "already registered on host"),
        ({"task_id": "sha256:" + "cd" * 32}, "already registered on host"),
        ({"size_bytes": 3 * PIECE_BYTES}, "is 33554432 bytes in pieces of"),
    ],
)
def test_conflicting_registrations_are_refused(change: dict[str, Any], message: str) -> None:
    swarm = Swarm()
    swarm.peer("p")
    swarm.host("h-other")
    fields: dict[str, Any] = {
        "peer_id": "p",
        "task_id": TASK,
        "host_id": "h-p",
        "size_bytes": PIECES * PIECE_BYTES,
        "piece_bytes": PIECE_BYTES,
    }
    with pytest.raises(ConflictError, match=message):
        swarm.state.register_peer(PeerRegistered(**{**fields, **change}), 0.0)


def test_a_second_peer_with_another_task_size_is_refused() -> None:
    swarm = Swarm()
    swarm.peer("p")
    with pytest.raises(ConflictError):
        swarm.peer("q", piece_count=PIECES + 1)


def test_finishing_fills_the_pieces_and_drops_the_parents() -> None:
    swarm = Swarm()
    swarm.full("x")
    swarm.peer("c")
    swarm.schedule("c")
    swarm.state.apply(PeerFinished("c"), swarm.now)
    child = swarm.state.peers["c"]
    assert child.state is PeerState.SUCCEEDED
    assert child.is_complete
    assert child.parents == {}
    assert swarm.state.hosts["h-x"].children_count == 0
    assert child.task.availability == [2] * PIECES
    check_invariants(swarm.state)


@pytest.mark.parametrize("event_type", [PeerFailed, PeerLeft])
def test_a_peer_that_fails_or_leaves_takes_its_pieces_and_edges(event_type: type) -> None:
    swarm = Swarm()
    swarm.full("x")
    swarm.peer("c")
    swarm.peer("d")
    swarm.schedule("c")
    swarm.report("c", "x", [0])
    swarm.schedule("d")
    removal = swarm.state.apply(event_type("x"), swarm.now)
    assert removal is not None
    assert removal.removed_peer_ids == ("x",)
    assert set(removal.orphaned_peer_ids) == {"c", "d"}
    task = swarm.state.tasks[TASK]
    assert task.availability == [1] + [0] * (PIECES - 1)
    assert "x" not in task.holders
    check_invariants(swarm.state)


def test_the_last_peer_leaving_forgets_the_task() -> None:
    swarm = Swarm()
    swarm.peer("p")
    swarm.state.remove_peer("p")
    assert swarm.state.tasks == {}


def _host(**change: Any) -> HostAnnounced:
    fields: dict[str, Any] = {
        "host_id": "h",
        "address": "10.0.0.1",
        "piece_port": 65002,
        "upload_capacity_bps": 1.0,
        "download_capacity_bps": 1.0,
        "upload_slots": 1,
    }
    return HostAnnounced(**{**fields, **change})


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: _host(host_id=""), "host_id"),
        (lambda: _host(address=""), "address"),
        (lambda: _host(piece_port=0), "piece_port"),
        (lambda: _host(piece_port=70000), "piece_port"),
        (lambda: _host(upload_capacity_bps=-1.0), "upload_capacity_bps"),
        (lambda: _host(upload_capacity_bps=float("nan")), "upload_capacity_bps"),
        (lambda: _host(upload_slots=-1), "upload_slots"),
        (lambda: PeerRegistered("", TASK, "h", 1, 1), "peer_id"),
        (lambda: PeerRegistered("p", TASK, "h", -1, 1), "size_bytes"),
        (lambda: PeerRegistered("p", TASK, "h", 1, 0), "piece_bytes"),
        (lambda: PeerRegistered("p", TASK, "h", 8, 4, frozenset({2})), "pieces"),
        (lambda: PieceReport(-1, None, 1, 1.0), "piece_index"),
        (lambda: PieceReport(0, "", 1, 1.0), "parent_id"),
        (lambda: PieceReport(0, None, -1, 1.0), "size_bytes"),
        (lambda: PieceReport(0, None, 1, float("inf")), "cost_s"),
        (lambda: PiecesReported("", ()), "peer_id"),
    ],
)
def test_invalid_events_name_the_bad_field(make: Any, field: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        make()
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, SchedulerError)


@pytest.mark.parametrize(
    "change",
    [
        {"candidate_sample_size": 0},
        {"parents_per_decision": 0},
        {"piece_cost_window": 1},
        {"back_to_source_quota": -1},
        {"back_to_source_after_retries": 0},
        {"retry_delay_s": -0.1},
        {"seed_wait_s": -1},
        {"bad_parent_ttl_s": float("nan")},
    ],
)
def test_settings_reject_impossible_values(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SchedulerSettings(**change)


def test_parents_per_decision_caps_the_answer() -> None:
    swarm = Swarm(SchedulerSettings(parents_per_decision=2))
    for name in "vwxyz":
        swarm.full(name)
    swarm.peer("c")
    decision = swarm.schedule("c")
    assert len(decision.parents) == 2  # type: ignore[union-attr]


def test_candidate_sample_size_caps_what_is_looked_at() -> None:
    swarm = Swarm(SchedulerSettings(candidate_sample_size=3, parents_per_decision=10))
    for i in range(20):
        swarm.peer(f"x{i}", pieces=[0])  # not complete, so there is no top-up sample
    swarm.peer("c")
    decision = swarm.schedule("c")
    assert len(decision.parents) + len(decision.rejected) == 3  # type: ignore[union-attr]


def test_task_spread_counts_normal_holders_per_piece() -> None:
    swarm = Swarm()
    swarm.full("seed", seed=True)
    swarm.peer("a", pieces=[0, 1])
    swarm.peer("b", pieces=[1])
    task = swarm.state.peers["a"].task.task_id
    assert swarm.state.task_spread(task) == [1, 2] + [0] * (PIECES - 2)
    swarm.state.remove_peer("b")
    assert swarm.state.task_spread(task) == [1, 1] + [0] * (PIECES - 2)
    assert swarm.state.task_spread("sha256:" + "00" * 32) == []
