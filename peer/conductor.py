"""The swarm supplier: download a blob's pieces from parents the scheduler names.

The conductor registers the peer with the scheduler and follows its decisions: fetch
from the origin (the peer is a seed, or within the back-to-source quota), wait and ask
again, or fetch pieces from parents. With parents it keeps up to ``pieces_in_flight``
piece requests going, chosen by :func:`peer.piece_picker.pick_pieces` from the piece
lists the parents publish (followed by :class:`peer.parent_watch.ParentWatch`; with a
rack stripe, those of parents in other racks cut to the stripe's pieces unless that
leaves nothing to fetch; pieces asked of other racks' parents are claimed at the
scheduler first, ``scheduler.core.claims``), and checks every piece against the digest
the scheduler vouches for before it counts. A parent that fails or sends a bad piece is
reported and blocked, and the scheduler names others. If the scheduler cannot be
reached at any point, the peer fetches what is missing from the origin itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field

from peer.backsource import OriginSupplier, PieceTransfer
from peer.metrics import PeerMetrics
from peer.parent_client import ParentClient, ParentError
from peer.parent_watch import ParentWatch, wants_fresher_lists
from peer.piece_hasher import SpanHasher
from peer.piece_picker import pick_pieces, stripe_blocks, within_stripe, without_held
from peer.reporter import TransferReporter
from peer.scheduler_client import (
    Decision,
    GoToSource,
    ParentInfo,
    SchedulerClient,
    SchedulerRejected,
    SchedulerUnavailable,
    UseParents,
    WaitAndRetry,
)
from peer.task import BlobTask, PieceCorrupt, TaskFailed, TaskState

log = logging.getLogger(__name__)

# The conductor's loop looks at its fetches, its parents' piece lists and the time at
# least this often; it wakes sooner when a fetch ends or a piece list changes.
REFRESH_S = 0.25
NO_PROGRESS_S = 3.0  # with no piece for this long, ask the scheduler for other parents
MAX_RETRY_WAIT_S = 2.0
# While its parents cannot fill the pipeline, a peer asks the scheduler for more this
# often: the swarm grows after the first decision, and early parents are few and busy.
TOPUP_S = 1.0
# Piece requests in flight to one parent. Two, not more: a child holding many of a
# parent's upload slots leaves others waiting and splits its own download into slower
# parts, each re-shareable later. p2psim, mean of 4 seeds against 4 per parent: lower
# or equal on every shipped scenario (default -5%, churn -12%, heterogeneous and
# stragglers -3%, the cluster benchmark's homogeneous network -4%).
MAX_PER_PARENT = 2
# Range requests at once of a peer the scheduler sends to the origin: one stream, so
# pieces arrive one after another at the full rate and other peers can fetch each as
# soon as possible. Several streams finish the blob no sooner on a shared link, but
# every piece later (p2psim on the swarm benchmark's network: makespan 24.6 s with 4,
# 21.8 s with 1; no change for 100 nodes at 10 Gbps). Alone (no scheduler), a peer
# uses its origin_concurrency.
SWARM_ORIGIN_CONCURRENCY = 1
# Pieces a peer taking a share of the origin fetch asks for at a time
# (``scheduler.core.origin_shares``): one range request for a few pieces, so the origin
# is not asked once per piece, and takers stay close to one another in the blob.
ORIGIN_TAKE_PIECES = 4
# A parent that answered "no free upload slot" is left alone this long: asking it again
# at once only burns its CPU on refusals (measured: tens of thousands per minute).
BUSY_BACKOFF_S = 0.25
# A piece the scheduler would not let this peer fetch from another rack (a rack-mate
# claimed it, ``scheduler.core.claims``, or holds it) is left to rack-mates this long
# before it is claimed again: by then the rack-mate has it, or its claim has gone.
CLAIM_HOLD_S = 0.05


@dataclass
class _Swarm:
    watch: ParentWatch
    parents: dict[str, ParentInfo] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)
    busy_until: dict[str, float] = field(default_factory=dict)
    # The latest decision's stripe and its parents in other racks (peer.piece_picker).
    stripe: tuple[int, int] | None = None
    other_racks: frozenset[str] = frozenset()
    # Import claims (scheduler.core.claims): pieces granted and still in flight, pieces
    # to release at the next claims call, and denied pieces -> until when they are left
    # to rack-mates.
    claimed: set[int] = field(default_factory=set)
    releases: list[int] = field(default_factory=list)
    held: dict[int, float] = field(default_factory=dict)

    def held_now(self, now: float) -> set[int]:
        """The denied pieces still left to rack-mates at ``now``; forgets the others."""
        for index in [i for i, until in self.held.items() if until <= now]:
            del self.held[index]
        return set(self.held)


class SwarmSupplier:
    name = "the swarm"

    def __init__(
        self,
        *,
        peer_id: str,
        host_id: str,
        scheduler: SchedulerClient,
        parents: ParentClient,
        origin: Callable[[Callable[[PieceTransfer], None], int | None], OriginSupplier],
        pieces_in_flight: int,
        metrics: PeerMetrics,
        rng: random.Random,
    ) -> None:
        self.peer_id = peer_id
        self._host_id = host_id
        self._scheduler = scheduler
        self._parents = parents
        self._origin = origin
        self._in_flight = pieces_in_flight
        self._metrics = metrics
        self._rng = rng
        self._registered = False

    async def supply(self, task: BlobTask) -> None:
        reporter = TransferReporter(self._scheduler, self.peer_id)
        reporter.start()
        try:
            decision = await self._scheduler.register(
                self.peer_id,
                task.digest,
                self._host_id,
                task.size_bytes,
                task.layout.piece_bytes,
                task.present_pieces(),
            )
            self._registered = True
            while decision is not None and task.running and task.missing_pieces():
                decision = await self._follow(task, decision, reporter)
        except SchedulerUnavailable as exc:
            self._metrics.scheduler_unavailable.inc()
            log.warning(
                "%s: scheduler unavailable (%s); fetching from the registry", task.digest, exc
            )
            await self._origin(lambda t: None, None).supply(task)
        except SchedulerRejected as exc:
            log.warning("%s: scheduler refused (%s); fetching from the registry", task.digest, exc)
            await self._origin(lambda t: None, None).supply(task)
        finally:
            await reporter.close()

    async def finish(self, task: BlobTask) -> None:
        """Tell the scheduler how it ended: a finished peer becomes a parent for others."""
        if not self._registered:
            return
        try:
            if task.state is TaskState.COMPLETE:
                await self._scheduler.finished(self.peer_id)
            else:
                reason = "digest_mismatch" if "digest" in str(task.error) else "failed"
                await self._scheduler.failed(self.peer_id, reason)
        except (SchedulerUnavailable, SchedulerRejected) as exc:
            log.info("%s: could not tell the scheduler the task ended: %s", task.digest, exc)

    async def _follow(
        self, task: BlobTask, decision: Decision, reporter: TransferReporter
    ) -> Decision | None:
        if isinstance(decision, GoToSource):
            log.info(
                "%s: scheduler sends %s to the registry (%s%s)",
                task.digest,
                self.peer_id,
                decision.reason,
                ", for a share of the pieces" if decision.shared else "",
            )
            origin = self._origin(reporter.add, SWARM_ORIGIN_CONCURRENCY)
            if not decision.shared:
                await origin.supply(task)
                return None
            await self._take_share(task, origin)
            # The rest comes from parents.
            return await self._scheduler.schedule(self.peer_id) if task.missing_pieces() else None
        if isinstance(decision, WaitAndRetry):
            await asyncio.sleep(min(decision.after_s, MAX_RETRY_WAIT_S))
            return await self._scheduler.schedule(self.peer_id)
        return await self._from_parents(task, decision, reporter)

    async def _take_share(self, task: BlobTask, origin: OriginSupplier) -> None:
        """Fetch the pieces the scheduler hands this peer from the origin, a few at a
        time, until it hands out none (``scheduler.core.origin_shares``)."""
        fetched = 0
        while task.running and task.missing_pieces():
            pieces = await self._scheduler.take_origin_pieces(self.peer_id, ORIGIN_TAKE_PIECES)
            if not pieces:
                break
            await origin.fetch(task, pieces)
            fetched += len(pieces)
        log.info(
            "%s: %s fetched its share from the registry: %d pieces",
            task.digest,
            self.peer_id,
            fetched,
        )

    async def _from_parents(
        self, task: BlobTask, decision: UseParents, reporter: TransferReporter
    ) -> Decision | None:
        swarm = _Swarm(ParentWatch(self._parents, task.digest))
        watch = swarm.watch
        self._adopt(swarm, decision)
        fetches: dict[int, asyncio.Task[None]] = {}
        fetched_from: dict[int, str] = {}  # piece -> the parent asked for it
        load: collections.Counter[str] = collections.Counter()
        last_progress = last_ask = time.monotonic()
        next_digests = 0.0
        try:
            while task.running and task.missing_pieces():
                now = time.monotonic()
                for parent_id in watch.take_unreachable():
                    if load[parent_id]:
                        continue  # its piece requests will fail and report it
                    new = await self._give_up_on(task, swarm, parent_id, "unreachable")
                    if not isinstance(new, UseParents):
                        return new
                    self._adopt(swarm, new)
                if now >= next_digests and self._lacks_digests(task, swarm):
                    next_digests = now + REFRESH_S
                    with contextlib.suppress(SchedulerRejected):
                        swarm.digests.update(await self._scheduler.task_digests(task.digest))
                missing = [
                    i for i in task.missing_pieces() if i not in fetches and i in swarm.digests
                ]
                listed = without_held(
                    {
                        parent_id: pieces
                        for parent_id, pieces in watch.availability.items()
                        if swarm.busy_until.get(parent_id, 0.0) <= now
                    },
                    swarm.other_racks,
                    swarm.held_now(now),
                )
                available = within_stripe(listed, swarm.other_racks, swarm.stripe)
                picks = self._pick(missing, available, load, len(fetches), watch.seeds)
                if stripe_blocks(swarm.stripe, picks, len(fetches)):
                    available = listed
                    picks = self._pick(missing, available, load, len(fetches), watch.seeds)
                    if picks:
                        self._metrics.stripe_fallbacks.inc()
                picks = await self._claimed(swarm, picks, now)
                watch.set_hungry(
                    wants_fresher_lists(
                        len(fetches) + len(picks), self._in_flight, missing, available, picks
                    )
                )
                for index, parent_id in picks:
                    load[parent_id] += 1
                    fetches[index] = asyncio.create_task(
                        self._fetch(task, swarm, swarm.parents[parent_id], index, reporter)
                    )
                    fetched_from[index] = parent_id
                if len(fetches) < self._in_flight and now - last_ask >= TOPUP_S:
                    # The parents cannot keep the pipeline full: ask for more. The
                    # scheduler keeps the current ones that still serve this peer.
                    last_ask = now
                    more = await self._scheduler.schedule(self.peer_id)
                    if isinstance(more, UseParents):
                        self._adopt(swarm, more)
                    elif isinstance(more, GoToSource) or not fetches:
                        return more
                    # "Retry later" with pieces on the way: keep fetching from the
                    # parents at hand and ask again at the next top-up.
                if not fetches:
                    if time.monotonic() - last_progress > NO_PROGRESS_S:
                        log.info(
                            "%s: no parent has what %s needs; asking again",
                            task.digest,
                            self.peer_id,
                        )
                        return await self._scheduler.schedule(self.peer_id)
                    await asyncio.wait([watch.next_change()], timeout=REFRESH_S)
                    continue
                done, _ = await asyncio.wait(
                    [*fetches.values(), watch.next_change()],
                    timeout=REFRESH_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for index in [i for i, f in fetches.items() if f in done]:
                    fetch = fetches.pop(index)
                    parent_id = fetched_from.pop(index)
                    load[parent_id] -= 1
                    if index in swarm.claimed:
                        swarm.claimed.discard(index)
                        swarm.releases.append(index)
                    error = fetch.exception()
                    if error is None:
                        last_progress = time.monotonic()
                        continue
                    answer = await self._parent_failed(
                        task, swarm, parent_id, index, error, reporter
                    )
                    if answer is not None:
                        if not isinstance(answer, UseParents):
                            return answer
                        self._adopt(swarm, answer)
            return None
        finally:
            # A fetch whose piece is already recorded has only its bookkeeping and its
            # report left: let it finish, or the scheduler never hears of that piece.
            for index, fetch in fetches.items():
                if not task.has_piece(index):
                    fetch.cancel()
            await asyncio.gather(*fetches.values(), return_exceptions=True)
            await watch.close()
            left = swarm.releases + sorted(swarm.claimed)
            if left:
                # Rack-mates may fetch these at once instead of after the claims' lease.
                with contextlib.suppress(SchedulerUnavailable, SchedulerRejected):
                    await self._scheduler.claim_imports(self.peer_id, [], left)

    async def _claimed(
        self, swarm: _Swarm, picks: list[tuple[int, str]], now: float
    ) -> list[tuple[int, str]]:
        """``picks`` less the pieces to fetch from other racks that a rack-mate claimed
        (``scheduler.core.claims``) or holds; every piece rack-mates claimed or hold is
        left to them for ``CLAIM_HOLD_S``, and the rack-mates the scheduler names as
        holders become parents (``scheduler.core.rack_holders``). Releases the claims
        of finished requests on the way. A scheduler that does not answer holds nothing
        up: the picks go ahead unclaimed."""
        remote = [index for index, parent_id in picks if parent_id in swarm.other_racks]
        if not remote and not swarm.releases:
            return picks
        releases, swarm.releases = swarm.releases, []
        try:
            granted, claimed, holders = await self._scheduler.claim_imports(
                self.peer_id, remote, releases
            )
        except (SchedulerUnavailable, SchedulerRejected) as exc:
            log.debug("import claims of %s unchecked: %s", self.peer_id, exc)
            self._metrics.import_claims.labels("unchecked").inc(len(remote))
            swarm.releases.extend(releases)  # the next call releases them
            return picks
        if holders:
            # Rack-mates holding pieces it claimed: parents until the next decision.
            swarm.parents.update((holder.peer_id, holder) for holder in holders)
            swarm.watch.follow(swarm.parents.values())
        swarm.claimed.update(granted)
        until = now + CLAIM_HOLD_S
        for index in claimed:
            swarm.held[index] = until
        self._metrics.import_claims.labels("granted").inc(len(granted))
        denied = set(remote) - granted
        if not denied:
            return picks
        self._metrics.import_claims.labels("denied").inc(len(denied))
        return [(index, parent_id) for index, parent_id in picks if index not in denied]

    def _pick(
        self,
        missing: list[int],
        available: Mapping[str, Set[int]],
        load: Mapping[str, int],
        in_flight: int,
        seeds: Set[str],
    ) -> list[tuple[int, str]]:
        return pick_pieces(
            missing,
            available,
            load,
            slots=self._in_flight - in_flight,
            max_per_parent=MAX_PER_PARENT,
            window=2 * self._in_flight,
            rng=self._rng,
            seeds=seeds,
        )

    def _adopt(self, swarm: _Swarm, decision: UseParents) -> None:
        swarm.parents = {p.peer_id: p for p in decision.parents}
        swarm.stripe = decision.stripe
        swarm.other_racks = frozenset(p.peer_id for p in decision.parents if p.other_rack)
        swarm.digests.update(decision.piece_digests)
        swarm.watch.follow(decision.parents)

    @staticmethod
    def _lacks_digests(task: BlobTask, swarm: _Swarm) -> bool:
        """Whether a parent offers a piece this peer needs with no trusted digest yet."""
        digests = swarm.digests
        return any(
            i not in digests and not task.has_piece(i)
            for pieces in swarm.watch.availability.values()
            for i in pieces
        )

    async def _fetch(
        self,
        task: BlobTask,
        swarm: _Swarm,
        parent: ParentInfo,
        index: int,
        reporter: TransferReporter,
    ) -> None:
        layout = task.layout
        hasher = SpanHasher(layout, index, keep=task.keeps_in_memory)
        cost_s = await self._parents.fetch_piece(
            parent, task.digest, index, task.fd, layout.start(index), layout.size(index), hasher
        )
        # Counted before recording: once recorded, a client may already have every byte.
        source = "seed" if parent.peer_id in swarm.watch.seeds else "peer"
        self._metrics.download_bytes.labels(source).inc(layout.size(index))
        if parent.other_rack:
            self._metrics.other_rack_bytes.inc(layout.size(index))
        self._metrics.piece_cost.labels(source).observe(cost_s)
        digest = await task.record_piece(
            index, swarm.digests[index], hasher.digests[index], hasher.kept.pop(index, None)
        )
        reporter.add(PieceTransfer(index, parent.peer_id, layout.size(index), cost_s, True, digest))

    async def _parent_failed(
        self,
        task: BlobTask,
        swarm: _Swarm,
        parent_id: str,
        index: int,
        error: BaseException,
        reporter: TransferReporter,
    ) -> Decision | None:
        if isinstance(error, ParentError) and error.reason == "busy":
            # All its upload slots were taken: try others, and it again a little later.
            swarm.busy_until[parent_id] = time.monotonic() + BUSY_BACKOFF_S
            return None
        if not isinstance(error, ParentError | PieceCorrupt):
            if isinstance(error, TaskFailed):
                raise error
            raise TaskFailed(f"fetching piece {index} from {parent_id}: {error!r}") from error
        reason = error.reason if isinstance(error, ParentError) else "corrupt"
        log.warning("%s: parent %s failed piece %d: %s", task.digest, parent_id, index, error)
        reporter.add(PieceTransfer(index, parent_id, 0, 0.0, False))
        await reporter.flush()
        return await self._give_up_on(task, swarm, parent_id, reason)

    async def _give_up_on(
        self, task: BlobTask, swarm: _Swarm, parent_id: str, reason: str
    ) -> Decision:
        """Block a parent for this peer at the scheduler; returns the new decision."""
        self._metrics.parent_failures.labels(reason).inc()
        log.warning("%s: blocking parent %s (%s)", task.digest, parent_id, reason)
        swarm.parents.pop(parent_id, None)
        swarm.watch.drop(parent_id)
        return await self._scheduler.block(self.peer_id, parent_id)
