"""The scheduler's whole state and the only code that changes it.

Call it from one writer (one asyncio task in the service, the event loop in the
simulator). Every method is synchronous and does work proportional to the event: O(1) per
piece, O(K) per decision plus a sample of candidates, O(pieces held) per peer removal.
"""

from __future__ import annotations

import random

from scheduler.core.claims import ClaimsAnswer
from scheduler.core.decisions import BackToSource, Decision, Parents, Removal, RetryLater
from scheduler.core.errors import (
    ConflictError,
    DigestConflictError,
    InvalidEventError,
    PeerStateError,
    UnknownHostError,
    UnknownPeerError,
)
from scheduler.core.evaluator import Evaluator, RuleEvaluator
from scheduler.core.events import (
    Event,
    HostAnnounced,
    HostExpired,
    ParentReported,
    PeerFailed,
    PeerFinished,
    PeerLeft,
    PeerRegistered,
    PiecesReported,
)
from scheduler.core.model import Host, Peer, PeerState, Task
from scheduler.core.origin_shares import take_share
from scheduler.core.piece_costs import PieceCostWindow
from scheduler.core.rack_flow import RackFlows
from scheduler.core.rack_holders import rack_holders
from scheduler.core.scheduling import decide, parent_choice
from scheduler.core.settings import SchedulerSettings
from scheduler.core.transfers import TransferRecorder


class SchedulerState:
    """Hosts, tasks, peers and the parent graph; events in, decisions out."""

    def __init__(
        self,
        settings: SchedulerSettings | None = None,
        evaluator: Evaluator | None = None,
        recorder: TransferRecorder | None = None,
    ) -> None:
        self.settings = settings or SchedulerSettings()
        self.evaluator: Evaluator = evaluator or RuleEvaluator()
        # Joins piece reports with the features seen when their parent was chosen
        # (transfer records, issue 5); None records nothing. The evaluator and the
        # recorder may be swapped between operations (model hot reload).
        self.recorder = recorder
        # Ordered by last announcement, oldest first, so expiry stops at the first fresh one.
        self.hosts: dict[str, Host] = {}
        self.tasks: dict[str, Task] = {}
        self.peers: dict[str, Peer] = {}
        self._seed_host_count = 0
        # Per rack, how fast pieces arrive from other racks and from inside it.
        self.rack_flows = RackFlows()

    # -- lookups ---------------------------------------------------------------------

    def host(self, host_id: str) -> Host:
        try:
            return self.hosts[host_id]
        except KeyError:
            raise UnknownHostError(host_id) from None

    def peer(self, peer_id: str) -> Peer:
        try:
            return self.peers[peer_id]
        except KeyError:
            raise UnknownPeerError(peer_id) from None

    # -- events ----------------------------------------------------------------------

    def apply(self, event: Event, now: float) -> Removal | None:
        """Apply any event; the service's writer task can feed its queue through this."""
        match event:
            case HostAnnounced():
                self.announce_host(event, now)
            case HostExpired(host_id=host_id):
                return self.expire_host(host_id)
            case PeerRegistered():
                self.register_peer(event, now)
            case PiecesReported():
                self.report_pieces(event, now)
            case ParentReported(peer_id=peer_id, parent_id=parent_id):
                self.block_parent(peer_id, parent_id)
            case PeerFinished(peer_id=peer_id):
                self.finish_peer(peer_id)
            case PeerFailed(peer_id=peer_id):
                return self.fail_peer(peer_id)
            case PeerLeft(peer_id=peer_id):
                return self.remove_peer(peer_id)
        return None

    def announce_host(self, event: HostAnnounced, now: float) -> None:
        host = self.hosts.pop(event.host_id, None)
        if host is None:
            host = Host(
                host_id=event.host_id,
                address=event.address,
                piece_port=event.piece_port,
                upload_capacity_bps=event.upload_capacity_bps,
                download_capacity_bps=event.download_capacity_bps,
                upload_slots=event.upload_slots,
                is_seed=event.is_seed,
                idc=event.idc,
                rack=event.rack,
                location=event.location,
                announced_upload_count=event.upload_count,
                announced_upload_bps=event.upload_bps,
                last_announce_s=now,
            )
            self._seed_host_count += int(host.is_seed)
        else:
            self._relabel(host, event)
            host.address = event.address
            host.piece_port = event.piece_port
            host.upload_capacity_bps = event.upload_capacity_bps
            host.download_capacity_bps = event.download_capacity_bps
            host.upload_slots = event.upload_slots
            host.location = event.location
            host.announced_upload_count = event.upload_count
            host.announced_upload_bps = event.upload_bps
            host.last_announce_s = now
        # Re-inserting moves the host to the end: the dict stays ordered by announcement.
        self.hosts[event.host_id] = host

    def expire_host(self, host_id: str) -> Removal:
        """Remove the host and all its peers."""
        host = self.host(host_id)
        removed: list[str] = []
        orphans: dict[str, None] = {}
        for peer in list(host.peers.values()):
            removed.append(peer.peer_id)
            orphans.update(dict.fromkeys(self._remove(peer)))
        del self.hosts[host_id]
        self._seed_host_count -= int(host.is_seed)
        live_orphans = tuple(p for p in orphans if p in self.peers)
        return Removal(tuple(removed), live_orphans, (host_id,))

    def expire_stale_hosts(self, now: float) -> Removal:
        """Expire every host silent for ``host_ttl_s``; O(expired hosts)."""
        stale: list[str] = []
        for host in self.hosts.values():
            if now - host.last_announce_s < self.settings.host_ttl_s:
                break
            stale.append(host.host_id)
        removals = [self.expire_host(host_id) for host_id in stale]
        orphans = dict.fromkeys(p for r in removals for p in r.orphaned_peer_ids)
        return Removal(
            tuple(p for r in removals for p in r.removed_peer_ids),
            tuple(p for p in orphans if p in self.peers),
            tuple(stale),
        )

    def register_peer(self, event: PeerRegistered, now: float) -> None:
        """Add a peer (idempotent for the same peer, host and task); adds pieces it holds."""
        host = self.host(event.host_id)
        existing = self.peers.get(event.peer_id)
        if existing is not None:
            if existing.host is not host or existing.task.task_id != event.task_id:
                raise ConflictError(
                    f"peer {event.peer_id!r} is already registered on host "
                    f"{existing.host.host_id!r} for task {existing.task.task_id!r}"
                )
            self._check_task_shape(existing.task, event)
            self._trust_whole_blob_digests(existing, event.piece_digests)
            self._add_pieces(existing, event.pieces)
            return
        task = self.tasks.get(event.task_id)
        if task is None:
            task = Task(event.task_id, event.size_bytes, event.piece_bytes, now)
            self.tasks[task.task_id] = task
        else:
            self._check_task_shape(task, event)
        settings = self.settings
        costs = PieceCostWindow(
            settings.piece_cost_window,
            settings.slow_cost_factor,
            settings.slow_cost_sigmas,
            settings.slow_cost_min_ratio,
        )
        peer = Peer(event.peer_id, host, task, costs, registered_at_s=now, last_piece_at_s=now)
        self.peers[peer.peer_id] = peer
        host.peers[peer.peer_id] = peer
        task.peers[peer.peer_id] = peer
        task.index_member(peer)
        task.seed_peer_count += int(host.is_seed)
        try:
            self._trust_whole_blob_digests(peer, event.piece_digests)
        except ConflictError:
            self._forget_new_peer(peer)
            raise
        self._add_pieces(peer, event.pieces)

    def _trust_whole_blob_digests(self, peer: Peer, digests: tuple[str, ...]) -> None:
        """Take the digests of a peer holding a verified blob for pieces nobody vouched for.

        A digest that differs from a trusted one is a conflict: the registration is refused.
        """
        task = peer.task
        for index, digest in enumerate(digests):
            trusted = task.piece_digests.get(index)
            if trusted is not None and trusted != digest:
                raise DigestConflictError(
                    f"piece_digests[{index}]", task.task_id, index, trusted, digest
                )
        for index, digest in enumerate(digests):
            if index not in task.piece_digests:
                task.piece_digests[index] = digest
                task.digest_sources[index] = peer.peer_id
                peer.digest_pieces.append(index)

    def _forget_new_peer(self, peer: Peer) -> None:
        del self.peers[peer.peer_id]
        del peer.host.peers[peer.peer_id]
        del peer.task.peers[peer.peer_id]
        peer.task.seed_peer_count -= int(peer.host.is_seed)
        if not peer.task.peers:
            del self.tasks[peer.task.task_id]

    def report_pieces(self, event: PiecesReported, now: float) -> None:
        """Record a batch of transfers; checked whole first, so a bad batch changes nothing.

        An ok piece is added to the child and its cost to the parent's statistics; a cost
        that marks the parent as bad also blocks it for this child. A failed piece blocks
        the parent for this child. A parent that has already left is skipped silently:
        reports race with departures.

        Piece digests: the first ok report of a piece whose bytes came from the origin
        (no parent) or from a seed peer sets the task's trusted digest of that piece. Any
        later ok report of the piece with another digest raises ``DigestConflictError``:
        whoever sent those bytes is lying or corrupt.
        """
        child = self.peer(event.peer_id)
        task = child.task
        peers = self.peers
        digests = task.piece_digests
        # Digests this batch would make trusted, so a batch cannot contradict itself.
        new_digests: dict[int, str] | None = None
        # Each report's parent, if it is still here (nothing leaves during the batch).
        parents: list[Peer | None] = []
        for number, report in enumerate(event.reports):
            index = report.piece_index
            if index >= task.piece_count:
                raise InvalidEventError(
                    f"reports[{number}].piece_index",
                    f"piece {index} outside 0..{task.piece_count - 1}",
                )
            # Reported bytes feed the parent's upload load; more than a piece is a lie.
            if report.size_bytes > task.piece_bytes:
                raise InvalidEventError(
                    f"reports[{number}].size_bytes",
                    f"{report.size_bytes} is more than a piece ({task.piece_bytes} bytes)",
                )
            parent_id = report.parent_id
            parent: Peer | None = None
            if parent_id is not None:
                if parent_id == child.peer_id:
                    raise InvalidEventError(
                        f"reports[{number}].parent_id", "a peer is not its own parent"
                    )
                parent = peers.get(parent_id)
                if parent is not None and parent.task is not task:
                    raise InvalidEventError(
                        f"reports[{number}].parent_id",
                        f"peer {parent_id!r} works on another task",
                    )
            parents.append(parent)
            digest = report.digest
            if not report.ok or digest is None:
                continue
            trusted = digests.get(index) or (
                new_digests.get(index) if new_digests is not None else None
            )
            if trusted is None:
                if self._is_trusted_source(parent_id, parent):
                    if new_digests is None:
                        new_digests = {}
                    new_digests[index] = digest
            elif digest != trusted:
                raise DigestConflictError(
                    f"reports[{number}].digest", task.task_id, index, trusted, digest
                )
        if new_digests is not None:
            for index, digest in new_digests.items():
                digests[index] = digest
                task.digest_sources[index] = child.peer_id
                child.digest_pieces.append(index)
        recorder = self.recorder
        child_host = child.host
        settings = self.settings
        for report, parent in zip(event.reports, parents, strict=True):
            if recorder is not None:
                recorder.on_report(child, report, now)
            if report.ok:
                child.last_piece_at_s = now
                self._add_piece(child, report.piece_index)
                if parent is not None:
                    parent_host = parent.host
                    size_bytes = report.size_bytes
                    parent_host.record_upload(size_bytes, now)
                    parent_host.record_throughput(child_host.rack_key, size_bytes, report.cost_s)
                    if child_host.rack and not parent_host.is_seed:
                        self.rack_flows.record(
                            child_host.rack_key,
                            parent_host.rack_key == child_host.rack_key,
                            size_bytes,
                            report.cost_s,
                            settings.rack_congestion_ratio,
                            settings.rack_congestion_samples,
                        )
                    parent_host.upload_ok_count += 1
                    if parent.costs.add(report.cost_s, now):
                        self._block(child, parent)
            elif parent is not None:
                parent.host.upload_failed_count += 1
                self._block(child, parent)
        if child.is_complete:
            # Only the digest check is left; the parents' slots can serve others now.
            self._drop_parents(child)

    def block_parent(self, peer_id: str, parent_id: str) -> None:
        """The child gave up on this parent (slow, unreachable): never offer it again."""
        child = self.peer(peer_id)
        parent = self.peers.get(parent_id)
        if parent is None:
            child.blocked_parent_ids.add(parent_id)
        else:
            self._block(child, parent)

    def finish_peer(self, peer_id: str) -> None:
        """The peer holds the whole verified blob; it drops its parents and only serves."""
        peer = self.peer(peer_id)
        task = peer.task
        missing = task.all_pieces_mask & ~peer.pieces_mask
        while missing:
            lowest = missing & -missing
            self._add_piece(peer, lowest.bit_length() - 1)
            missing ^= lowest
        self._drop_parents(peer)
        peer.state = PeerState.SUCCEEDED
        peer.retry_count = 0
        if self.recorder is not None:
            self.recorder.forget(peer_id)

    def remove_peer(self, peer_id: str) -> Removal:
        """The peer left: its pieces, edges and quota use go with it."""
        peer = self.peer(peer_id)
        orphans = self._remove(peer)
        return Removal((peer_id,), tuple(orphans))

    def fail_peer(self, peer_id: str) -> Removal:
        """The peer failed: removed like a peer that left, and its trusted digests go.

        A peer that went back to source and then failed (its blob digest did not match,
        say) may have hashed bad origin bytes, so the digests it made trusted are dropped;
        the next origin or seed report of those pieces sets them again. Other peers that
        already verified pieces against them find out at their own blob digest check.
        """
        peer = self.peer(peer_id)
        task = peer.task
        for index in peer.digest_pieces:
            # Another peer may have set the digest again since this one contributed it.
            if task.digest_sources.get(index) == peer_id:
                del task.piece_digests[index]
                del task.digest_sources[index]
        return self.remove_peer(peer_id)

    def task_piece_digests(self, task_id: str) -> dict[int, str]:
        """The task's trusted piece digests (a copy); empty for a task nobody works on."""
        task = self.tasks.get(task_id)
        return dict(task.piece_digests) if task is not None else {}

    def claim_imports(
        self, peer_id: str, pieces: list[int], released: list[int], now: float
    ) -> ClaimsAnswer:
        """Which of ``pieces`` the peer may fetch from other racks' normal peers now, after
        releasing ``released``, and (if it claimed any) which pieces its rack-mates are
        fetching from other racks (``scheduler.core.claims``). Pieces that a current
        parent in the rack, or a rack-mate with a free upload slot, holds are not
        granted: such a rack-mate is linked as a parent instead
        (``scheduler.core.rack_holders``). A peer without a rack label, a seed, or
        claims turned off: all of them, and none."""
        peer = self.peer(peer_id)
        task = peer.task
        for field, indices in (("claim", pieces), ("release", released)):
            if indices and not 0 <= min(indices) <= max(indices) < task.piece_count:
                bad = next(i for i in indices if not 0 <= i < task.piece_count)
                raise InvalidEventError(
                    field,
                    f"piece {bad} out of range: task {task.task_id!r} has "
                    f"{task.piece_count} pieces",
                )
        settings = self.settings
        lease_s = settings.rack_claim_lease_s
        if not peer.host.rack or peer.host.is_seed or lease_s <= 0:
            return ClaimsAnswer(list(dict.fromkeys(pieces)), [])
        rack = peer.host.rack_key
        inside: dict[int, Peer] = {}
        new: list[Peer] = []
        if pieces and settings.rack_holders_per_claim:
            inside, new = rack_holders(peer, pieces, settings.rack_holders_per_claim)
            for holder in new:
                self._link(peer, holder)
        granted, claimed = task.import_claims.claim(
            rack,
            peer_id,
            [index for index in pieces if index not in inside],
            released,
            now,
            lease_s,
            task.peers.__contains__,
            settings.rack_claim_hold_factor,
        )
        if not inside:
            return ClaimsAnswer(granted, claimed)
        return ClaimsAnswer(
            granted,
            sorted({*claimed, *inside}),
            tuple(parent_choice(holder, 0.0, rack) for holder in new),  # not scored
            len(inside),
        )

    def take_origin_pieces(self, peer_id: str, want: int, now: float) -> list[int]:
        """Up to ``want`` pieces, lowest first, for a peer sent to take a share of the
        origin fetch (``BackToSource.shared``); empty once none are left, which ends its
        share, or for a peer not sent to take one (``scheduler.core.origin_shares``)."""
        return take_share(self.peer(peer_id), want, now, self.settings.origin_share_lease_s)

    def task_spread(self, task_id: str) -> list[int]:
        """Per piece, how many live normal (non-seed) peers hold it; empty for no task.
        A seed leaves pieces the swarm already holds to the swarm (``peer.seed_offer``)."""
        task = self.tasks.get(task_id)
        return task.normal_spread() if task is not None else []

    # -- decisions -------------------------------------------------------------------

    def schedule(self, peer_id: str, now: float, rng: random.Random) -> Decision:
        """Parents for the peer, or back to source, or retry later; applies the outcome.

        After any decision the peer's parents are exactly the ones in it: ``Parents``
        replaces the previous set, ``BackToSource`` and ``RetryLater`` leave it empty.
        """
        child = self.peer(peer_id)
        if child.state is PeerState.SUCCEEDED:
            raise PeerStateError(f"peer {peer_id!r} already holds every piece")
        in_rack = child.host.rack_key in self.rack_flows.congested
        decision = decide(
            child, self.settings, self.evaluator, self._seed_host_count > 0, now, rng, in_rack
        )
        if isinstance(decision, Parents) and self.recorder is not None:
            # Before the edges change the parents' load: the snapshot is what was scored.
            chosen = [self.peers[choice.peer_id] for choice in decision.parents]
            self.recorder.on_parents(child, decision, chosen, self.evaluator, now)
        if isinstance(decision, Parents):
            self._drop_parents(child)
            for choice in decision.parents:
                self._link(child, self.peers[choice.peer_id])
            child.state = PeerState.RUNNING
            child.retry_count = 0
        elif isinstance(decision, BackToSource):
            if not child.back_to_source:
                child.back_to_source = True
                if not child.host.is_seed and not child.holds_quota:
                    child.holds_quota = True
                    child.task.normal_back_to_source_count += 1
                if decision.shared:
                    child.task.origin_shares.start(
                        child.peer_id, now, self.settings.origin_share_lease_s
                    )
            # Parents would only compete with the origin for the child's download link.
            self._drop_parents(child)
            child.state = PeerState.RUNNING
            child.retry_count = 0
        else:
            assert isinstance(decision, RetryLater)
            # The current parents were candidates too and none passed the filters, so
            # their upload slots go back to children they can serve.
            self._drop_parents(child)
            child.retry_count += 1
        return decision

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _is_trusted_source(parent_id: str | None, parent: Peer | None) -> bool:
        """Bytes straight from the origin, or from a live seed peer, define a piece."""
        return parent_id is None or (parent is not None and parent.host.is_seed)

    @staticmethod
    def _check_task_shape(task: Task, event: PeerRegistered) -> None:
        if (task.size_bytes, task.piece_bytes) != (event.size_bytes, event.piece_bytes):
            raise ConflictError(
                f"task {task.task_id!r} is {task.size_bytes} bytes in pieces of "
                f"{task.piece_bytes}, not {event.size_bytes} in pieces of {event.piece_bytes}"
            )

    def _relabel(self, host: Host, event: HostAnnounced) -> None:
        """Apply topology and seed changes, re-indexing the host's peers under new labels."""
        labels_change = (host.idc, host.rack) != (event.idc, event.rack)
        seed_changes = host.is_seed != event.is_seed
        if not labels_change and not seed_changes:
            return
        holders = [peer for peer in host.peers.values() if peer.pieces_mask]
        for peer in holders:
            peer.task.unindex_holder(peer)
        for peer in host.peers.values():
            peer.task.unindex_member(peer)
        if seed_changes:
            change = 1 if event.is_seed else -1
            self._seed_host_count += change
            for peer in host.peers.values():
                peer.task.seed_peer_count += change
        host.idc, host.rack, host.is_seed = event.idc, event.rack, event.is_seed
        for peer in holders:
            peer.task.index_holder(peer)
        # Back at the end of their new rack's line: they joined it just now.
        for peer in host.peers.values():
            peer.task.index_member(peer)

    def _add_pieces(self, peer: Peer, pieces: frozenset[int]) -> None:
        for index in sorted(pieces):
            self._add_piece(peer, index)
        if peer.is_complete and peer.state is not PeerState.SUCCEEDED:
            self._drop_parents(peer)
            peer.state = PeerState.SUCCEEDED

    def _add_piece(self, peer: Peer, index: int) -> None:
        bit = 1 << index
        if peer.pieces_mask & bit:
            return
        if not peer.pieces_mask:
            peer.task.index_holder(peer)
        peer.pieces_mask |= bit
        peer.task.availability[index] += 1
        if peer.pieces_mask == peer.task.all_pieces_mask:
            peer.task.complete_peers.add(peer.peer_id, peer)

    def _remove(self, peer: Peer) -> list[str]:
        """Remove a peer everywhere; returns the ids of the children it was serving."""
        task, host = peer.task, peer.host
        if self.recorder is not None:
            self.recorder.forget(peer.peer_id)
        self._drop_parents(peer)
        orphans = list(peer.children)
        for child in list(peer.children.values()):
            self._unlink(child, peer)
        if peer.pieces_mask:
            task.unindex_holder(peer)
            held = peer.pieces_mask
            while held:
                lowest = held & -held
                task.availability[lowest.bit_length() - 1] -= 1
                held ^= lowest
        if peer.holds_quota:
            task.normal_back_to_source_count -= 1
        task.origin_shares.forget(peer.peer_id)
        task.seed_peer_count -= int(host.is_seed)
        task.unindex_member(peer)
        del self.peers[peer.peer_id]
        del host.peers[peer.peer_id]
        del task.peers[peer.peer_id]
        if not task.peers:
            del self.tasks[task.task_id]
        return orphans

    def _block(self, child: Peer, parent: Peer) -> None:
        child.blocked_parent_ids.add(parent.peer_id)
        self._unlink(child, parent)

    def _drop_parents(self, child: Peer) -> None:
        for parent in list(child.parents.values()):
            self._unlink(child, parent)

    @staticmethod
    def _link(child: Peer, parent: Peer) -> None:
        child.parents[parent.peer_id] = parent
        parent.children[child.peer_id] = child
        parent.host.children_count += 1

    @staticmethod
    def _unlink(child: Peer, parent: Peer) -> None:
        if child.parents.pop(parent.peer_id, None) is not None:
            del parent.children[child.peer_id]
            parent.host.children_count -= 1
