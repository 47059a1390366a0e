"""The served OpenAPI document: valid OpenAPI 3.1, covers every route, and tells the truth.

"Tells the truth" is checked on real traffic: every response the client saw is validated
against the schema the document gives for its path, method and status, and the request
bodies the tests send are valid against the documented request schemas.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from scheduler.service.app import create_app
from scheduler.service.config import SchedulerConfig
from scheduler.service.openapi import DOCUMENT
from tests.integration.scheduler.conftest import (
    PIECE_BYTES,
    TASK,
    SchedulerClient,
    drive_traffic,
    piece_digest,
    report,
)

pytestmark = pytest.mark.timeout(60)


async def _document(client: SchedulerClient) -> dict[str, Any]:
    status, document = await client.call("GET", "/api/v1/openapi.json", token=None)
    assert status == 200
    assert isinstance(document, dict)
    return document


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> OAS31Validator:
    # The schema's $refs point into the document's components; resolve them from there.
    return OAS31Validator({**schema, "components": document["components"]})


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The documented operation whose path template matches ``path``."""
    for template, item in document["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        if re.fullmatch(pattern, path.split("?")[0]) and method.lower() in item:
            operation: dict[str, Any] = item[method.lower()]
            return operation
    raise AssertionError(f"{method} {path} is not in the document")


async def test_the_document_is_valid_openapi(scheduler: SchedulerClient) -> None:
    document = await _document(scheduler)
    assert document["openapi"].startswith("3.")
    validate(document)


def test_every_route_of_the_app_is_documented() -> None:
    app = create_app(SchedulerConfig())
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (method, path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routes == documented
    assert len(routes) == 20


async def test_responses_match_their_documented_schemas(traffic_scheduler: SchedulerClient) -> None:
    await drive_traffic(traffic_scheduler)
    document = await _document(traffic_scheduler)
    statuses: set[int] = set()
    for exchange in traffic_scheduler.exchanges:
        operation = _operation(document, exchange.method, exchange.path)
        response = operation["responses"].get(str(exchange.status))
        assert response is not None, (exchange.method, exchange.path, exchange.status)
        if "$ref" in response:
            response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        content = response["content"]
        if "application/json" in content:
            schema = content["application/json"]["schema"]
            _validator(document, schema).validate(exchange.body)
        statuses.add(exchange.status)
    assert {200, 400, 404, 409} <= statuses


def _request_schema(document: dict[str, Any], method: str, path: str) -> OAS31Validator:
    operation = _operation(document, method, path)
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    return _validator(document, schema)


async def test_request_schemas_accept_what_the_server_accepts(scheduler: SchedulerClient) -> None:
    document = await _document(scheduler)
    bodies: list[tuple[str, str, dict[str, Any]]] = [
        (
            "POST",
            "/api/v1/hosts",
            {
                "host_id": "h1",
                "address": "10.0.0.1",
                "piece_port": 65002,
                "upload_capacity_bps": 1e8,
                "download_capacity_bps": 1e8,
                "upload_slots": 4,
                "is_seed": True,
                "idc": "dc1",
                "rack": "r1",
                "location": "eu|fr",
                "upload_count": 0,
                "upload_bps": 0,
            },
        ),
        (
            "POST",
            "/api/v1/peers",
            {
                "peer_id": "p1",
                "task_id": TASK,
                "host_id": "h1",
                "size_bytes": 4 * PIECE_BYTES,
                "piece_bytes": PIECE_BYTES,
                "pieces": [0],
            },
        ),
        ("POST", "/api/v1/peers/p1/schedule", {}),
        (
            "POST",
            "/api/v1/peers/p1/pieces",
            {"reports": [report(1, None, digest=piece_digest(1)), report(2, None)]},
        ),
        ("POST", "/api/v1/peers/p1/block", {"parent_id": "p9"}),
        ("POST", "/api/v1/peers/p1/claims", {"claim": [1, 3], "release": [1]}),
        ("POST", "/api/v1/peers/p1/claims", {}),
        ("POST", "/api/v1/peers/p1/failed", {"reason": "digest_mismatch"}),
    ]
    for method, path, body in bodies:
        _request_schema(document, method, path).validate(body)
        status, answer = await scheduler.call(method, path, body)
        assert status == 200, (path, answer)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/hosts", {"host_id": "h1"}),
        ("/api/v1/peers/p1/pieces", {"reports": [{**report(0, None), "extra": 1}]}),
        ("/api/v1/peers/p1/pieces", {"reports": [{**report(0, None), "cost_s": -1}]}),
        ("/api/v1/peers/p1/block", {"parent_id": ""}),
        ("/api/v1/peers/p1/schedule", {"x": 1}),
        ("/api/v1/peers/p1/claims", {"claim": [-1]}),
        ("/api/v1/peers/p1/claims", {"claim": ["0"]}),
        ("/api/v1/peers/p1/claims", {"release": [True]}),
        ("/api/v1/peers/p1/claims", {"claims": [0]}),
    ],
)
async def test_request_schemas_refuse_what_the_server_refuses(
    scheduler: SchedulerClient, path: str, body: dict[str, Any]
) -> None:
    document = await _document(scheduler)
    assert not _request_schema(document, "POST", path).is_valid(body)
    status, _ = await scheduler.call("POST", path, body)
    assert status in (400, 404)
