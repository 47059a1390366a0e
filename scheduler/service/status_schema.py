"""The OpenAPI part of the status page: ``GET /api/v1/status`` and the page's own files.

Kept beside ``status`` (which builds these shapes) rather than inside ``openapi``, which
only merges them in; the OpenAPI tests check real answers against the schemas.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(**properties: Any) -> dict[str, Any]:
    """Every property required, nothing else allowed."""
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
_RATE = {"type": "number", "minimum": 0, "description": "Bytes per second."}


def status_schemas() -> dict[str, Any]:
    return {
        "StatusHost": _object(
            host_id=_ref("Identifier"),
            address={"type": "string"},
            piece_port={"type": "integer", "minimum": 1, "maximum": 65535},
            is_seed={"type": "boolean"},
            idc={"type": "string"},
            rack={"type": "string"},
            location={"type": "string"},
            upload_slots=_COUNT,
            peers={**_COUNT, "description": "Peers (one per blob) on this host."},
            children={**_COUNT, "description": "Parent -> child edges from this host now."},
            upload_bps={
                **_RATE,
                "description": "Bytes children reported from this host, 60 s average.",
            },
            uploads_ok=_COUNT,
            uploads_failed=_COUNT,
            last_announce_age_s=_SECONDS,
        ),
        "StatusPeer": _object(
            peer_id=_ref("Identifier"),
            host_id=_ref("Identifier"),
            state={"enum": ["pending", "running", "succeeded"]},
            is_seed={"type": "boolean"},
            back_to_source={"type": "boolean", "description": "Sent to the registry."},
            pieces={**_COUNT, "description": "Pieces the peer holds."},
            parents={
                "type": "array",
                "items": _ref("Identifier"),
                "description": "Its parents now, best first: the edges of the swarm graph.",
            },
            idle_s={**_SECONDS, "description": "Since its last piece (or registration)."},
        ),
        "StatusTask": _object(
            task_id=_ref("Digest"),
            size_bytes=_COUNT,
            piece_bytes=_COUNT,
            piece_count=_COUNT,
            age_s=_SECONDS,
            peer_count=_COUNT,
            complete_peer_count=_COUNT,
            seed_peer_count=_COUNT,
            peers={"type": "array", "items": _ref("StatusPeer")},
            peers_truncated={"type": "boolean"},
        ),
        "Status": _object(
            counts=_object(hosts=_COUNT, seed_hosts=_COUNT, peers=_COUNT, tasks=_COUNT),
            piece_bytes={
                **_object(origin=_COUNT, peer=_COUNT, seed=_COUNT),
                "description": "Bytes of pieces peers reported receiving since the "
                "scheduler started, by source; two polls make a rate.",
            },
            upload_bps={**_RATE, "description": "Sum of the hosts' upload_bps."},
            host_ttl_s=_SECONDS,
            uptime_s=_SECONDS,
            hosts={
                "type": "array",
                "items": _ref("StatusHost"),
                "description": "Seeds first, then by host id; at most 1000.",
            },
            hosts_truncated={"type": "boolean"},
            tasks={
                "type": "array",
                "items": _ref("StatusTask"),
                "description": "The busiest 50 (most peers still downloading), each with "
                "at most 200 peers.",
            },
            tasks_truncated={"type": "boolean"},
        ),
    }


def _page_file(operation_id: str, summary: str, media_type: str, public: Any) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "security": public,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {media_type: {"schema": {"type": "string"}}},
                }
            },
        }
    }


def status_paths(public: Any) -> dict[str, Any]:
    """The paths; ``public`` is the document's empty security requirement (no token)."""
    return {
        "/api/v1/status": {
            "get": {
                "operationId": "getStatus",
                "summary": "Cluster state for the status page and `p2pctl status`",
                "description": "Hosts, tasks, peers with their parents (the swarm graph) "
                "and throughput, read in one step of the scheduler's writer. Reveals peer "
                "addresses, so it needs the cluster token.",
                "responses": {
                    "200": {"description": "OK", "content": {JSON: {"schema": _ref("Status")}}},
                    "401": {"$ref": "#/components/responses/Error401"},
                },
            }
        },
        "/": _page_file(
            "getStatusPage",
            "The status page (no token needed: it holds no data; it asks for the token "
            "to read /api/v1/status)",
            "text/html",
            public,
        ),
        "/static/status.js": _page_file(
            "getStatusScript", "The status page's script", "text/javascript", public
        ),
        "/static/status.css": _page_file(
            "getStatusStyle", "The status page's style sheet", "text/css", public
        ),
    }
