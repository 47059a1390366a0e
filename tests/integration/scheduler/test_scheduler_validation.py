"""Refused requests: 400 naming the field, 404 unknown peer or host, 409 conflicts, 413.

Every error body is JSON ``{"error": str, "field": str?}`` and counts as a bad request.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from scheduler.service.wire import MAX_REPORTS_PER_BATCH
from tests.integration.scheduler.conftest import (
    PIECE_BYTES,
    PIECES,
    TASK,
    SchedulerClient,
    piece_digest,
    report,
)

pytestmark = pytest.mark.timeout(60)

HOST: dict[str, Any] = {
    "host_id": "h1",
    "address": "10.0.0.1",
    "piece_port": 65002,
    "upload_capacity_bps": 1e8,
    "download_capacity_bps": 1e8,
    "upload_slots": 4,
}
PEER: dict[str, Any] = {
    "peer_id": "p1",
    "task_id": TASK,
    "host_id": "h1",
    "size_bytes": PIECES * PIECE_BYTES,
    "piece_bytes": PIECE_BYTES,
}
HUGE = 10**30


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


@pytest.fixture
async def ready(scheduler: SchedulerClient) -> SchedulerClient:
    """A host and a registered peer, so only the field under test is wrong."""
    await scheduler.ok("POST", "/api/v1/hosts", HOST)
    await scheduler.ok("POST", "/api/v1/peers", PEER)
    return scheduler


async def _refused(
    client: SchedulerClient, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    status, answer = await client.call(method, path, body, raw=raw)
    assert isinstance(answer, dict), answer
    assert isinstance(answer["error"], str) and answer["error"]
    return status, answer


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (without(HOST, "host_id"), "host_id"),
        ({**HOST, "host_id": 7}, "host_id"),
        ({**HOST, "host_id": ""}, "host_id"),
        ({**HOST, "host_id": "a b"}, "host_id"),
        ({**HOST, "host_id": "x" * 257}, "host_id"),
        # Spaces and controls beyond ASCII: NEL, no-break space, C1, byte-order mark.
        ({**HOST, "host_id": "a\u0085b"}, "host_id"),
        ({**HOST, "host_id": "a\u00a0b"}, "host_id"),
        ({**HOST, "host_id": "a\u0090b"}, "host_id"),
        ({**HOST, "host_id": "\ufeffh1"}, "host_id"),
        (without(HOST, "address"), "address"),
        ({**HOST, "address": "http://10.0.0.1"}, "address"),
        ({**HOST, "address": "-node.example"}, "address"),
        ({**HOST, "address": "a" * 64}, "address"),
        ({**HOST, "piece_port": 0}, "piece_port"),
        ({**HOST, "piece_port": 70000}, "piece_port"),
        ({**HOST, "piece_port": "65002"}, "piece_port"),
        ({**HOST, "piece_port": 65002.0}, "piece_port"),
        ({**HOST, "upload_capacity_bps": -1}, "upload_capacity_bps"),
        ({**HOST, "upload_capacity_bps": True}, "upload_capacity_bps"),
        ({**HOST, "upload_capacity_bps": None}, "upload_capacity_bps"),
        ({**HOST, "download_capacity_bps": HUGE}, "download_capacity_bps"),
        # Just past int64, as an integer and as the float nearest to it.
        ({**HOST, "upload_bps": 2**63}, "upload_bps"),
        ({**HOST, "upload_bps": 9.3e18}, "upload_bps"),
        ({**HOST, "upload_slots": 1.5}, "upload_slots"),
        ({**HOST, "upload_slots": -3}, "upload_slots"),
        ({**HOST, "upload_slots": HUGE}, "upload_slots"),
        ({**HOST, "is_seed": "yes"}, "is_seed"),
        ({**HOST, "idc": 3}, "idc"),
        ({**HOST, "rack": "r\n1"}, "rack"),
        ({**HOST, "upload_count": -1}, "upload_count"),
        ({**HOST, "upload_bps": "fast"}, "upload_bps"),
        ({**HOST, "colour": "blue"}, "colour"),
        # Keys that are not plain names are quoted in the path, so the message shows them.
        ({**HOST, "": 1}, '[""]'),
        ({**HOST, "upload slots": 1}, '["upload slots"]'),
    ],
)
async def test_host_announcement_fields(
    scheduler: SchedulerClient, body: dict[str, Any], field: str
) -> None:
    status, answer = await _refused(scheduler, "POST", "/api/v1/hosts", body)
    assert (status, answer["field"]) == (400, field), answer
    assert field in answer["error"]


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2]",
        b'"a string"',
        b"\xff\xfe",
        b"{}}",
        # Deeper than the JSON parser's recursion limit, well within the size limit.
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nested-100000-deep"),
    ],
)
async def test_a_body_that_is_not_a_json_object(scheduler: SchedulerClient, raw: bytes) -> None:
    status, answer = await _refused(scheduler, "POST", "/api/v1/hosts", raw=raw)
    assert (status, answer["field"]) == (400, "body"), answer


@pytest.mark.parametrize(
    ("key", "literal", "field"),
    [
        # JSON numbers that parse, but not as finite ones.
        ("upload_capacity_bps", b"1e400", "upload_capacity_bps"),
        ("upload_bps", b"-1e400", "upload_bps"),
        ("upload_bps", b"NaN", "upload_bps"),
        ("upload_slots", b"Infinity", "upload_slots"),
        # Python refuses integers of more than 4300 digits while parsing.
        ("upload_slots", b"9" * 5000, "upload_slots"),
    ],
)
async def test_numbers_json_allows_but_the_api_does_not(
    scheduler: SchedulerClient, key: str, literal: bytes, field: str
) -> None:
    valid = json.dumps(without(HOST, key)).encode()
    raw = valid[:-1] + b', "' + key.encode() + b'": ' + literal + b"}"
    status, answer = await _refused(scheduler, "POST", "/api/v1/hosts", raw=raw)
    assert (status, answer["field"]) == (400, field), answer


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (without(PEER, "peer_id"), "peer_id"),
        ({**PEER, "task_id": "latest"}, "task_id"),
        ({**PEER, "task_id": "sha256:abc"}, "task_id"),
        ({**PEER, "task_id": "sha256:" + "AB" * 32}, "task_id"),
        (without(PEER, "host_id"), "host_id"),
        ({**PEER, "size_bytes": -1}, "size_bytes"),
        ({**PEER, "size_bytes": HUGE}, "size_bytes"),
        ({**PEER, "size_bytes": "4MiB"}, "size_bytes"),
        ({**PEER, "piece_bytes": 0}, "piece_bytes"),
        # Within int64, but a trillion pieces: refused before the core allocates for them.
        ({**PEER, "size_bytes": 2**40, "piece_bytes": 1}, "piece_bytes"),
        ({**PEER, "pieces": "all"}, "pieces"),
        ({**PEER, "pieces": [0, PIECES]}, "pieces[1]"),
        ({**PEER, "pieces": [-1]}, "pieces[0]"),
        ({**PEER, "pieces": [True]}, "pieces[0]"),
        ({**PEER, "size_bytes": 0, "pieces": [0]}, "pieces[0]"),
        ({**PEER, "extra": 1}, "extra"),
    ],
)
async def test_peer_registration_fields(
    ready: SchedulerClient, body: dict[str, Any], field: str
) -> None:
    status, answer = await _refused(ready, "POST", "/api/v1/peers", body)
    assert (status, answer["field"]) == (400, field), answer


GOOD_REPORT = report(0, None, digest=piece_digest(0))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "reports"),
        ({"reports": {}}, "reports"),
        ({"reports": [GOOD_REPORT] * (MAX_REPORTS_PER_BATCH + 1)}, "reports"),
        ({"reports": [GOOD_REPORT, 5]}, "reports[1]"),
        ({"reports": [without(GOOD_REPORT, "parent_id")]}, "reports[0].parent_id"),
        ({"reports": [without(GOOD_REPORT, "ok")]}, "reports[0].ok"),
        ({"reports": [{**GOOD_REPORT, "ok": 1}]}, "reports[0].ok"),
        ({"reports": [{**GOOD_REPORT, "piece_index": -1}]}, "reports[0].piece_index"),
        # Past the task's last piece: the core knows the task, and names the field too.
        ({"reports": [{**GOOD_REPORT, "piece_index": PIECES}]}, "reports[0].piece_index"),
        ({"reports": [{**GOOD_REPORT, "cost_s": -0.5}]}, "reports[0].cost_s"),
        ({"reports": [{**GOOD_REPORT, "size_bytes": HUGE}]}, "reports[0].size_bytes"),
        ({"reports": [{**GOOD_REPORT, "size_bytes": PIECE_BYTES + 1}]}, "reports[0].size_bytes"),
        ({"reports": [{**GOOD_REPORT, "digest": "md5"}]}, "reports[0].digest"),
        ({"reports": [{**GOOD_REPORT, "parent_id": "p1"}]}, "reports[0].parent_id"),
        ({"reports": [{**GOOD_REPORT, "parent_id": 12}]}, "reports[0].parent_id"),
        ({"reports": [GOOD_REPORT, {**GOOD_REPORT, "bytes": 1}]}, "reports[1].bytes"),
    ],
)
async def test_piece_report_fields(
    ready: SchedulerClient, body: dict[str, Any], field: str
) -> None:
    status, answer = await _refused(ready, "POST", "/api/v1/peers/p1/pieces", body)
    assert (status, answer["field"]) == (400, field), answer
    # A refused batch changes nothing.
    assert await ready.digests() == {}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/peers/p1/block", {}, "parent_id"),
        ("/api/v1/peers/p1/block", {"parent_id": "p1"}, "parent_id"),
        ("/api/v1/peers/p1/block", {"parent_id": ["p2"]}, "parent_id"),
        ("/api/v1/peers/p1/failed", {"reason": 5}, "reason"),
        ("/api/v1/peers/p1/failed", {"reason": ""}, "reason"),
        ("/api/v1/peers/p1/failed", {"why": "x"}, "why"),
        ("/api/v1/peers/p1/schedule", {"hurry": True}, "hurry"),
        ("/api/v1/peers/p1/finished", {"pieces": 3}, "pieces"),
        ("/api/v1/peers/a%20b/schedule", {}, "peer_id"),
    ],
)
async def test_other_peer_requests(
    ready: SchedulerClient, path: str, body: dict[str, Any], field: str
) -> None:
    status, answer = await _refused(ready, "POST", path, body)
    assert (status, answer["field"]) == (400, field), answer


async def test_a_task_id_that_is_not_a_digest(scheduler: SchedulerClient) -> None:
    status, answer = await _refused(scheduler, "GET", "/api/v1/tasks/latest/pieces")
    assert (status, answer["field"]) == (400, "task_id")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/peers/nobody/schedule", {}),
        ("POST", "/api/v1/peers/nobody/pieces", {"reports": []}),
        ("POST", "/api/v1/peers/nobody/block", {"parent_id": "p1"}),
        ("POST", "/api/v1/peers/nobody/finished", None),
        ("POST", "/api/v1/peers/nobody/failed", None),
        ("DELETE", "/api/v1/peers/nobody", None),
        ("DELETE", "/api/v1/hosts/nowhere", None),
        ("POST", "/api/v1/peers", {**PEER, "peer_id": "p2", "host_id": "nowhere"}),
    ],
)
async def test_unknown_peers_and_hosts_are_404(
    ready: SchedulerClient, method: str, path: str, body: Any
) -> None:
    status, answer = await _refused(ready, method, path, body)
    assert status == 404
    assert "nobody" in answer["error"] or "nowhere" in answer["error"]


async def test_conflicting_registrations_are_409(ready: SchedulerClient) -> None:
    await ready.ok("POST", "/api/v1/hosts", {**HOST, "host_id": "h2"})
    status, answer = await _refused(ready, "POST", "/api/v1/peers", {**PEER, "host_id": "h2"})
    assert status == 409
    assert "already registered" in answer["error"]
    other_size = {**PEER, "peer_id": "p2", "size_bytes": 3 * PIECE_BYTES}
    status, answer = await _refused(ready, "POST", "/api/v1/peers", other_size)
    assert status == 409
    assert TASK in answer["error"]


async def test_a_body_over_the_limit_is_413(ready: SchedulerClient) -> None:
    raw = b'{"reports": [' + b" " * (1024 * 1024) + b"]}"
    status, answer = await _refused(ready, "POST", "/api/v1/peers/p1/pieces", raw=raw)
    assert (status, answer["field"]) == (413, "body")


async def test_unknown_routes_and_methods_answer_json(scheduler: SchedulerClient) -> None:
    status, answer = await _refused(scheduler, "GET", "/api/v1/nothing-here")
    assert status == 404
    status, answer = await _refused(scheduler, "PUT", "/api/v1/hosts", {})
    assert status == 405


async def test_refusals_are_counted_by_route_and_status(ready: SchedulerClient) -> None:
    await ready.call("POST", "/api/v1/hosts", {"host_id": 1})
    await ready.call("POST", "/api/v1/peers/nobody/schedule", {})
    text = await ready.metrics()
    assert 'p2p_scheduler_bad_requests_total{route="/api/v1/hosts",status="400"} 1.0' in text
    route = "/api/v1/peers/{peer_id}/schedule"
    assert f'p2p_scheduler_bad_requests_total{{route="{route}",status="404"}} 1.0' in text


async def test_a_huge_integer_is_refused_by_the_field_that_holds_it(
    ready: SchedulerClient,
) -> None:
    # Too long for Python's int() (4300 digits): refused without converting it, and the
    # nested field is named instead of the body as a whole.
    raw = b'{"reports": [{"piece_index": 0, "parent_id": null, "size_bytes": ' + b"7" * 5000
    raw += b', "cost_s": 0.1, "ok": true}]}'
    status, answer = await _refused(ready, "POST", "/api/v1/peers/p1/pieces", raw=raw)
    assert (status, answer["field"]) == (400, "reports[0].size_bytes"), answer
    assert "5000 digits" in answer["error"]


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"],
)
async def test_a_body_not_declared_as_json_is_415(
    scheduler: SchedulerClient, content_type: str | None
) -> None:
    headers = {"Authorization": f"Bearer {scheduler.token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    url = scheduler.server.make_url("/api/v1/hosts")
    # A valid announcement: only the declared type is wrong.
    raw = json.dumps(HOST).encode()
    async with scheduler.session.post(url, data=raw, headers=headers) as resp:
        answer = await resp.json()
    assert (resp.status, answer["field"]) == (415, "Content-Type"), answer
    assert "application/json" in answer["error"]


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/merge-patch+json"]
)
async def test_json_content_types_are_accepted(
    scheduler: SchedulerClient, content_type: str
) -> None:
    headers = {"Authorization": f"Bearer {scheduler.token}", "Content-Type": content_type}
    url = scheduler.server.make_url("/api/v1/hosts")
    async with scheduler.session.post(url, data=json.dumps(HOST), headers=headers) as resp:
        assert resp.status == 200, await resp.text()


async def test_an_empty_body_needs_no_content_type(ready: SchedulerClient) -> None:
    url = ready.server.make_url("/api/v1/peers/p1/schedule")
    headers = {"Authorization": f"Bearer {ready.token}", "Content-Type": "text/plain"}
    async with ready.session.post(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()


async def test_a_wrong_method_says_which_are_allowed(scheduler: SchedulerClient) -> None:
    url = scheduler.server.make_url("/api/v1/peers/p1/schedule")
    headers = {"Authorization": f"Bearer {scheduler.token}"}
    async with scheduler.session.get(url, headers=headers) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert "GET" in (await resp.json())["error"]
