"""The status page: the JSON it polls, and the page itself in a real headless chromium.

The scheduler is the real app on a loopback port, fed by real API calls: seed, peers,
piece reports, so the page has tasks, a swarm graph and throughput to show. The browser
test waits until what the page shows matches ``/api/v1/status`` and fails on any console
error, uncaught exception or browser log error (a failed load, a CSP violation).

With ``STARLING_STATUS_SCREENSHOT=docs/status-page.png`` the screenshot is also saved
there (that is how the one in the docs was made).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator

from scheduler.service import status
from scheduler.service.openapi import DOCUMENT
from tests.integration.scheduler.conftest import (
    PIECES,
    TOKEN,
    SchedulerClient,
    SchedulerFactory,
    piece_digest,
    report,
)
from tests.support.browser import Browser, chromium_unavailable_reason
from tests.support.requirements import require

pytestmark = pytest.mark.timeout(120)

OTHER_TASK = "sha256:" + "cd" * 32
PAGE_TIMEOUT_S = 20.0
# Pixels from the top of the throughput chart to its zero line (status.js: height - bottom).
CHART_ZERO_Y = 130
ROUNDS = 6


async def _swarm(client: SchedulerClient) -> None:
    """A seed holding the blob, peers fetching it from it and from each other, a 2nd task."""
    await client.announce("seed-host", is_seed=True, idc="dc1", rack="r1")
    for n in (1, 2, 3):
        await client.announce(f"node-{n}", idc="dc1", rack=f"r{n}")
    await client.register("seed", "seed-host")
    await client.report("seed", *(report(i, None, digest=piece_digest(i)) for i in range(PIECES)))
    await client.ok("POST", "/api/v1/peers/seed/finished", {})
    await client.register("p1", "node-1")
    await client.report("p1", report(0, "seed", digest=piece_digest(0)))
    await client.register("p2", "node-2")
    await client.register("p3", "node-3")
    await client.register("other-seed", "seed-host", task=OTHER_TASK)


async def _status(client: SchedulerClient) -> dict[str, Any]:
    answer = await client.ok("GET", "/api/v1/status")
    assert isinstance(answer, dict)
    return answer


def _edges(snapshot: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (parent, peer["peer_id"])
        for task in snapshot["tasks"]
        for peer in task["peers"]
        for parent in peer["parents"]
    }


def _validate(answer: Any) -> None:
    schema = {"$ref": "#/components/schemas/Status", "components": DOCUMENT["components"]}
    OAS31Validator(schema).validate(answer)


async def test_status_json_shows_hosts_tasks_graph_and_bytes(scheduler: SchedulerClient) -> None:
    await _swarm(scheduler)
    snapshot = await _status(scheduler)
    _validate(snapshot)
    assert snapshot["counts"] == {"hosts": 4, "seed_hosts": 1, "peers": 5, "tasks": 2}
    assert [h["host_id"] for h in snapshot["hosts"]][0] == "seed-host"  # seeds first
    seed_host = snapshot["hosts"][0]
    assert seed_host["address"] == "127.0.0.1" and seed_host["is_seed"]
    tasks = {t["task_id"]: t for t in snapshot["tasks"]}
    main = tasks["sha256:" + "ab" * 32]
    assert main["peer_count"] == 4 and main["complete_peer_count"] == 1
    peers = {p["peer_id"]: p for p in main["peers"]}
    assert peers["seed"]["state"] == "succeeded" and peers["seed"]["pieces"] == PIECES
    assert "seed" in peers["p2"]["parents"]
    assert ("seed", "p1") in _edges(snapshot)
    # One piece from the seed: its upload shows, as does the origin's four pieces.
    assert snapshot["piece_bytes"]["origin"] == PIECES * 1024 * 1024
    assert snapshot["piece_bytes"]["seed"] == 1024 * 1024
    assert seed_host["upload_bps"] > 0 and snapshot["upload_bps"] == seed_host["upload_bps"]


async def test_status_json_needs_the_token_and_the_page_does_not(
    scheduler: SchedulerClient,
) -> None:
    code, answer = await scheduler.call("GET", "/api/v1/status", token=None)
    assert code == 401 and "token" in answer["error"]
    code, answer = await scheduler.call("GET", "/api/v1/status", token="wrong")
    assert code == 401
    for path in ("/", "/static/status.js", "/static/status.css"):
        async with scheduler.session.get(scheduler.server.make_url(path)) as resp:
            assert resp.status == 200, path
            policy = resp.headers["Content-Security-Policy"]
            assert "default-src 'none'" in policy and "script-src 'self'" in policy
            body = await resp.text()
            # The page carries no state of the cluster.
            assert "127.0.0.1" not in body and "sha256:" not in body


async def test_status_lists_are_bounded(scheduler: SchedulerClient) -> None:
    await scheduler.announce("h1")
    for n in range(status.MAX_TASKS + 1):
        await scheduler.register(f"p{n}", "h1", task="sha256:" + f"{n:064x}")
    snapshot = await _status(scheduler)
    _validate(snapshot)
    assert snapshot["counts"]["tasks"] == status.MAX_TASKS + 1
    assert len(snapshot["tasks"]) == status.MAX_TASKS and snapshot["tasks_truncated"]
    assert not snapshot["hosts_truncated"]


async def _rendered(browser: Browser, snapshot: dict[str, Any]) -> None:
    """Wait until the page shows every host, task, peer row and graph edge of ``snapshot``."""
    hosts = sorted(h["host_id"] for h in snapshot["hosts"])
    tasks = sorted(t["task_id"] for t in snapshot["tasks"])
    peers = sorted(p["peer_id"] for t in snapshot["tasks"] for p in t["peers"])
    edges = sorted([parent, child] for parent, child in _edges(snapshot))
    expected = json.dumps([hosts, tasks, peers, peers, edges], separators=(",", ":"))
    shown = """JSON.stringify([
        [...document.querySelectorAll('#hosts tr[data-host-id]')].map(e => e.dataset.hostId).sort(),
        [...document.querySelectorAll('.task[data-task-id]')].map(e => e.dataset.taskId).sort(),
        [...document.querySelectorAll('tr[data-peer-id]')].map(e => e.dataset.peerId).sort(),
        [...document.querySelectorAll('g.node[data-peer-id]')].map(e => e.dataset.peerId).sort(),
        [...document.querySelectorAll('line.edge[data-parent]')]
            .map(e => [e.dataset.parent, e.dataset.child]).sort(),
    ])"""
    await browser.wait_for(
        f"{shown} === {json.dumps(expected)}", PAGE_TIMEOUT_S, f"the swarm {expected}", shown
    )


def _chart_peak_y(points: str) -> float:
    return min(float(point.split(",")[1]) for point in points.split())


async def test_the_page_renders_the_swarm_in_chromium(
    scheduler: SchedulerClient, tmp_path: Path
) -> None:
    require(chromium_unavailable_reason())
    await _swarm(scheduler)
    async with Browser() as browser:
        await browser.navigate(f"{scheduler.url}?poll_ms=250#token={TOKEN}")
        await _rendered(browser, await _status(scheduler))
        # The token left the address bar as soon as the page read it.
        assert TOKEN not in await browser.evaluate("location.href")
        counts = await browser.evaluate(
            "['count-hosts', 'count-peers', 'count-tasks']"
            ".map(id => document.querySelector('#' + id + ' .value').textContent)"
        )
        assert counts == ["4", "5", "2"]

        # Throughput: more pieces move between two polls, and the chart rises off zero.
        await browser.wait_for(
            "!!document.querySelector('polyline[data-source=seed]')",
            PAGE_TIMEOUT_S,
            "a rate",
            "document.getElementById('throughput').innerHTML",
        )
        await scheduler.report("p1", *(report(i, "seed") for i in range(1, PIECES)))
        await scheduler.report("p2", report(0, "p1"), report(1, "seed"))
        # A few more rounds, each seen by its own poll, so the chart has a history.
        for round_ in range(ROUNDS):
            polls = await browser.evaluate("Number(document.body.dataset.polls)")
            await scheduler.report("p3", report(round_ % PIECES, "seed" if round_ % 2 else "p1"))
            await browser.wait_for(
                f"Number(document.body.dataset.polls) > {polls}", PAGE_TIMEOUT_S, "a poll"
            )
        points = await browser.wait_for(
            f"""(() => {{
                const line = document.querySelector('polyline[data-source=seed]');
                const points = line ? line.getAttribute('points') : '';
                return points.split(' ').some(p => Number(p.split(',')[1]) < {CHART_ZERO_Y})
                    && points;
            }})()""",
            PAGE_TIMEOUT_S,
            "seed throughput on the chart",
        )
        assert _chart_peak_y(points) < CHART_ZERO_Y
        await _rendered(browser, await _status(scheduler))
        png = await browser.screenshot()
        assert browser.errors() == []

    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    (tmp_path / "status-page.png").write_bytes(png)  # noqa: ASYNC240 (the loop is idle now)
    target = os.environ.get("STARLING_STATUS_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "status-page.png", target)


async def test_the_page_asks_for_the_token_then_shows_the_state(
    make_scheduler: SchedulerFactory,
) -> None:
    require(chromium_unavailable_reason())
    scheduler = await make_scheduler()
    await _swarm(scheduler)
    async with Browser() as browser:
        await browser.navigate(f"{scheduler.url}?poll_ms=250")
        await browser.wait_for(
            "!document.getElementById('token-form').hidden", PAGE_TIMEOUT_S, "the token form"
        )
        assert await browser.evaluate("document.querySelectorAll('tr[data-peer-id]').length") == 0
        await browser.evaluate(
            f"document.getElementById('token-input').value = {json.dumps(TOKEN)};"
            "document.getElementById('token-form').requestSubmit(); true"
        )
        await _rendered(browser, await _status(scheduler))
        assert await browser.evaluate("document.getElementById('token-form').hidden")
        # The 401 before the token is the only thing the browser may complain about.
        unexpected = [e for e in browser.errors() if "401" not in e.text]
        assert unexpected == []
        assert any("401" in e.text for e in browser.errors())
