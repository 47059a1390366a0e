"""Routing the scheduler API over the scheduler replicas, and moving tasks when one dies.

:class:`peer.scheduler_client.SchedulerClient` sends every request through a
:class:`ReplicaRouter`, which picks the replica from the request's path:

- ``POST /hosts`` (announce) and ``DELETE /hosts/{id}`` go to every live replica. Each
  replica keeps its own host records in memory, so whichever replica owns a task can
  schedule any host's peers, and no decision waits on shared state.
- ``POST /peers`` (register) goes to the owner of the task: the first replica of the
  rendezvous ranking of the task id over the live replicas (``peer.rendezvous``). Every
  peer computes the same owner, so all peers of a task meet at one replica.
- ``/peers/{peer_id}/...`` goes to the owner of that peer's task. When the peer is
  registered elsewhere (its replica died, or the live list changed), it is *moved* first:
  registered at the owner with the pieces it holds (those it registered with and every
  piece reported ok since), and forgotten at the old replica if that one still answers.
  A schedule request is answered by the move's own decision; other calls then go on at
  the new replica, so transfer reports (and the origin digests in them) arrive there too.
- ``/tasks/{task_id}/...`` goes to the task's owner.

A replica that refuses a connection, times out or answers 5xx is marked down
(``peer.replica_view``) and the request goes to the next replica of the ranking: only when
every replica fails does the caller get :class:`SchedulerUnavailable` (and go to the
registry). A replica that answers 404 for a registered peer has lost it (it restarted, or
the host expired there): the peer is registered there again and the call repeated once.

The live list comes from ``GET /api/v1/replicas`` of any reachable replica: read before
the first request, at every host announcement and after a replica failed. Complete blobs
the daemon holds are registered again by its announce loop: an announcement answers
``new_host`` when the live set changed since the previous one, and
:meth:`ReplicaRouter.wait_for_change` ends the loop's wait as soon as a request found a
replica down. With one URL and schedulers without shared membership, every request goes
to that one scheduler, as before replicas existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp

from cluster_tls import describe_failure
from peer.replica_view import ReplicaView

log = logging.getLogger(__name__)

DEFAULT_HOST_TTL_S = 30.0


class SchedulerUnavailable(Exception):
    """No scheduler replica could be reached or they failed; fall back to the registry."""


class SchedulerRejected(Exception):
    """The scheduler refused a request as invalid (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"scheduler answered {status}: {message}")
        self.status = status


@dataclass
class _Registration:
    """A peer this router registered: what it takes to register it again elsewhere."""

    task_id: str
    body: dict[str, Any]  # the registration as sent, less its pieces and piece digests
    piece_count: int
    pieces: set[int] = field(default_factory=set)
    complete: bool = False  # holds every piece (then ``pieces`` is left empty)
    replica: str | None = None  # the replica that has it now

    def again(self) -> dict[str, Any]:
        pieces = range(self.piece_count) if self.complete else sorted(self.pieces)
        return {**self.body, "pieces": list(pieces)}


def _task_of(peer_id: str) -> str:
    """The task of a peer this router never registered (``peer.engine.peer_id_for`` ends a
    peer id with the hex of the blob's sha256); the peer id itself when it does not."""
    hex_part = peer_id.rpartition("_")[2]
    return f"sha256:{hex_part}" if len(hex_part) == 64 else peer_id


def _membership(answer: Any) -> dict[str, float] | None:
    """Replica URL -> heartbeat age from a ``GET /replicas`` answer; None unless shared."""
    if not isinstance(answer, dict) or answer.get("membership") != "redis":
        return None
    replicas: dict[str, float] = {}
    for item in answer.get("replicas") or ():
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            age = item.get("heartbeat_age_s")
            replicas[item["url"]] = float(age) if isinstance(age, int | float) else 0.0
    return replicas or None


class ReplicaRouter:
    def __init__(
        self,
        urls: Sequence[str],
        session: aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
        ca_name: str = "tls.ca_file",
    ) -> None:
        self.view = ReplicaView(urls)
        if not self.view.configured:
            raise ValueError("no scheduler URL given")
        self._session = session
        self._ca_name = ca_name  # what the session trusts, for TLS failures in the log
        self._clock = clock
        self._peers: dict[str, _Registration] = {}
        self._host: Any = None  # the last host announcement, repeated where it is unknown
        self._announced: tuple[str, ...] | None = None  # live replicas at the last one
        self._refreshed = False
        self._refresh_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()

    def live(self) -> tuple[str, ...]:
        return self.view.live(self._clock())

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return after ``timeout_s``, or earlier when a replica was found down."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout_s)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send one ``/api/v1`` request (``path`` below it) to the replica it belongs to."""
        parts = [unquote(part) for part in path.strip("/").split("/")]
        head = parts[0]
        if head == "hosts":
            if method == "POST" and len(parts) == 1:
                return await self._announce(body)
            return await self._everywhere(self._live_or_known(), method, path, body)
        if head == "peers" and len(parts) == 1 and method == "POST":
            return await self._register(body)
        if head == "peers":
            action = parts[2] if len(parts) > 2 else ""
            return await self._peer_call(parts[1], action, method, path, body)
        key = parts[1] if head == "tasks" and len(parts) > 1 else ""
        return await self._routed(key, method, path, body)

    # -- one replica -------------------------------------------------------------------

    async def _send(self, url: str, method: str, path: str, body: Any) -> Any:
        try:
            async with self._session.request(method, f"{url}/api/v1{path}", json=body) as resp:
                if resp.status >= 500:
                    raise SchedulerUnavailable(f"{url}: {method} {path}: {resp.status}")
                payload = await resp.json(content_type=None)
                if resp.status >= 400:
                    message = payload.get("error") if isinstance(payload, dict) else payload
                    raise SchedulerRejected(resp.status, f"{method} {path}: {message}")
                return payload
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # A replica whose certificate is refused is as unusable as one that is down,
            # but the log must say it was TLS, not a dead scheduler.
            reason = describe_failure(exc, self._ca_name) or str(exc) or repr(exc)
            raise SchedulerUnavailable(f"{url}: {method} {path}: {reason}") from exc

    def _lost(self, url: str, exc: Exception, refresh: bool = True) -> None:
        """``url`` failed a request: skip it from now on, and learn who is left."""
        now = self._clock()
        was_live = url in self.view.live(now)
        self.view.mark_down(url, now)
        if not was_live:
            return
        log.warning("scheduler replica %s failed (%s); its tasks go to the next replica", url, exc)
        self.changed.set()
        if refresh and len(self.view.known()) > 1:
            self._spawn(self._refresh())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the live list -----------------------------------------------------------------

    async def _ensure_view(self) -> None:
        if not self._refreshed:
            async with self._refresh_lock:
                if not self._refreshed:
                    await self._read_membership()

    async def _refresh(self) -> None:
        async with self._refresh_lock:
            await self._read_membership()

    async def _read_membership(self) -> None:
        """Ask the live replicas, then the configured URLs, for the live list; the first
        answer counts. No answer leaves the view as it is."""
        before = self.live()
        tried: list[str] = []
        for url in [*before, *self.view.configured]:
            if url in tried:
                continue
            tried.append(url)
            try:
                answer = await self._send(url, "GET", "/replicas", None)
            except SchedulerRejected:
                answer = None  # a scheduler without the route shares no membership
            except SchedulerUnavailable as exc:
                self._lost(url, exc, refresh=False)
                continue
            self.view.discovered(_membership(answer), self._clock())
            break
        self._refreshed = True
        after = self.live()
        if after != before:
            log.info("scheduler replicas: %s", ", ".join(after) or "none reachable")
            self.changed.set()

    def _live_or_known(self) -> tuple[str, ...]:
        return self.live() or self.view.known()

    # -- routing -----------------------------------------------------------------------

    async def _routed(self, key: str, method: str, path: str, body: Any) -> Any:
        """Send to the owner of ``key``, or its successors while replicas fail."""
        await self._ensure_view()
        failure: SchedulerUnavailable | None = None
        for url in self.view.candidates(key, self._clock()):
            try:
                return await self._send(url, method, path, body)
            except SchedulerUnavailable as exc:
                self._lost(url, exc)
                failure = exc
        raise failure or SchedulerUnavailable(f"{method} {path}: no scheduler replica")

    async def _everywhere(self, targets: Iterable[str], method: str, path: str, body: Any) -> Any:
        """Send to every target; the answers of those that accepted it (one at least)."""
        targets = list(targets)
        results = await asyncio.gather(
            *(self._send(url, method, path, body) for url in targets), return_exceptions=True
        )
        answers: list[Any] = []
        refusals: list[SchedulerRejected] = []
        failures: list[SchedulerUnavailable] = []
        for url, result in zip(targets, results, strict=True):
            if isinstance(result, SchedulerUnavailable):
                self._lost(url, result)
                failures.append(result)
            elif isinstance(result, SchedulerRejected):
                refusals.append(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                answers.append(result)
        if answers:
            return answers
        if refusals:
            raise refusals[0]
        first = f" ({failures[0]})" if failures else ""
        raise SchedulerUnavailable(f"{method} {path}: no scheduler replica answered{first}")

    async def _announce(self, host: Any) -> dict[str, Any]:
        self._host = host
        self.changed.clear()
        await self._refresh()
        answers = await self._everywhere(self._live_or_known(), "POST", "/hosts", host)
        ttls = [float(a.get("host_ttl_s", DEFAULT_HOST_TTL_S)) for a in answers]
        new_host = any(bool(a.get("new_host")) for a in answers)
        live = self.live()
        if live != self._announced:
            # Tasks changed owners: what this host holds must be registered at the new ones.
            new_host = True
            self._announced = live
        return {"host_ttl_s": min(ttls), "new_host": new_host}

    async def _register(self, body: Any) -> Any:
        peer_id, task_id = str(body["peer_id"]), str(body["task_id"])
        piece_bytes = int(body["piece_bytes"])
        count = -(-int(body["size_bytes"]) // piece_bytes) if piece_bytes > 0 else 0
        pieces = {int(i) for i in body.get("pieces") or ()}
        kept = {k: v for k, v in body.items() if k not in ("pieces", "piece_digests")}
        record = _Registration(task_id, kept, count, pieces)
        if count and len(pieces) >= count:
            record.complete, record.pieces = True, set()
        previous = self._peers.get(peer_id)
        await self._ensure_view()
        failure: SchedulerUnavailable | None = None
        for url in self.view.candidates(task_id, self._clock()):
            try:
                answer = await self._register_at(url, body)
            except SchedulerUnavailable as exc:
                self._lost(url, exc)
                failure = exc
                continue
            record.replica = url
            self._peers[peer_id] = record
            if previous is not None and previous.replica not in (None, url):
                self._forget(previous.replica, peer_id)
            return answer
        raise failure or SchedulerUnavailable("POST /peers: no scheduler replica")

    async def _register_at(self, url: str, body: Any) -> Any:
        try:
            return await self._send(url, "POST", "/peers", body)
        except SchedulerRejected as exc:
            if exc.status != 404 or self._host is None:
                raise
        # The replica does not know this host (it joined or restarted since the last
        # announcement): announce the host there, then register.
        await self._send(url, "POST", "/hosts", self._host)
        return await self._send(url, "POST", "/peers", body)

    async def _peer_call(self, peer_id: str, action: str, method: str, path: str, body: Any) -> Any:
        record = self._peers.get(peer_id)
        if record is None:
            return await self._routed(_task_of(peer_id), method, path, body)
        if action == "pieces" and isinstance(body, dict):
            record.pieces.update(
                int(r["piece_index"]) for r in body.get("reports", ()) if r.get("ok")
            )
        elif action == "finished":
            record.complete, record.pieces = True, set()
        if method == "DELETE" or action == "failed":
            # Leaving: only the replica that has the peer needs to hear it.
            del self._peers[peer_id]
            url = record.replica or self._live_or_known()[0]
            try:
                return await self._send(url, method, path, body)
            except SchedulerUnavailable as exc:
                self._lost(url, exc)
                raise
        await self._ensure_view()
        failure: SchedulerUnavailable | None = None
        for url in self.view.candidates(record.task_id, self._clock()):
            try:
                return await self._peer_call_at(url, record, peer_id, action, method, path, body)
            except SchedulerUnavailable as exc:
                self._lost(url, exc)
                failure = exc
        raise failure or SchedulerUnavailable(f"{method} {path}: no scheduler replica")

    async def _peer_call_at(
        self,
        url: str,
        record: _Registration,
        peer_id: str,
        action: str,
        method: str,
        path: str,
        body: Any,
    ) -> Any:
        if record.replica != url:
            decision = await self._move(url, record, peer_id)
            if action == "schedule":
                return decision
        try:
            return await self._send(url, method, path, body)
        except SchedulerRejected as exc:
            if exc.status != 404:
                raise
        # The replica lost the peer (it restarted, or this host expired there).
        decision = await self._move(url, record, peer_id)
        if action == "schedule":
            return decision
        return await self._send(url, method, path, body)

    async def _move(self, url: str, record: _Registration, peer_id: str) -> Any:
        """Register the peer at ``url`` with what it holds; the registration's decision."""
        body = record.again()
        decision = await self._register_at(url, body)
        old, record.replica = record.replica, url
        log.info(
            "%s: registered at scheduler replica %s with %d of %d pieces",
            peer_id,
            url,
            len(body["pieces"]),
            record.piece_count,
        )
        if old is not None and old != url:
            self._forget(old, peer_id)
        return decision

    def _forget(self, url: str, peer_id: str) -> None:
        """Tell a replica that still answers that the peer moved away (best effort)."""
        if self.view.is_down(url, self._clock()):
            return

        async def forget() -> None:
            with contextlib.suppress(SchedulerUnavailable, SchedulerRejected):
                await self._send(url, "DELETE", f"/peers/{peer_id}", None)

        self._spawn(forget())
