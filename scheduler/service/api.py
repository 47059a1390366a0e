"""The ``/api/v1`` routes: parse the request, run one operation in the writer, answer.

Each handler builds a core event from the body (``wire``), submits one operation to the
writer and turns its result into JSON. Operations that end in a decision (register,
schedule, block) compute it in the same operation as the event, so nothing can change
the state between the two. Errors propagate to the middleware in ``app``, which maps
them onto statuses; handlers only deal with the successful path.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from aiohttp import hdrs, web

from scheduler.core import (
    BackToSource,
    Decision,
    Parents,
    PeerFailed,
    PeerState,
    SchedulerState,
)
from scheduler.service import wire
from scheduler.service.errors import ProtocolError
from scheduler.service.fields import BODY, as_digest, parse_body
from scheduler.service.metrics import EVICTION_REPORTED_BY_CHILD, SchedulerMetrics, piece_source
from scheduler.service.writer import StateWriter

log = logging.getLogger(__name__)

# Large enough for a batch of thousands of piece reports; a bigger body is a broken client.
MAX_BODY_BYTES = 1024 * 1024
# A report batch's piece sources and the parents it blocked, for the metrics.
_ReportEffect = tuple[list[str], set[str]]
JSON = "application/json"


@dataclass(frozen=True)
class Outcome:
    """A decision with what the handler needs to answer and log it."""

    # None: the peer already holds every piece, so there is nothing to decide. It is
    # answered with an empty parents list, not an error: a schedule request that crossed
    # the peer's own "finished" on the wire is a race, not a mistake.
    decision: Decision | None
    task_id: str
    piece_digests: dict[int, str]


def _decide(state: SchedulerState, peer_id: str, now: float, rng: random.Random) -> Outcome:
    peer = state.peer(peer_id)
    task_id = peer.task.task_id
    if peer.state is PeerState.SUCCEEDED:
        return Outcome(None, task_id, state.task_piece_digests(task_id))
    decision = state.schedule(peer_id, now, rng)
    # Parents get the digests to verify pieces against, saving a round trip.
    digests = state.task_piece_digests(task_id) if isinstance(decision, Parents) else {}
    return Outcome(decision, task_id, digests)


async def read_body(request: web.Request) -> object:
    """The request's JSON body; an empty body is ``{}`` whatever its declared type."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(413, f"body larger than {MAX_BODY_BYTES} bytes", BODY) from None
    if raw.strip() and not _is_json(request.content_type):
        # A form or text body that happens to hold JSON is still a client that does not
        # speak this API; say so instead of guessing.
        declared = request.headers.get(hdrs.CONTENT_TYPE, "none")
        raise ProtocolError(
            415, f"{hdrs.CONTENT_TYPE}: expected {JSON}, got {declared}", hdrs.CONTENT_TYPE
        )
    return parse_body(raw)


def _is_json(content_type: str) -> bool:
    """``application/json`` or a JSON-based type (``application/problem+json``)."""
    return content_type == JSON or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _ok() -> web.Response:
    return web.json_response({})


class SchedulerApi:
    def __init__(self, writer: StateWriter, metrics: SchedulerMetrics, host_ttl_s: float) -> None:
        self._writer = writer
        self._metrics = metrics
        self._host_ttl_s = host_ttl_s
        self._digests_text = wire.DigestsText()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_routes(
            [
                web.post("/api/v1/hosts", self.announce_host),
                web.delete("/api/v1/hosts/{host_id}", self.remove_host),
                web.post("/api/v1/peers", self.register_peer),
                web.post("/api/v1/peers/{peer_id}/schedule", self.schedule),
                web.post("/api/v1/peers/{peer_id}/pieces", self.report_pieces),
                web.post("/api/v1/peers/{peer_id}/block", self.block_parent),
                web.post("/api/v1/peers/{peer_id}/claims", self.claim_imports),
                web.post("/api/v1/peers/{peer_id}/origin-pieces", self.take_origin_pieces),
                web.post("/api/v1/peers/{peer_id}/finished", self.finish_peer),
                web.post("/api/v1/peers/{peer_id}/failed", self.fail_peer),
                web.delete("/api/v1/peers/{peer_id}", self.remove_peer),
                web.get("/api/v1/tasks/{task_id}/pieces", self.task_pieces),
            ]
        )

    # -- hosts -------------------------------------------------------------------------

    async def announce_host(self, request: web.Request) -> web.Response:
        event = wire.host_announced(await read_body(request))

        def announce(state: SchedulerState, now: float, rng: random.Random) -> bool:
            is_new = event.host_id not in state.hosts
            state.announce_host(event, now)
            return is_new

        is_new = await self._writer.submit(announce)
        if is_new:
            log.info(
                "host %s joined: %s:%d%s, %d upload slots",
                event.host_id,
                event.address,
                event.piece_port,
                " (seed)" if event.is_seed else "",
                event.upload_slots,
            )
        self._metrics.events.labels("host_announced").inc()
        return web.json_response({"host_ttl_s": self._host_ttl_s, "new_host": is_new})

    async def remove_host(self, request: web.Request) -> web.Response:
        host_id = wire.path_identifier(request.match_info["host_id"], "host_id")
        wire.no_fields(await read_body(request))
        removal = await self._writer.submit(lambda state, now, rng: state.expire_host(host_id))
        self._metrics.events.labels("host_left").inc()
        log.info("host %s left with %d peers", host_id, len(removal.removed_peer_ids))
        return _ok()

    # -- peers -------------------------------------------------------------------------

    async def register_peer(self, request: web.Request) -> web.Response:
        event = wire.peer_registered(await read_body(request))

        def register(state: SchedulerState, now: float, rng: random.Random) -> Outcome:
            state.register_peer(event, now)
            return _decide(state, event.peer_id, now, rng)

        started = time.perf_counter()
        outcome = await self._writer.submit(register)
        self._metrics.events.labels("peer_registered").inc()
        log.info(
            "peer %s registered for %s on host %s holding %d pieces",
            event.peer_id,
            event.task_id,
            event.host_id,
            len(event.pieces),
        )
        return self._answer(event.peer_id, outcome, started)

    async def schedule(self, request: web.Request) -> web.Response:
        peer_id = wire.path_identifier(request.match_info["peer_id"], "peer_id")
        wire.no_fields(await read_body(request))
        started = time.perf_counter()
        outcome = await self._writer.submit(
            lambda state, now, rng: _decide(state, peer_id, now, rng)
        )
        return self._answer(peer_id, outcome, started)

    async def report_pieces(self, request: web.Request) -> web.Response:
        peer_id = wire.path_identifier(request.match_info["peer_id"], "peer_id")
        event = wire.pieces_reported(peer_id, await read_body(request))

        def report(state: SchedulerState, now: float, rng: random.Random) -> _ReportEffect:
            # Sources are read before the batch (a seed may leave right after), and the
            # parents the batch blocked by comparing the child's blocked set around it.
            sources = [piece_source(state, r.parent_id) for r in event.reports]
            blocked = state.peer(peer_id).blocked_parent_ids
            before = set(blocked)
            state.report_pieces(event, now)
            return sources, blocked - before

        sources, newly_blocked = await self._writer.submit(report)
        self._metrics.events.labels("pieces_reported").inc()
        self._metrics.count_reports(event, sources, newly_blocked)
        return _ok()

    async def block_parent(self, request: web.Request) -> web.Response:
        peer_id = wire.path_identifier(request.match_info["peer_id"], "peer_id")
        parent_id = wire.blocked_parent(peer_id, await read_body(request))

        def block(state: SchedulerState, now: float, rng: random.Random) -> Outcome:
            state.block_parent(peer_id, parent_id)
            return _decide(state, peer_id, now, rng)

        started = time.perf_counter()
        outcome = await self._writer.submit(block)
        self._metrics.events.labels("parent_reported").inc()
        self._metrics.parent_evictions.labels(EVICTION_REPORTED_BY_CHILD).inc()
        log.info("peer %s blocked parent %s", peer_id, parent_id)
        return self._answer(peer_id, outcome, started)

    async def claim_imports(self, request: web.Request) -> web.Response:
        peer_id = wire.path_identifier(request.match_info["peer_id"], "peer_id")
        claim, release = wire.import_claims(await read_body(request))
        answer = await self._writer.submit(
            lambda state, now, rng: state.claim_imports(peer_id, claim, release, now)
        )
        claims = self._metrics.import_claims
        claims.labels("granted").inc(len(answer.granted))
        claims.labels("in_rack").inc(answer.in_rack)
        claims.labels("denied").inc(len(set(claim)) - len(answer.granted) - answer.in_rack)
        return web.json_response(wire.claims_json(answer))

    async def take_origin_pieces(self, request: web.Request) -> web.Response:
        peer_id = wire.path_identifier(request.match_info["peer_id"], "peer_id")
        want = wire.origin_take(await read_body(request))
        pieces = await self._writer.submit(
            lambda state, now, rng: state.take_origin_pieces(peer_id, want, now)
        )
        self._metrics.origin_pieces.inc(len(pieces))
        if not pieces:
            log.info("peer %s took its share of the origin fetch", peer_id)
        return web.json_response({"pieces": pieces})

    async def finish_peer(self, request: web.Request) -> web.Response:
        peer_id = wire.path_identifier(request.match_info["peer_id"], "peer_id")
        wire.no_fields(await read_body(request))

        def finish(state: SchedulerState, now: float, rng: random.Random) -> str:
            state.finish_peer(peer_id)
            return state.peer(peer_id).task.task_id

        task_id = await self._writer.submit(finish)
        self._metrics.events.labels("peer_finished").inc()
        log.info("peer %s finished %s", peer_id, task_id)
        return _ok()

    async def fail_peer(self, request: web.Request) -> web.Response:
        peer_id = wire.path_identifier(request.match_info["peer_id"], "peer_id")
        reason = wire.failure_reason(await read_body(request))

        def fail(state: SchedulerState, now: float, rng: random.Random) -> tuple[str, int]:
            task_id = state.peer(peer_id).task.task_id
            before = len(state.task_piece_digests(task_id))
            state.apply(PeerFailed(peer_id, reason), now)
            return task_id, before - len(state.task_piece_digests(task_id))

        task_id, dropped = await self._writer.submit(fail)
        self._metrics.events.labels("peer_failed").inc()
        log.info(
            "peer %s failed %s (%s); %d trusted piece digests dropped",
            peer_id,
            task_id,
            reason or "no reason given",
            dropped,
        )
        return _ok()

    async def remove_peer(self, request: web.Request) -> web.Response:
        peer_id = wire.path_identifier(request.match_info["peer_id"], "peer_id")
        wire.no_fields(await read_body(request))
        await self._writer.submit(lambda state, now, rng: state.remove_peer(peer_id))
        self._metrics.events.labels("peer_left").inc()
        log.info("peer %s left", peer_id)
        return _ok()

    # -- tasks -------------------------------------------------------------------------

    async def task_pieces(self, request: web.Request) -> web.Response:
        task_id = as_digest(request.match_info["task_id"], "task_id")
        digests, spread = await self._writer.submit(
            lambda state, now, rng: (state.task_piece_digests(task_id), state.task_spread(task_id))
        )
        return web.json_response({"piece_digests": wire.digests_json(digests), "spread": spread})

    # -- decisions ---------------------------------------------------------------------

    def _answer(self, peer_id: str, outcome: Outcome, started: float) -> web.Response:
        decision = outcome.decision
        if decision is None:
            # A peer holding the whole blob (re-registered, or finished): nothing to fetch.
            return self._decision_response(Parents(()), outcome)
        self._metrics.count_decision(decision, time.perf_counter() - started)
        if isinstance(decision, Parents):
            if log.isEnabledFor(logging.DEBUG):  # the join costs even when not logged
                log.debug(
                    "peer %s gets parents %s",
                    peer_id,
                    ", ".join(choice.peer_id for choice in decision.parents),
                )
        elif isinstance(decision, BackToSource):
            log.info(
                "peer %s goes back to source for %s: %s", peer_id, outcome.task_id, decision.reason
            )
        else:
            log.debug("peer %s retries later: %s", peer_id, decision.reason)
        return self._decision_response(decision, outcome)

    def _decision_response(self, decision: Decision, outcome: Outcome) -> web.Response:
        digests = ""
        if isinstance(decision, Parents):
            digests = self._digests_text.get(outcome.task_id, outcome.piece_digests)
        return web.Response(body=wire.decision_body(decision, digests), content_type=JSON)
