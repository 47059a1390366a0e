"""This replica among the scheduler replicas: its heartbeat in Redis, and the live list.

With ``redis_url`` set, the replica stamps its URL into Redis every
``replica_heartbeat_s`` (``redis_store``) and keeps the live list from what it reads back
(``membership``). Peers read that list at ``GET /api/v1/replicas`` and route each task to
one replica by rendezvous hashing of its id (``peer.rendezvous``), so each task's state
lives in exactly one replica's memory and no decision needs another replica or Redis.
Hosts announce themselves to every replica, so any replica that comes to own a task
already knows the hosts of its peers.

A replica that stops heartbeating (killed, frozen, cut off from Redis) drops out of the
list ``replica_ttl_s`` later; one that shuts down cleanly removes itself at once. When
Redis is down the replica keeps scheduling, serves the list as it last saw it, and its
next successful heartbeat registers it again.

Without Redis the answer is this replica alone, ``membership: static``: peers then route
over the URLs they were configured with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from scheduler.service.config import SchedulerConfig
from scheduler.service.membership import Membership
from scheduler.service.redis_store import RedisReplicaStore, StoreUnavailable

log = logging.getLogger(__name__)

# Members of the Redis set silent this many TTLs are deleted from it (by any replica).
_FORGET_AFTER_TTLS = 10
# A Redis command slower than this counts as Redis being unreachable.
_MAX_STORE_TIMEOUT_S = 2.0
_LEAVE_TIMEOUT_S = 1.0


class ReplicaDirectory:
    def __init__(
        self,
        config: SchedulerConfig,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._clock = clock
        self._store: RedisReplicaStore | None = None
        if config.redis_url is not None:
            timeout_s = min(_MAX_STORE_TIMEOUT_S, config.replica_heartbeat_s)
            self._store = RedisReplicaStore(config.redis_url, config.redis_key_prefix, timeout_s)
        self.membership = Membership(config.replica_ttl_s)
        self.self_url = config.advertise_url.rstrip("/") if config.advertise_url else None
        self.store_reachable = False
        self._task: asyncio.Task[None] | None = None
        self._live_gauge = Gauge(
            "p2p_scheduler_replicas",
            "Live scheduler replicas this replica knows (1 without Redis).",
            registry=registry,
        )
        # Only with Redis configured, so an alert on 0 means "Redis is unreachable" and
        # never "this scheduler runs alone" (deploy/prometheus/rules).
        self._store_gauge = (
            Gauge(
                "p2p_scheduler_store_up",
                "1 while Redis answers the heartbeat, 0 while it does not (only with "
                "redis_url set).",
                registry=registry,
            )
            if self._store is not None
            else None
        )
        self._live_gauge.set(1)

    @property
    def shared(self) -> bool:
        """Whether membership is shared through Redis."""
        return self._store is not None

    async def start(self, self_url: str) -> None:
        """Start heartbeating as ``self_url`` (unless ``advertise_url`` names it)."""
        if self.self_url is None:
            self.self_url = self_url.rstrip("/")
        if self._store is None or self._task is not None:
            return
        log.info(
            "replica %s: heartbeat to Redis every %g s (listed for %g s after the last one)",
            self.self_url,
            self._config.replica_heartbeat_s,
            self._config.replica_ttl_s,
        )
        await self._beat()
        self._task = asyncio.create_task(self._beat_forever(), name="replica heartbeat")

    async def stop(self) -> None:
        """Stop heartbeating and leave the list at once; Redis down only delays that."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._store is None:
            return
        if self.self_url is not None and self.store_reachable:
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                await asyncio.wait_for(self._store.leave(self.self_url), _LEAVE_TIMEOUT_S)
        await self._store.close()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.replica_heartbeat_s)
            try:
                await self._beat()
            except Exception:  # A bug here must not end the heartbeat for good.
                log.exception("replica heartbeat failed")

    def _mark_store(self, reachable: bool) -> None:
        self.store_reachable = reachable
        if self._store_gauge is not None:
            self._store_gauge.set(1 if reachable else 0)

    async def _beat(self) -> None:
        assert self._store is not None and self.self_url is not None
        forget_after_s = _FORGET_AFTER_TTLS * self._config.replica_ttl_s
        try:
            beats, store_now = await self._store.heartbeat(self.self_url, forget_after_s)
        except StoreUnavailable as exc:
            if self.store_reachable or not self.membership.is_store_lost:
                log.warning(
                    "Redis unreachable (%s): scheduling goes on from memory, the replica "
                    "list stays as it was until Redis answers again",
                    exc,
                )
            self.membership.store_lost()
            self._mark_store(reachable=False)
            return
        if not self.store_reachable and self.membership.is_store_lost:
            log.info("Redis answers again: replica %s registered anew", self.self_url)
        before = self.membership.live()
        self.membership.observe(beats, store_now, self._clock())
        self._mark_store(reachable=True)
        after = self.membership.live()
        if after != before:
            log.info("live scheduler replicas: %s", ", ".join(after))
        self._live_gauge.set(len(set(after) | {self.self_url}))

    def describe(self, fallback_url: str) -> dict[str, Any]:
        """The ``GET /api/v1/replicas`` answer; ``fallback_url`` names this replica until
        it knows its own URL."""
        me = self.self_url or fallback_url.rstrip("/")
        if self._store is None:
            return {
                "membership": "static",
                "self": me,
                "store": "none",
                "replicas": [{"url": me, "heartbeat_age_s": 0.0}],
            }
        now = self._clock()
        replicas = []
        for url in sorted(set(self.membership.live()) | {me}):
            age_s = 0.0 if url == me else self.membership.heartbeat_age_s(url, now) or 0.0
            replicas.append({"url": url, "heartbeat_age_s": round(age_s, 3)})
        return {
            "membership": "redis",
            "self": me,
            "store": "reachable" if self.store_reachable else "unreachable",
            "replicas": replicas,
        }

    async def handle(self, request: web.Request) -> web.Response:
        return web.json_response(self.describe(f"{request.scheme}://{request.host}"))
