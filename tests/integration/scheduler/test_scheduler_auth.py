"""The cluster token: required on /api/v1 when configured, optional (with a warning) when not."""

from __future__ import annotations

import logging

import pytest

from tests.integration.scheduler.conftest import TOKEN, SchedulerClient, SchedulerFactory

pytestmark = pytest.mark.timeout(60)

ANNOUNCE = {
    "host_id": "h1",
    "address": "127.0.0.1",
    "piece_port": 65002,
    "upload_capacity_bps": 1e8,
    "download_capacity_bps": 1e8,
    "upload_slots": 4,
}


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
async def test_api_requests_without_the_right_token_are_401(
    scheduler: SchedulerClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with scheduler.session.post(
        scheduler.server.make_url("/api/v1/hosts"), json=ANNOUNCE, headers=headers
    ) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        answer = await resp.json()
    assert "token" in answer["error"]
    assert (await scheduler.health())["hosts"] == 0


async def test_the_right_token_is_accepted_in_any_scheme_case(scheduler: SchedulerClient) -> None:
    for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}"):
        async with scheduler.session.post(
            scheduler.server.make_url("/api/v1/hosts"),
            json=ANNOUNCE,
            headers={"Authorization": authorization},
        ) as resp:
            assert resp.status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/peers/p1/schedule"),
        ("GET", "/api/v1/tasks/sha256:" + "ab" * 32 + "/pieces"),
        ("DELETE", "/api/v1/hosts/h1"),
        ("GET", "/api/v1/no-such-route"),
    ],
)
async def test_every_api_route_needs_the_token(
    scheduler: SchedulerClient, method: str, path: str
) -> None:
    status, _ = await scheduler.call(method, path, token=None)
    assert status == 401


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/healthz", "/metrics"])
async def test_discovery_health_and_metrics_need_no_token(
    scheduler: SchedulerClient, path: str
) -> None:
    status, _ = await scheduler.call("GET", path, token=None)
    assert status == 200


async def test_without_a_configured_token_anyone_is_served_and_a_warning_logged(
    make_scheduler: SchedulerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scheduler.service"):
        client = await make_scheduler(token=None)
    assert any("no cluster token" in r.getMessage() for r in caplog.records)
    assert await client.ok("POST", "/api/v1/hosts", ANNOUNCE) == {
        "host_ttl_s": 30.0,
        "new_host": True,
    }
    status, _ = await client.call("POST", "/api/v1/hosts", ANNOUNCE, token="anything")
    assert status == 200


async def test_refused_tokens_are_counted(scheduler: SchedulerClient) -> None:
    await scheduler.call("POST", "/api/v1/hosts", ANNOUNCE, token="nope")
    text = await scheduler.metrics()
    assert 'p2p_scheduler_bad_requests_total{route="/api/v1/hosts",status="401"} 1.0' in text
