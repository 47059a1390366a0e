"""The real scheduler app on an ephemeral loopback port, and a small client for its API.

The client records every exchange, so the OpenAPI test can check real responses against
the documented schemas.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from scheduler.core import SchedulerSettings
from scheduler.service.app import create_app
from scheduler.service.config import SchedulerConfig
from tests.support.polling import POLL_INTERVAL_S

MiB = 1024 * 1024
TASK = "sha256:" + "ab" * 32
PIECE_BYTES = MiB
PIECES = 4
TOKEN = "s3cret-cluster-token"
# Sentinel: use the client's own token.
DEFAULT = object()


def piece_digest(index: int, salt: str = "") -> str:
    return "sha256:" + hashlib.sha256(f"{salt}piece {index}".encode()).hexdigest()


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    body: Any


@dataclass
class SchedulerClient:
    server: TestServer
    session: aiohttp.ClientSession
    token: str | None
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/"))

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: Any = DEFAULT,
    ) -> tuple[int, Any]:
        """One request; returns the status and the parsed JSON (or text) answer."""
        headers: dict[str, str] = {}
        bearer = self.token if token is DEFAULT else token
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
            headers["Content-Type"] = "application/json"
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.server.make_url(path), **kwargs) as resp:
            if resp.content_type == "application/json":
                answer = await resp.json()
            else:
                answer = await resp.text()
            self.exchanges.append(Exchange(method, path, resp.status, answer))
            return resp.status, answer

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, body)
        assert status == 200, (method, path, status, answer)
        return answer

    async def announce(self, host_id: str, **fields: Any) -> Any:
        body = {
            "host_id": host_id,
            "address": "127.0.0.1",
            "piece_port": 65002,
            "upload_capacity_bps": 100 * MiB,
            "download_capacity_bps": 100 * MiB,
            "upload_slots": 4,
            **fields,
        }
        return await self.ok("POST", "/api/v1/hosts", body)

    async def register(
        self, peer_id: str, host_id: str, pieces: list[int] | None = None, task: str = TASK
    ) -> Any:
        body: dict[str, Any] = {
            "peer_id": peer_id,
            "task_id": task,
            "host_id": host_id,
            "size_bytes": PIECES * PIECE_BYTES,
            "piece_bytes": PIECE_BYTES,
        }
        if pieces is not None:
            body["pieces"] = pieces
        return await self.ok("POST", "/api/v1/peers", body)

    async def schedule(self, peer_id: str) -> Any:
        return await self.ok("POST", f"/api/v1/peers/{peer_id}/schedule", {})

    async def report(self, peer_id: str, *reports: dict[str, Any]) -> tuple[int, Any]:
        return await self.call("POST", f"/api/v1/peers/{peer_id}/pieces", {"reports": reports})

    async def digests(self, task: str = TASK) -> dict[str, str]:
        answer = await self.ok("GET", f"/api/v1/tasks/{task}/pieces")
        digests: dict[str, str] = answer["piece_digests"]
        return digests

    async def health(self) -> dict[str, Any]:
        status, answer = await self.call("GET", "/healthz", token=None)
        assert status == 200
        health: dict[str, Any] = answer
        return health

    async def metrics(self) -> str:
        status, text = await self.call("GET", "/metrics", token=None)
        assert status == 200
        assert isinstance(text, str)
        return text


def report(
    index: int,
    parent_id: str | None,
    *,
    ok: bool = True,
    digest: str | None = None,
    cost_s: float = 0.05,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "piece_index": index,
        "parent_id": parent_id,
        "size_bytes": PIECE_BYTES,
        "cost_s": cost_s,
        "ok": ok,
    }
    if digest is not None:
        body["digest"] = digest
    return body


SchedulerFactory = Callable[..., Awaitable[SchedulerClient]]


@pytest.fixture
async def make_scheduler() -> AsyncIterator[SchedulerFactory]:
    """Start schedulers: ``await make_scheduler(token=..., scheduling=SchedulerSettings(...))``."""
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(
        *,
        token: str | None = TOKEN,
        scheduling: SchedulerSettings | None = None,
        **settings: Any,
    ) -> SchedulerClient:
        config = SchedulerConfig(
            rng_seed=1, token=token, scheduling=scheduling or SchedulerSettings(), **settings
        )
        server = TestServer(create_app(config), host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession()
        started.append((server, session))
        return SchedulerClient(server, session, token)

    yield start
    for server, session in started:
        await session.close()
        await server.close()


@pytest.fixture
async def scheduler(make_scheduler: SchedulerFactory) -> SchedulerClient:
    return await make_scheduler()


@pytest.fixture
async def traffic_scheduler(make_scheduler: SchedulerFactory) -> SchedulerClient:
    """A scheduler for ``drive_traffic``: origin shares on, so that it takes some."""
    return await make_scheduler(scheduling=SchedulerSettings(origin_sharers_per_rack=1))


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll the async ``check`` until it is true; TimeoutError naming ``what`` if never."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


async def drive_traffic(client: SchedulerClient) -> None:
    """A seed, three peers, every endpoint, some errors: material for metrics and schemas."""
    await client.announce("h-seed", is_seed=True, idc="dc1", rack="r1", location="eu|fr")
    for n in (1, 2, 3):
        await client.announce(f"h{n}", idc="dc1", rack=f"r{n}", upload_count=1, upload_bps=10.0)
    await client.register("seed", "h-seed")
    # p1, first of rack r1, takes a share of the origin fetch with the seed (in r1 too).
    await client.register("p1", "h1")
    await client.call("POST", "/api/v1/peers/seed/origin-pieces", {"want": PIECES - 2})
    await client.call("POST", "/api/v1/peers/p1/origin-pieces", {"want": 4})
    await client.call("POST", "/api/v1/peers/p1/origin-pieces", {"want": 4})  # done
    await client.call("POST", "/api/v1/peers/p1/origin-pieces", {"want": 0})
    await client.report("seed", *(report(i, None, digest=piece_digest(i)) for i in range(PIECES)))
    await client.register("p2", "h2")
    await client.schedule("p1")
    await client.report(
        "p1", report(0, "seed", digest=piece_digest(0)), report(1, "seed", ok=False)
    )
    await client.schedule("p1")
    await client.register("p3", "h3", pieces=[0])
    await client.call("POST", "/api/v1/peers/p3/block", {"parent_id": "seed"})
    await client.report("p3", report(1, "p2", digest=piece_digest(1, salt="evil")))
    await client.digests()
    # p4, p3's rack-mate, holds piece 2: p3 gets it from p4 (a holder in the answer).
    # p4 holds p3's piece 0 too, so p3 is not its parent (a holder never closes a cycle).
    await client.announce("h4", idc="dc1", rack="r3")
    await client.register("p4", "h4", pieces=[0, 2])
    await client.call("POST", "/api/v1/peers/p3/claims", {"claim": [2, 3], "release": []})
    await client.call("POST", "/api/v1/peers/p3/claims", {"claim": [PIECES]})
    await client.call("POST", "/api/v1/peers/seed/finished")
    await client.call("POST", "/api/v1/peers/p1/failed", {"reason": "digest_mismatch"})
    await client.call("DELETE", "/api/v1/peers/p2")
    await client.call("POST", "/api/v1/peers/nobody/schedule", {})
    await client.call("POST", "/api/v1/hosts", {"host_id": 7})
    await client.call("DELETE", "/api/v1/hosts/h3")
    await client.call("GET", "/api/v1/openapi.json", token=None)
    await client.health()
    await client.metrics()
