"""A small builder over ``SchedulerState`` so each test states only what it is about.

Test modules import it as ``tests.unit.scheduler.swarm``; it also checks the structural
invariants that every sequence of events must keep.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from scheduler.core import (
    Decision,
    Evaluator,
    HostAnnounced,
    Peer,
    PeerRegistered,
    PieceReport,
    PiecesReported,
    SchedulerSettings,
    SchedulerState,
)
from scheduler.core.model import Host

MiB = 1024 * 1024
PIECE_BYTES = 4 * MiB
PIECES = 8
TASK = "sha256:" + "ab" * 32


class Swarm:
    def __init__(
        self,
        settings: SchedulerSettings | None = None,
        evaluator: Evaluator | None = None,
        seed: int = 7,
    ) -> None:
        self.state = SchedulerState(settings, evaluator)
        self.now = 0.0
        self.rng = random.Random(seed)

    def host(
        self,
        host_id: str,
        *,
        seed: bool = False,
        idc: str = "",
        rack: str = "",
        location: str = "",
        upload_capacity_bps: float = 100 * MiB,
        upload_slots: int = 10,
        upload_count: int = 0,
        upload_bps: float = 0.0,
    ) -> Host:
        self.state.announce_host(
            HostAnnounced(
                host_id=host_id,
                address=f"addr-{host_id}",
                piece_port=65002,
                upload_capacity_bps=upload_capacity_bps,
                download_capacity_bps=upload_capacity_bps,
                upload_slots=upload_slots,
                is_seed=seed,
                idc=idc,
                rack=rack,
                location=location,
                upload_count=upload_count,
                upload_bps=upload_bps,
            ),
            self.now,
        )
        return self.state.hosts[host_id]

    def peer(
        self,
        peer_id: str,
        host_id: str | None = None,
        *,
        pieces: Iterable[int] = (),
        task: str = TASK,
        piece_count: int = PIECES,
        **host_labels: Any,
    ) -> Peer:
        """Register a peer; with no ``host_id`` a host named ``h-<peer_id>`` is announced."""
        if host_id is None:
            host_id = f"h-{peer_id}"
            self.host(host_id, **host_labels)
        self.state.register_peer(
            PeerRegistered(
                peer_id=peer_id,
                task_id=task,
                host_id=host_id,
                size_bytes=piece_count * PIECE_BYTES,
                piece_bytes=PIECE_BYTES,
                pieces=frozenset(pieces),
            ),
            self.now,
        )
        return self.state.peers[peer_id]

    def full(self, peer_id: str, host_id: str | None = None, **host_labels: Any) -> Peer:
        """A peer holding the whole blob."""
        self.peer(peer_id, host_id, pieces=range(PIECES), **host_labels)
        return self.state.peers[peer_id]

    def schedule(self, peer_id: str) -> Decision:
        return self.state.schedule(peer_id, self.now, self.rng)

    def report(
        self,
        peer_id: str,
        parent_id: str | None,
        pieces: Iterable[int],
        *,
        cost_s: float = 1.0,
        ok: bool = True,
    ) -> None:
        reports = tuple(PieceReport(i, parent_id, PIECE_BYTES, cost_s, ok) for i in pieces)
        self.state.report_pieces(PiecesReported(peer_id, reports), self.now)


def check_invariants(state: SchedulerState) -> None:
    """Everything the indices claim must match the records; the parent graph is acyclic."""
    children_per_host = {host_id: 0 for host_id in state.hosts}
    for peer in state.peers.values():
        assert state.hosts[peer.host.host_id] is peer.host
        assert state.tasks[peer.task.task_id] is peer.task
        for parent in peer.parents.values():
            assert parent.children[peer.peer_id] is peer
            assert state.peers[parent.peer_id] is parent
            children_per_host[parent.host.host_id] += 1
        for child in peer.children.values():
            assert child.parents[peer.peer_id] is peer
    for host_id, count in children_per_host.items():
        assert state.hosts[host_id].children_count == count, host_id
    for task in state.tasks.values():
        holders = [p for p in task.peers.values() if p.pieces_mask]
        assert len(task.holders) == len(holders)
        assert all(p.peer_id in task.holders for p in holders)
        for index in range(task.piece_count):
            expected = sum(1 for p in task.peers.values() if p.pieces_mask >> index & 1)
            assert task.availability[index] == expected
        assert task.seed_peer_count == sum(p.host.is_seed for p in task.peers.values())
        by_rack: dict[tuple[str, str], list[str]] = {}
        for p in task.peers.values():
            if p.host.rack and not p.host.is_seed:
                by_rack.setdefault(p.host.rack_key, []).append(p.peer_id)
        assert {k: sorted(v) for k, v in by_rack.items()} == {
            k: sorted(v) for k, v in task.rack_peers.items()
        }
        assert task.normal_back_to_source_count == sum(p.holds_quota for p in task.peers.values())
    _check_acyclic(state)


def _check_acyclic(state: SchedulerState) -> None:
    done: set[str] = set()
    for start in state.peers.values():
        if start.peer_id in done:
            continue
        # Iterative DFS with colours: on the stack means grey.
        grey: set[str] = set()
        stack: list[tuple[Peer, bool]] = [(start, False)]
        while stack:
            peer, leaving = stack.pop()
            if leaving:
                grey.discard(peer.peer_id)
                done.add(peer.peer_id)
                continue
            if peer.peer_id in done:
                continue
            assert peer.peer_id not in grey, f"cycle through {peer.peer_id}"
            grey.add(peer.peer_id)
            stack.append((peer, True))
            for parent in peer.parents.values():
                assert parent.peer_id not in grey, f"cycle through {parent.peer_id}"
                if parent.peer_id not in done:
                    stack.append((parent, False))
