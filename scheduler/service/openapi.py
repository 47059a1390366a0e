"""The OpenAPI 3.1 document of the scheduler API, served at ``/api/v1/openapi.json``.

Written by hand next to ``wire`` (which implements the same shapes): the paths and
responses here, the component schemas in ``openapi_schemas``. The integration tests
validate the document, check that every route of the app appears in it, and check real
responses against its schemas.
"""

from __future__ import annotations

from typing import Any

from scheduler.service.openapi_schemas import JSON, SCHEMAS, ref
from scheduler.service.status_schema import status_paths
from scheduler.service.wire import MAX_PIECES_PER_TASK

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
    ok: dict[str, Any] = {"description": "OK", "content": {JSON: {"schema": ref(response)}}}
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
            "content": {JSON: {"schema": ref(body)}},
        }
    return operation


def _path_parameter(name: str, schema: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": ref(schema)}


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
                "`rack_claim_lease_s` (10 s); a released claim stays "
                "`rack_claim_hold_factor` (0, off) times as long as it was held, at most 2 s, "
                "for the claimant's rack-mates. A piece a rack-mate already holds is not "
                "granted when a current parent of the peer or a rack-mate with a free "
                "upload slot holds it: up to `rack_holders_per_claim` (4) such rack-mates "
                "become its parents (`holders`). A peer without a rack label, a seed, or a "
                "scheduler with claims off gets every piece. Rule across fields (400): "
                "every index is below the task's piece count.",
            ),
        },
        "/api/v1/peers/{peer_id}/origin-pieces": {
            "parameters": _PEER,
            "post": _operation(
                "takeOriginPieces",
                "Take the next pieces of a shared origin fetch",
                "OriginPieces",
                _WRITE + ("404",),
                "OriginTake",
                "For a peer told `back_to_source` with `shared`: the seed, the first "
                "`origin_sharers_per_rack` (0: off) normal peers of each rack, the quota's peer. "
                "Each piece is handed to one peer, lowest first, and handed again only if "
                "its taker leaves or nobody reports holding it within "
                "`origin_share_lease_s` (30 s), so the origin sends each piece about once "
                "while several peers fetch from it.",
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
                    "200": {"description": "OK", "content": {JSON: {"schema": ref("Health")}}}
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
            f"Error{code}": {"description": text, "content": {JSON: {"schema": ref("Error")}}}
            for code, text in _ERRORS.items()
        },
    },
}
