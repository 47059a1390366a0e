"""The JSON contract: request bodies into core events, decisions into response bodies.

Every field is checked here with a message naming it (see ``fields``); the core events
check their invariants again, which only matters for callers other than the service.
``openapi`` documents the same shapes; a test keeps the two in step.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from scheduler.core import (
    BackToSource,
    Decision,
    HostAnnounced,
    ParentChoice,
    Parents,
    PeerRegistered,
    PieceReport,
    PiecesReported,
    RetryLater,
)
from scheduler.core.claims import ClaimsAnswer
from scheduler.service.fields import (
    MAX_LABEL_CHARS,
    ObjectReader,
    as_address,
    as_digest,
    as_identifier,
    as_int,
    as_label,
    bad,
)

# A task's piece availability and bitmasks grow with its piece count, so one request must
# not be able to create a task with billions of pieces. A 1 TiB blob in 64 MiB pieces has
# 16,384; peers cut blobs into about 500.
MAX_PIECES_PER_TASK = 1 << 20
# Reports in one batch; peers send a batch every fraction of a second, far fewer than this.
# 4096 reports with digests take about 700 KB, so the count, not the body size limit
# (api.MAX_BODY_BYTES), is what a client runs into first.
MAX_REPORTS_PER_BATCH = 4096

ACTION_PARENTS = "parents"
ACTION_BACK_TO_SOURCE = "back_to_source"
ACTION_RETRY_LATER = "retry_later"


def host_announced(body: object) -> HostAnnounced:
    """``POST /api/v1/hosts``."""
    r = ObjectReader(body)
    event = HostAnnounced(
        host_id=r.identifier("host_id"),
        address=as_address(r.get("address"), "address"),
        piece_port=r.integer("piece_port", 1, 65535),
        upload_capacity_bps=r.number("upload_capacity_bps"),
        download_capacity_bps=r.number("download_capacity_bps"),
        upload_slots=r.integer("upload_slots"),
        is_seed=r.optional_boolean("is_seed"),
        idc=r.label("idc"),
        rack=r.label("rack"),
        location=r.label("location"),
        upload_count=r.optional_integer("upload_count"),
        upload_bps=r.optional_number("upload_bps"),
    )
    r.done()
    return event


def peer_registered(body: object) -> PeerRegistered:
    """``POST /api/v1/peers``."""
    r = ObjectReader(body)
    peer_id = r.identifier("peer_id")
    task_id = r.digest("task_id")
    host_id = r.identifier("host_id")
    size_bytes = r.integer("size_bytes")
    piece_bytes = r.integer("piece_bytes", minimum=1)
    piece_count = -(-size_bytes // piece_bytes)
    if piece_count > MAX_PIECES_PER_TASK:
        raise bad(
            "piece_bytes",
            f"{size_bytes} bytes in pieces of {piece_bytes} bytes make {piece_count} pieces; "
            f"at most {MAX_PIECES_PER_TASK} are allowed",
        )
    pieces: set[int] = set()
    for number, item in enumerate(r.array("pieces", MAX_PIECES_PER_TASK, required=False)):
        field = f"pieces[{number}]"
        if piece_count == 0:
            raise bad(field, "an empty blob has no pieces")
        pieces.add(as_int(item, field, 0, piece_count - 1))
    digests = tuple(
        as_digest(item, f"piece_digests[{number}]")
        for number, item in enumerate(r.array("piece_digests", MAX_PIECES_PER_TASK, required=False))
    )
    r.done()
    return PeerRegistered(
        peer_id, task_id, host_id, size_bytes, piece_bytes, frozenset(pieces), digests
    )


def pieces_reported(peer_id: str, body: object) -> PiecesReported:
    """``POST /api/v1/peers/{peer_id}/pieces``."""
    r = ObjectReader(body)
    items = r.array("reports", MAX_REPORTS_PER_BATCH)
    reports = tuple(_piece_report(item, f"reports[{n}]") for n, item in enumerate(items))
    r.done()
    return PiecesReported(peer_id, reports)


def _piece_report(item: object, path: str) -> PieceReport:
    r = ObjectReader(item, path)
    piece_index = r.integer("piece_index", maximum=MAX_PIECES_PER_TASK - 1)
    report = PieceReport(
        piece_index=piece_index,
        # Null means the origin, but the field must be there: a peer that forgets it must
        # not pass for one that went to the origin, whose reports set trusted digests.
        parent_id=r.nullable_identifier("parent_id"),
        size_bytes=r.integer("size_bytes"),
        cost_s=r.number("cost_s"),
        ok=r.boolean("ok"),
        digest=r.optional_digest("digest"),
    )
    r.done()
    return report


def blocked_parent(peer_id: str, body: object) -> str:
    """``POST /api/v1/peers/{peer_id}/block``: the parent to block."""
    r = ObjectReader(body)
    parent_id = r.identifier("parent_id")
    r.done()
    if parent_id == peer_id:
        raise bad("parent_id", "a peer is not its own parent")
    return parent_id


def failure_reason(body: object) -> str | None:
    """``POST /api/v1/peers/{peer_id}/failed``: the peer's reason, if it gave one."""
    r = ObjectReader(body)
    value = r.get("reason", required=False)
    r.done()
    if value is None:
        return None
    reason = as_label(value, "reason")
    if not reason:
        raise bad("reason", f"must be 1..{MAX_LABEL_CHARS} characters (or omitted)")
    return reason


# Pieces one claims request may name; a peer claims what it is about to request, a
# handful at a time.
MAX_CLAIMS_PER_REQUEST = 4096


def import_claims(body: object) -> tuple[list[int], list[int]]:
    """``POST /api/v1/peers/{peer_id}/claims``: the pieces to claim and to release."""
    r = ObjectReader(body)
    lists = tuple(
        [
            as_int(item, f"{name}[{number}]", 0, MAX_PIECES_PER_TASK - 1)
            for number, item in enumerate(r.array(name, MAX_CLAIMS_PER_REQUEST, required=False))
        ]
        for name in ("claim", "release")
    )
    r.done()
    return lists[0], lists[1]


# Pieces one take may ask for; a peer takes a few at a time.
MAX_ORIGIN_TAKE = 256


def origin_take(body: object) -> int:
    """``POST /api/v1/peers/{peer_id}/origin-pieces``: how many pieces to take."""
    r = ObjectReader(body)
    want = r.integer("want", minimum=1, maximum=MAX_ORIGIN_TAKE)
    r.done()
    return want


def no_fields(body: object) -> None:
    """Endpoints whose body is empty or ``{}``."""
    ObjectReader(body).done()


def path_identifier(value: str, name: str) -> str:
    """An id from the URL path, held to the same rules as in a body."""
    return as_identifier(value, name)


def decision_json(decision: Decision, piece_digests: Mapping[int, str]) -> dict[str, Any]:
    if isinstance(decision, Parents):
        return {
            "action": ACTION_PARENTS,
            "parents": [parent_choice_json(choice) for choice in decision.parents],
            "stripe": (
                {"index": decision.stripe.index, "count": decision.stripe.count}
                if decision.stripe is not None
                else None
            ),
            "piece_digests": digests_json(piece_digests),
        }
    if isinstance(decision, BackToSource):
        return {
            "action": ACTION_BACK_TO_SOURCE,
            "reason": str(decision.reason),
            "shared": decision.shared,
        }
    assert isinstance(decision, RetryLater)
    return {
        "action": ACTION_RETRY_LATER,
        "after_s": decision.after_s,
        "reason": str(decision.reason),
    }


def claims_json(answer: ClaimsAnswer) -> dict[str, Any]:
    """``POST /api/v1/peers/{peer_id}/claims``'s answer."""
    return {
        "granted": answer.granted,
        "claimed": answer.claimed,
        "holders": [parent_choice_json(holder) for holder in answer.holders],
    }


def parent_choice_json(choice: ParentChoice) -> dict[str, Any]:
    """One parent as a decision or a claims answer names it."""
    return {
        "peer_id": choice.peer_id,
        "host_id": choice.host_id,
        "address": choice.address,
        "piece_port": choice.piece_port,
        # JSON has no NaN; an evaluator that produced one ranked it last anyway.
        "score": choice.score if math.isfinite(choice.score) else 0.0,
        "other_rack": choice.other_rack,
    }


def digests_json(piece_digests: Mapping[int, str]) -> dict[str, str]:
    """JSON object keys are strings: ``{"0": "sha256:...", ...}`` in piece order."""
    return {str(index): piece_digests[index] for index in sorted(piece_digests)}


def decision_body(decision: Decision, piece_digests_text: str) -> bytes:
    """``decision_json`` as bytes, with the piece digests already serialised.

    A parents decision carries every trusted digest of the task (hundreds of them), which
    used to be a fifth of the scheduler's CPU time per decision; they change rarely, so
    ``DigestsText`` serialises them once per change and this splices the text in.
    """
    document = decision_json(decision, {})
    if "piece_digests" not in document:
        return json.dumps(document).encode()
    del document["piece_digests"]
    head = json.dumps(document)
    return f'{head[:-1]}, "piece_digests": {piece_digests_text}}}'.encode()


class DigestsText:
    """The JSON text of each task's trusted piece digests, until they change.

    Kept for the ``max_tasks`` tasks decided on most recently. A lookup compares the
    digests with the ones the text was made from (a few microseconds), so a digest that
    was dropped or set since is never served stale.
    """

    def __init__(self, max_tasks: int = 1024) -> None:
        self._max_tasks = max_tasks
        self._texts: OrderedDict[str, tuple[dict[int, str], str]] = OrderedDict()

    def get(self, task_id: str, piece_digests: Mapping[int, str]) -> str:
        cached = self._texts.get(task_id)
        if cached is not None and cached[0] == piece_digests:
            self._texts.move_to_end(task_id)
            return cached[1]
        text = json.dumps(digests_json(piece_digests))
        self._texts[task_id] = (dict(piece_digests), text)
        self._texts.move_to_end(task_id)
        if len(self._texts) > self._max_tasks:
            self._texts.popitem(last=False)
        return text
