"""Following the piece lists of a downloading peer's parents.

One watcher per parent follows the parent's piece list (``peer.piece_server``) as a
stream: the parent sends a line each time it holds more pieces (at most one per
``piece_server.STREAM_GAP_S``), so the conductor hears of new pieces at once, and each
news costs a line on an open connection rather than an HTTP exchange (in the cluster
benchmark, piece-list requests had been the largest single cost of a peer's CPU time). A
Dragonfly peer follows its parents' pieces over a stream the same way.

A parent that answers with a plain list instead is long-polled: the answer comes as
soon as it holds a piece more, or after ``LIST_WAIT_S``. That is a seed, whose list
changes with time as well as with its pieces (``peer.seed_offer``) and so answers at
once, or a peer of an older version. Bounds that keep it cheap:

- a watcher starts at most one request per ``LIST_GAP_S`` to its parent, however fast
  the parent gains pieces;
- a complete parent's list cannot change, so its watcher stops after reading it once;
- while the conductor's pipeline is full and it already knows of more pieces it could
  fetch than it has slots for (:meth:`ParentWatch.set_hungry` False), fresher lists
  would change none of its choices: no watcher polls again, and streamed news waits
  until the conductor runs short instead of waking it. A long poll or stream already
  open stays.

A parent that cannot be reached, or whose stream falls silent for longer than
``parent_client.PIECE_LIST_TIMEOUT_S`` (a streaming parent sends an empty line every
``piece_server.STREAM_HEARTBEAT_S``), is reported through
:meth:`ParentWatch.take_unreachable` (the conductor decides whether to give up on it). A
parent whose stream ends before its list is complete (its download failed, or it is
shutting down) counts as holding nothing. Either way it is asked again after
``LIST_GAP_S``. A watcher stopped while its long poll waits lets the poll finish on its
own (:meth:`ParentClient.linger`): cancelling it would close its connection. A stream
has no end to wait for, so stopping its watcher closes its connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Set

from peer.parent_client import ParentClient, ParentError, PieceList
from peer.scheduler_client import ParentInfo

# How long a parent may hold a piece-list request open when it has nothing new.
LIST_WAIT_S = 2.0
# The least time between the starts of two piece-list requests to one parent. Each list
# request costs both peers an HTTP exchange, and in a swarm whose parents gain a piece
# every fraction of a second nearly every long poll answers at once, so this gap sets the
# rate. 0.5 s, not 0.25: in the cluster benchmark (homogeneous, P2P only, four paired
# rounds) 2.00x the bound against 2.08x and 4% less CPU time; 1.0 s was no better.
LIST_GAP_S = 0.5


def wants_fresher_lists(
    requests: int,
    limit: int,
    missing: list[int],
    available: Mapping[str, Set[int]],
    picks: list[tuple[int, str]],
) -> bool:
    """Whether piece lists are worth reading again, after the conductor picked ``picks``.

    Yes while its ``requests`` in flight are fewer than its ``limit`` (the parents at hand
    may all be at their per-parent limit, or have nothing), or while fewer than ``limit``
    of the ``missing`` pieces not just picked are offered by some parent in ``available``.
    """
    if requests < limit:
        return True
    picked = {index for index, _ in picks}
    lists = list(available.values())
    offered = 0
    for index in missing:
        if index not in picked and any(index in pieces for pieces in lists):
            offered += 1
            if offered >= limit:
                return False
    return True


class ParentWatch:
    """The piece lists of the parents of one peer, kept current in the background."""

    def __init__(self, client: ParentClient, task_id: str) -> None:
        self._client = client
        self._task_id = task_id
        self.availability: dict[str, frozenset[int]] = {}
        self.seeds: set[str] = set()
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._unreachable: list[str] = []
        self._change: asyncio.Future[None] | None = None
        self._dirty = False
        self._stale = False  # a list changed while the conductor was not hungry
        self._hungry = asyncio.Event()
        self._hungry.set()

    def follow(self, parents: Iterable[ParentInfo]) -> None:
        """Watch exactly these parents: new ones from now on, others no longer."""
        wanted = {parent.peer_id: parent for parent in parents}
        for parent_id in [p for p in self._watchers if p not in wanted]:
            self.drop(parent_id)
        for parent_id, parent in wanted.items():
            if parent_id not in self._watchers:
                self.availability[parent_id] = frozenset()
                self._watchers[parent_id] = asyncio.create_task(
                    self._watch(parent), name=f"piece list of {parent_id}"
                )

    def drop(self, parent_id: str) -> None:
        watcher = self._watchers.pop(parent_id, None)
        if watcher is not None:
            watcher.cancel()
        self.availability.pop(parent_id, None)

    def set_hungry(self, hungry: bool) -> None:
        """Whether the conductor wants fresher lists (it is running short of pieces to
        ask for); while not, watchers send no new request and list changes do not wake
        it (:meth:`next_change`) until it is hungry again."""
        if hungry:
            self._hungry.set()
            if self._stale:
                self._stale = False
                self._changed()
        else:
            self._hungry.clear()

    def take_unreachable(self) -> list[str]:
        """Parents whose piece list could not be read since the last call."""
        unreachable, self._unreachable = self._unreachable, []
        return [p for p in dict.fromkeys(unreachable) if p in self._watchers]

    def next_change(self) -> asyncio.Future[None]:
        """A future done when a piece list changes (at once if one changed unseen)."""
        if self._change is None or self._change.done():
            self._change = asyncio.get_running_loop().create_future()
            if self._dirty:
                self._dirty = False
                self._change.set_result(None)
        return self._change

    async def close(self) -> None:
        watchers = list(self._watchers.values())
        self._watchers.clear()
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    def _changed(self) -> None:
        if self._change is not None and not self._change.done():
            self._change.set_result(None)
        else:
            self._dirty = True

    async def _watch(self, parent: ParentInfo) -> None:
        parent_id = parent.peer_id
        known: int | None = None
        streams = True  # until the parent answers a stream request with a plain list
        while True:
            started = time.monotonic()
            try:
                if streams:
                    answer = await self._client.stream_list(
                        parent, self._task_id, lambda listed: self._listed(parent_id, listed)
                    )
                    if answer is None:
                        return  # streamed until complete
                    streams = False
                    listed = answer
                else:
                    listed = await self._poll(parent, known)
            except ParentError as exc:
                known = None
                unreachable = exc.reason == "unreachable"
                if unreachable:
                    self._unreachable.append(parent_id)
                if unreachable or self.availability.get(parent_id):
                    self._changed()
                self.availability[parent_id] = frozenset()
            else:
                self._listed(parent_id, listed)
                if listed.complete and not listed.seed:
                    return  # its list cannot change any more
                known = len(listed.pieces)
            await asyncio.sleep(max(0.0, started + LIST_GAP_S - time.monotonic()))
            await self._hungry.wait()

    async def _poll(self, parent: ParentInfo, known: int | None) -> PieceList:
        request = asyncio.ensure_future(
            self._client.piece_list(parent, self._task_id, known, LIST_WAIT_S)
        )
        try:
            return await asyncio.shield(request)
        except asyncio.CancelledError:
            if not request.done():
                self._client.linger(request)  # keeps its connection (see linger)
            raise

    def _listed(self, parent_id: str, listed: PieceList) -> None:
        """A parent's piece list, read or streamed."""
        if listed.pieces != self.availability.get(parent_id):
            self.availability[parent_id] = listed.pieces
            if self._hungry.is_set():
                self._changed()
            else:
                self._stale = True  # the conductor has enough to do: tell it when hungry
        if listed.seed:
            self.seeds.add(parent_id)
