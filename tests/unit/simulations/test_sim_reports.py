"""Simulated peers report their pieces in batches, as peer.reporter does, and lose none."""

from __future__ import annotations

from typing import Any

from peer.reporter import REPORT_BATCH, REPORT_INTERVAL_S
from scheduler.core import PiecesReported
from simulations.scenario import Scenario
from simulations.sim_peers import SimPeer
from simulations.swarm import Swarm

SCENARIO = Scenario(name="reports", nodes=12, hosts_per_rack=6, layers_mib=(8.0, 24.0), seed=3)


def test_every_piece_is_reported_once_in_batches_sent_within_the_interval() -> None:
    swarm = Swarm(SCENARIO)
    state = swarm.state
    assert state is not None
    arrived: dict[tuple[str, int], float] = {}
    reported: dict[tuple[str, int], float] = {}
    calls: list[int] = []
    piece_done = swarm._piece_done
    report_pieces = state.report_pieces

    def recording_arrival(now: float, peer: SimPeer, index: int, *rest: Any) -> None:
        arrived[peer.peer_id, index] = now
        piece_done(now, peer, index, *rest)

    def recording_report(event: PiecesReported, now: float) -> Any:
        calls.append(len(event.reports))
        for report in event.reports:
            key = (event.peer_id, report.piece_index)
            assert key not in reported, key
            reported[key] = now
        return report_pieces(event, now)

    swarm._piece_done = recording_arrival  # type: ignore[method-assign]
    state.report_pieces = recording_report  # type: ignore[method-assign]
    swarm.run()
    assert swarm.complete

    assert reported.keys() == arrived.keys()
    peers = [p for node in swarm.seeds + swarm.nodes for p in node.peers]
    assert len(arrived) == sum(p.piece_count for p in peers)
    for key, at in reported.items():
        assert 0 <= at - arrived[key] <= REPORT_INTERVAL_S + 1e-9, key
    assert max(calls) <= REPORT_BATCH
    # Batched: far fewer calls than pieces (there was one call per piece before).
    assert len(calls) < len(arrived) / 3, (len(calls), len(arrived))
