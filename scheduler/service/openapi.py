"""The OpenAPI 3.1 document of the scheduler API, served at ``/api/v1/openapi.json``.

Written by hand next to ``wire`` (which implements the same shapes); the integration tests
validate the document, check that every route of the app appears in it, and check real
responses against its schemas. The reason enums come from the core so they cannot drift.
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
from scheduler.service.status_schema import status_paths, status_schemas
from scheduler.service.wire import (
    MAX_CLAIMS_PER_REQUEST,
    MAX_PIECES_PER_TASK,
    MAX_REPORTS_PER_BATCH,
)

JSON = "application/json"
_BACK_TO_SOURCE_REASONS = [
    DecisionReason.SEED_PEER,
    DecisionReason.ALREADY_BACK_TO_SOURCE,
    DecisionReason.NO_SOURCE_IN_SWARM,
    DecisionReason.GAVE_UP_WAITING,
    DecisionReason.EMPTY_TASK,
]
_RETRY_LATER_REASONS = [r for r in DecisionReason if r not in _BACK_TO_SOURCE_REASONS]


def _ref(name: str) -> dict[str, str]:
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
        host_id=_ref("Identifier"),
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
        peer_id=_ref("Identifier"),
        task_id={**_ref("Digest"), "description": "The blob digest."},
        host_id=_ref("Identifier"),
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
            "items": _ref("Digest"),
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
            "oneOf": [_ref("Identifier"), {"type": "null"}],
            "description": "The parent peer; null for the origin registry.",
        },
        size_bytes=_COUNT,
        cost_s={**_NUMBER, "description": "Seconds the transfer took."},
        ok={"type": "boolean"},
        digest={
            "oneOf": [_ref("Digest"), {"type": "null"}],
            "description": "Digest of the bytes received. From the origin or a seed peer, "
            "the first one becomes the trusted digest of the piece; a different digest "
            "later is a 409.",
        },
    ),
    "PieceReports": _object(
        ["reports"],
        reports={"type": "array", "items": _ref("PieceReport"), "maxItems": MAX_REPORTS_PER_BATCH},
    ),
    "BlockRequest": _object(["parent_id"], parent_id=_ref("Identifier")),
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
        ["granted", "claimed"],
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
            "racks (empty when `claim` was): it gets those from them instead.",
        },
    ),
    "FailureReport": _object(
        [],
        reason={**_LABEL, "minLength": 1, "examples": ["digest_mismatch"]},
    ),
    "PieceDigests": {
        "type": "object",
        "propertyNames": {"pattern": "^(0|[1-9][0-9]*)$"},
        "additionalProperties": _ref("Digest"),
        "description": "Trusted piece digests by piece index (as a string).",
    },
    "TaskPieces": _object(
        ["piece_digests", "spread"],
        piece_digests=_ref("PieceDigests"),
        spread={
            "type": "array",
            "items": _COUNT,
            "description": "Per piece, the live normal (non-seed) peers holding it; empty "
            "for a task nobody works on.",
        },
    ),
    "ParentChoice": _object(
        ["peer_id", "host_id", "address", "piece_port", "score"],
        peer_id=_ref("Identifier"),
        host_id=_ref("Identifier"),
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
            "items": _ref("ParentChoice"),
            "description": "Best first; replaces the previous parents. Empty only when a "
            "peer registers holding every piece.",
        },
        piece_digests=_ref("PieceDigests"),
        stripe=_ref("Stripe"),
    ),
    "BackToSourceDecision": _object(
        ["action", "reason"],
        action={"const": "back_to_source"},
        reason={"enum": [str(r) for r in _BACK_TO_SOURCE_REASONS]},
    ),
    "RetryLaterDecision": _object(
        ["action", "after_s", "reason"],
        action={"const": "retry_later"},
        after_s={"type": "number", "minimum": 0},
        reason={"enum": [str(r) for r in _RETRY_LATER_REASONS]},
    ),
    "Decision": {
        "oneOf": [
            _ref("ParentsDecision"),
            _ref("BackToSourceDecision"),
            _ref("RetryLaterDecision"),
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
            "items": _ref("Replica"),
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

_ERRORS = {
    "400": "A field is missing, of the wrong type or out of range, or breaks a rule that "
    "ties fields together (see the operation); `field` names it.",
    "401": "The cluster token is missing or wrong.",
    "404": "Unknown peer or host (never registered, left, or expired).",
    "409": "The request contradicts the state: another size for the task, a peer id already "
    "registered on another host or task, a piece digest other than the trusted one.",
    "413": "The body is larger than 1 MiB.",
    "415": "A non-empty body that is not declared `application/json`; `field` is `Content-Type`.",
}


def _operation(
    operation_id: str,
    summary: str,
    response: str,
    errors: tuple[str, ...],
    body: str | None = None,
    description: str = "",
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK", "content": {JSON: {"schema": _ref(response)}}}
    if links:
        ok["links"] = links
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {
            "200": ok,
            **{code: {"$ref": f"#/components/responses/Error{code}"} for code in errors},
        },
    }
    if description:
        operation["description"] = description
    if body is not None:
        # Bodies with no required field may be left out entirely.
        required = bool(SCHEMAS[body].get("required"))
        operation["requestBody"] = {
            "required": required,
            "content": {JSON: {"schema": _ref(body)}},
        }
    return operation


def _path_parameter(name: str, schema: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ref(schema)}


def _link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters, "description": description}


_PEER = [_path_parameter("peer_id", "Identifier")]
_WRITE = ("400", "401", "413", "415")
_DECISION_DOC = "Answers a decision: fetch from these parents, go to the origin, or ask again."
_PUBLIC: list[dict[str, list[str]]] = []
# What a registered peer can do next; ``links`` of the registration and of later calls.
_REGISTERED_PEER = "$request.body#/peer_id"
_PEER_IN_PATH = "$request.path.peer_id"


def _peer_links(peer_id: str) -> dict[str, Any]:
    return {
        "Schedule": _link("schedulePeer", "Ask for parents again.", peer_id=peer_id),
        "ReportPieces": _link("reportPieces", "Report transfers.", peer_id=peer_id),
        "Block": _link("blockParent", "Block a parent.", peer_id=peer_id),
        "Finish": _link("finishPeer", "Say the blob is complete.", peer_id=peer_id),
        "Fail": _link("failPeer", "Give up.", peer_id=peer_id),
        "Leave": _link("removePeer", "Leave.", peer_id=peer_id),
    }


_HOST_LINKS = {
    "RegisterPeer": {
        "operationId": "registerPeer",
        "requestBody": {"host_id": "$request.body#/host_id"},
        "description": "Register a peer on the announced host.",
    },
    "Leave": _link("removeHost", "The host leaves.", host_id="$request.body#/host_id"),
}
_REGISTRATION_LINKS = {
    **_peer_links(_REGISTERED_PEER),
    "TaskPieces": _link(
        "getTaskPieces", "The task's trusted digests.", task_id="$request.body#/task_id"
    ),
    "RegisterAnotherPeer": {
        "operationId": "registerPeer",
        "requestBody": {
            "host_id": "$request.body#/host_id",
            "task_id": "$request.body#/task_id",
            "size_bytes": "$request.body#/size_bytes",
            "piece_bytes": "$request.body#/piece_bytes",
        },
        "description": "Another peer for the same task on the same host.",
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Starling p2p-scheduler API",
        "version": "1",
        "description": "Peers announce their host, register one peer per blob (task), ask "
        "for parents, report piece transfers and say when they finish, fail or leave. "
        "Every error is JSON `{error, field?}`. Requests need the cluster token as a bearer "
        "token when the scheduler has one. Bodies are JSON (`Content-Type: "
        "application/json`); integers are written without a fraction or exponent (`3`, "
        "not `3.0`), unknown fields are refused.",
    },
    "servers": [{"url": "/"}],
    "security": [{"clusterToken": []}],
    "paths": {
        "/api/v1/hosts": {
            "post": _operation(
                "announceHost",
                "Announce a host (join, or stay alive within host_ttl_s)",
                "HostAccepted",
                _WRITE,
                "HostAnnouncement",
                links=_HOST_LINKS,
            )
        },
        "/api/v1/hosts/{host_id}": {
            "parameters": [_path_parameter("host_id", "Identifier")],
            "delete": _operation(
                "removeHost",
                "The host leaves; its peers leave with it",
                "Empty",
                _WRITE + ("404",),
            ),
        },
        "/api/v1/peers": {
            "post": _operation(
                "registerPeer",
                "Register (or re-register) a peer for a task, then schedule it",
                "Decision",
                _WRITE + ("404", "409"),
                "PeerRegistration",
                f"{_DECISION_DOC} Rules across fields (400): `size_bytes / piece_bytes` "
                f"rounded up is the piece count, at most {MAX_PIECES_PER_TASK}; every entry "
                "of `pieces` is below it; `piece_digests`, if given, has one digest per "
                "piece and comes with every piece in `pieces`.",
                links=_REGISTRATION_LINKS,
            )
        },
        "/api/v1/peers/{peer_id}": {
            "parameters": _PEER,
            "delete": _operation(
                "removePeer",
                "The peer leaves (cancelled, evicted, shutting down)",
                "Empty",
                _WRITE + ("404",),
            ),
        },
        "/api/v1/peers/{peer_id}/schedule": {
            "parameters": _PEER,
            "post": _operation(
                "schedulePeer",
                "Ask for parents again",
                "Decision",
                _WRITE + ("404", "409"),
                "Empty",
                _DECISION_DOC,
                links=_peer_links(_PEER_IN_PATH),
            ),
        },
        "/api/v1/peers/{peer_id}/pieces": {
            "parameters": _PEER,
            "post": _operation(
                "reportPieces",
                "Report a batch of piece transfers",
                "Empty",
                _WRITE + ("404", "409"),
                "PieceReports",
                "A failed piece blocks its parent for this peer. The batch is applied whole "
                "or not at all. Rules across fields (400): `piece_index` is below the task's "
                "piece count, `size_bytes` at most its piece size, and `parent_id` is neither "
                "the reporting peer nor a peer of another task.",
                links=_peer_links(_PEER_IN_PATH),
            ),
        },
        "/api/v1/peers/{peer_id}/block": {
            "parameters": _PEER,
            "post": _operation(
                "blockParent",
                "Block a slow or unreachable parent for this peer and reschedule at once",
                "Decision",
                _WRITE + ("404", "409"),
                "BlockRequest",
                f"{_DECISION_DOC} `parent_id` must not be the peer itself (400).",
                links=_peer_links(_PEER_IN_PATH),
            ),
        },
        "/api/v1/peers/{peer_id}/claims": {
            "parameters": _PEER,
            "post": _operation(
                "claimImports",
                "Claim pieces before fetching them from other racks",
                "GrantedClaims",
                _WRITE + ("404",),
                "ImportClaims",
                "One peer of a rack at a time fetches a piece from other racks' normal "
                "peers: a piece is granted until its claimant releases it or for "
                "`rack_claim_lease_s` (10 s). A peer without a rack label, a seed, or a "
                "scheduler with claims off gets every piece. Rule across fields (400): "
                "every index is below the task's piece count.",
            ),
        },
        "/api/v1/peers/{peer_id}/finished": {
            "parameters": _PEER,
            "post": _operation(
                "finishPeer",
                "The peer holds the whole blob and verified its digest",
                "Empty",
                _WRITE + ("404",),
                "Empty",
            ),
        },
        "/api/v1/peers/{peer_id}/failed": {
            "parameters": _PEER,
            "post": _operation(
                "failPeer",
                "The peer gave up on the task",
                "Empty",
                _WRITE + ("404",),
                "FailureReport",
                "Trusted digests the peer contributed are dropped.",
            ),
        },
        "/api/v1/tasks/{task_id}/pieces": {
            "parameters": [_path_parameter("task_id", "Digest")],
            "get": _operation(
                "getTaskPieces",
                "The task's trusted piece digests (empty for an unknown task)",
                "TaskPieces",
                ("400", "401"),
            ),
        },
        "/api/v1/replicas": {
            "get": _operation(
                "listReplicas",
                "The live scheduler replicas",
                "Replicas",
                ("401",),
                description="Peers route each task (blob digest) to the first replica of "
                "the rendezvous ranking of the task id over these URLs (highest "
                'BLAKE2b-64 of `url + "\\n" + task_id` first) and move to the next '
                "when it fails.",
            )
        },
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApiDocument",
                "summary": "This document (no token needed)",
                "security": _PUBLIC,
                "responses": {"200": {"description": "OK", "content": {JSON: {"schema": {}}}}},
            }
        },
        **status_paths(_PUBLIC),
        "/healthz": {
            "get": {
                "operationId": "getHealth",
                "summary": "Liveness and state sizes (no token needed)",
                "security": _PUBLIC,
                "responses": {
                    "200": {"description": "OK", "content": {JSON: {"schema": _ref("Health")}}}
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics, p2p_scheduler_* (no token needed)",
                "security": _PUBLIC,
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "clusterToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "The cluster token (--token-file or STARLING_TOKEN).",
            }
        },
        "schemas": SCHEMAS,
        "responses": {
            f"Error{code}": {"description": text, "content": {JSON: {"schema": _ref("Error")}}}
            for code, text in _ERRORS.items()
        },
    },
}
