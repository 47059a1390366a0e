"""The component schemas of the scheduler's OpenAPI document (``openapi``).

Written by hand next to ``wire``, which implements the same shapes; the reason enums
come from the core so they cannot drift.
"""

from __future__ import annotations

from typing import Any

from scheduler.core import DecisionReason
from scheduler.service.fields import (
    DIGEST_PATTERN,
    HOSTNAME_PATTERN,
    IDENTIFIER_PATTERN,
    LABEL_PATTERN,
    MAX_HOSTNAME_CHARS,
    MAX_ID_CHARS,
    MAX_INT,
    MAX_LABEL_CHARS,
)
from scheduler.service.status_schema import status_schemas
from scheduler.service.wire import (
    MAX_CLAIMS_PER_REQUEST,
    MAX_ORIGIN_TAKE,
    MAX_PIECES_PER_TASK,
    MAX_REPORTS_PER_BATCH,
)

JSON = "application/json"
_BACK_TO_SOURCE_REASONS = [
    DecisionReason.SEED_PEER,
    DecisionReason.ALREADY_BACK_TO_SOURCE,
    DecisionReason.NO_SOURCE_IN_SWARM,
    DecisionReason.GAVE_UP_WAITING,
    DecisionReason.SWARM_CANNOT_SERVE,
    DecisionReason.EMPTY_TASK,
    DecisionReason.ORIGIN_SHARE,
]
_RETRY_LATER_REASONS = [r for r in DecisionReason if r not in _BACK_TO_SOURCE_REASONS]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# Keywords that describe a value rather than constrain it; they stay outside ``anyOf``.
_ANNOTATIONS = ("description", "default", "examples")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null: an optional field sent as null counts as absent (``fields``)."""
    alternatives = schema.get("oneOf") or schema.get("anyOf") or []
    if {"type": "null"} in alternatives:
        return schema
    inner = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
    outer = {k: v for k, v in schema.items() if k in _ANNOTATIONS}
    return {"anyOf": [inner, {"type": "null"}], **outer}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": {
            name: schema if name in required else _nullable(schema)
            for name, schema in properties.items()
        },
        "additionalProperties": False,
    }


_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
_NUMBER = {"type": "number", "minimum": 0, "maximum": MAX_INT}
_PIECE_INDEX = {"type": "integer", "minimum": 0, "maximum": MAX_PIECES_PER_TASK - 1}
_LABEL = {"type": "string", "maxLength": MAX_LABEL_CHARS, "pattern": LABEL_PATTERN}

SCHEMAS: dict[str, Any] = {
    "Identifier": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_CHARS,
        "pattern": IDENTIFIER_PATTERN,
        "description": "An id chosen by the client: no spaces or control characters.",
    },
    "Digest": {
        "type": "string",
        "maxLength": MAX_ID_CHARS,
        "pattern": DIGEST_PATTERN,
        "description": "An OCI digest; sha256 digests have 64 lowercase hex digits.",
        "examples": ["sha256:" + "0" * 64],
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What was wrong, for humans."},
            "field": {
                "type": "string",
                "description": "The JSON path of the refused field (`reports[2].cost_s`), "
                "`body` when the body as a whole is unusable, or `Content-Type`.",
            },
        },
    },
    "Empty": {"type": "object", "additionalProperties": False},
    "HostAnnouncement": _object(
        [
            "host_id",
            "address",
            "piece_port",
            "upload_capacity_bps",
            "download_capacity_bps",
            "upload_slots",
        ],
        host_id=ref("Identifier"),
        address={
            "type": "string",
            "maxLength": MAX_HOSTNAME_CHARS,
            "anyOf": [{"pattern": HOSTNAME_PATTERN}, {"format": "ipv6"}],
            "description": "IP address or DNS name other peers fetch pieces from; no scheme, "
            "no port.",
            "examples": ["10.0.0.7", "node-7.cluster.local"],
        },
        piece_port={"type": "integer", "minimum": 1, "maximum": 65535},
        upload_capacity_bps=_NUMBER,
        download_capacity_bps=_NUMBER,
        upload_slots={**_COUNT, "description": "Children this host serves at once."},
        is_seed={"type": "boolean", "default": False},
        idc={**_LABEL, "default": ""},
        rack={**_LABEL, "default": "", "description": "Unique within its idc."},
        location={
            **_LABEL,
            "default": "",
            "description": "`|`-separated, most general first: `country|region|city`.",
        },
        upload_count={**_COUNT, "default": 0, "description": "Uploads in progress now."},
        upload_bps={**_NUMBER, "default": 0, "description": "Current upload rate."},
    ),
    "HostAccepted": _object(
        ["host_ttl_s", "new_host"],
        host_ttl_s={
            "type": "number",
            "description": "Announce again within this many seconds or the host expires.",
        },
        new_host={
            "type": "boolean",
            "description": "The scheduler did not know this host (it joined, or the "
            "scheduler restarted): the peer should register the blobs it holds again.",
        },
    ),
    "PeerRegistration": _object(
        ["peer_id", "task_id", "host_id", "size_bytes", "piece_bytes"],
        peer_id=ref("Identifier"),
        task_id={**ref("Digest"), "description": "The blob digest."},
        host_id=ref("Identifier"),
        size_bytes=_COUNT,
        piece_bytes={
            **_COUNT,
            "minimum": 1,
            "description": f"At most {MAX_PIECES_PER_TASK} pieces per blob.",
        },
        pieces={
            "type": "array",
            "items": _PIECE_INDEX,
            "maxItems": MAX_PIECES_PER_TASK,
            "description": "Pieces the peer already holds (re-registration).",
        },
        piece_digests={
            "type": "array",
            "items": ref("Digest"),
            "maxItems": MAX_PIECES_PER_TASK,
            "description": "Only from a peer holding the whole, verified blob: the digest "
            "of every piece in order. Trusted for pieces no origin or seed report vouched "
            "for (after a scheduler restart); a conflicting digest is a 409.",
        },
    ),
    "PieceReport": _object(
        ["piece_index", "parent_id", "size_bytes", "cost_s", "ok"],
        piece_index=_PIECE_INDEX,
        parent_id={
            "oneOf": [ref("Identifier"), {"type": "null"}],
            "description": "The parent peer; null for the origin registry.",
        },
        size_bytes=_COUNT,
        cost_s={**_NUMBER, "description": "Seconds the transfer took."},
        ok={"type": "boolean"},
        digest={
            "oneOf": [ref("Digest"), {"type": "null"}],
            "description": "Digest of the bytes received. From the origin or a seed peer, "
            "the first one becomes the trusted digest of the piece; a different digest "
            "later is a 409.",
        },
    ),
    "PieceReports": _object(
        ["reports"],
        reports={"type": "array", "items": ref("PieceReport"), "maxItems": MAX_REPORTS_PER_BATCH},
    ),
    "BlockRequest": _object(["parent_id"], parent_id=ref("Identifier")),
    "ImportClaims": _object(
        [],
        claim={
            "type": "array",
            "items": _PIECE_INDEX,
            "maxItems": MAX_CLAIMS_PER_REQUEST,
            "description": "Pieces the peer is about to ask other racks' normal peers for.",
        },
        release={
            "type": "array",
            "items": _PIECE_INDEX,
            "maxItems": MAX_CLAIMS_PER_REQUEST,
            "description": "Pieces it claimed earlier whose requests ended (arrived or failed).",
        },
    ),
    "GrantedClaims": _object(
        ["granted", "claimed", "holders"],
        granted={
            "type": "array",
            "items": _PIECE_INDEX,
            "description": "The claimed pieces the peer may fetch from other racks now; "
            "a rack-mate fetches the others.",
        },
        claimed={
            "type": "array",
            "items": _PIECE_INDEX,
            "description": "Every piece the peer's rack-mates are fetching from other "
            "racks (empty when `claim` was), and the claimed pieces a rack-mate holds: "
            "it gets those from them instead.",
        },
        holders={
            "type": "array",
            "items": ref("ParentChoice"),
            "description": "Rack-mates holding claimed pieces, now parents of the peer "
            "besides those of its last decision (score 0: not scored). It asks them for "
            "those pieces.",
        },
    ),
    "OriginTake": _object(
        ["want"],
        want={
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_ORIGIN_TAKE,
            "description": "How many pieces the peer fetches from the origin next.",
        },
    ),
    "OriginPieces": _object(
        ["pieces"],
        pieces={
            "type": "array",
            "items": _PIECE_INDEX,
            "description": "Pieces to fetch from the origin now, lowest first: no live peer "
            "holds them and no other peer took them. Empty: its share is done (or it was "
            "not sent to take one); it asks for a decision next.",
        },
    ),
    "FailureReport": _object(
        [],
        reason={**_LABEL, "minLength": 1, "examples": ["digest_mismatch"]},
    ),
    "PieceDigests": {
        "type": "object",
        "propertyNames": {"pattern": "^(0|[1-9][0-9]*)$"},
        "additionalProperties": ref("Digest"),
        "description": "Trusted piece digests by piece index (as a string).",
    },
    "TaskPieces": _object(
        ["piece_digests", "spread"],
        piece_digests=ref("PieceDigests"),
        spread={
            "type": "array",
            "items": _COUNT,
            "description": "Per piece, the live normal (non-seed) peers holding it; empty "
            "for a task nobody works on.",
        },
    ),
    "ParentChoice": _object(
        ["peer_id", "host_id", "address", "piece_port", "score"],
        peer_id=ref("Identifier"),
        host_id=ref("Identifier"),
        address={"type": "string"},
        piece_port={"type": "integer", "minimum": 1, "maximum": 65535},
        score={"type": "number", "description": "Evaluator score; higher is better."},
        other_rack={
            "type": "boolean",
            "default": False,
            "description": "A normal peer in another rack than the child's: the child "
            "asks this parent only for the pieces of its `stripe`, unless that leaves it "
            "with nothing to fetch and nothing in flight.",
        },
    ),
    "Stripe": {
        **_object(["index", "count"], index=_COUNT, count={"type": "integer", "minimum": 2}),
        "description": "The child's share of what its rack fetches from other racks: "
        "the pieces i with i % count == index.",
    },
    "ParentsDecision": _object(
        ["action", "parents", "piece_digests"],
        action={"const": "parents"},
        parents={
            "type": "array",
            "items": ref("ParentChoice"),
            "description": "Best first; replaces the previous parents. Empty only when a "
            "peer registers holding every piece.",
        },
        piece_digests=ref("PieceDigests"),
        stripe=ref("Stripe"),
    ),
    "BackToSourceDecision": _object(
        ["action", "reason", "shared"],
        action={"const": "back_to_source"},
        reason={"enum": [str(r) for r in _BACK_TO_SOURCE_REASONS]},
        shared={
            "type": "boolean",
            "description": "True: fetch from the origin only the pieces "
            "`POST /api/v1/peers/{peer_id}/origin-pieces` hands out, a few at a time, and "
            "ask for a decision once it hands out none. False: fetch every missing piece.",
        },
    ),
    "RetryLaterDecision": _object(
        ["action", "after_s", "reason"],
        action={"const": "retry_later"},
        after_s={"type": "number", "minimum": 0},
        reason={"enum": [str(r) for r in _RETRY_LATER_REASONS]},
    ),
    "Decision": {
        "oneOf": [
            ref("ParentsDecision"),
            ref("BackToSourceDecision"),
            ref("RetryLaterDecision"),
        ],
        "discriminator": {
            "propertyName": "action",
            "mapping": {
                "parents": "#/components/schemas/ParentsDecision",
                "back_to_source": "#/components/schemas/BackToSourceDecision",
                "retry_later": "#/components/schemas/RetryLaterDecision",
            },
        },
    },
    "Replica": _object(
        ["url", "heartbeat_age_s"],
        url={"type": "string", "examples": ["http://10.0.0.5:8002"]},
        heartbeat_age_s={**_NUMBER, "description": "Seconds since its last heartbeat."},
    ),
    "Replicas": _object(
        ["membership", "self", "store", "replicas"],
        membership={
            "enum": ["redis", "static"],
            "description": "`redis`: the live replicas from their heartbeats in Redis; route "
            "each task to one of them. `static`: no shared membership; route over the "
            "scheduler URLs the peer was configured with.",
        },
        self={"type": "string", "description": "This replica's URL."},
        store={
            "enum": ["reachable", "unreachable", "none"],
            "description": "Whether Redis answered the last heartbeat; `none` without Redis. "
            "While it is unreachable the list stays as it last was.",
        },
        replicas={
            "type": "array",
            "items": ref("Replica"),
            "minItems": 1,
            "description": "Live replicas in URL order, this one included.",
        },
    ),
    "Health": _object(
        ["status", "hosts", "peers", "tasks"],
        status={"const": "ok"},
        hosts=_COUNT,
        peers=_COUNT,
        tasks=_COUNT,
    ),
    **status_schemas(),
}
