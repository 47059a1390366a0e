"""The scheduler's Redis: replica heartbeats (and, with issue 5, shared training data).

Replica membership is one sorted set, ``{prefix}replicas``: member the replica's URL,
score the time of its last heartbeat on Redis's own clock (``TIME``), so replicas on
machines whose clocks disagree still agree on ages. One script does a heartbeat: it
stamps this replica, drops members silent for ``forget_after_s`` (long dead; the live
list itself is decided by ``membership.Membership``), and returns every heartbeat with
Redis's time, in one round trip. Redis is never on the path of a scheduling decision:
when it is down, the replicas keep deciding from memory and their heartbeats resume,
re-registering them, as soon as it answers again (``replicas.ReplicaDirectory``).

Every failure to talk to Redis is :class:`StoreUnavailable`.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

# KEYS[1]: the set; ARGV[1]: this replica; ARGV[2]: seconds after which a member is forgotten.
_HEARTBEAT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return {t[1], t[2], redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
"""


class StoreUnavailable(Exception):
    """Redis could not be reached, or failed the command."""


class RedisReplicaStore:
    def __init__(self, url: str, key_prefix: str, timeout_s: float) -> None:
        # No retries inside the client: the heartbeat comes round again soon enough, and a
        # retry with back-off would only make a Redis outage slower to notice.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self.key = f"{key_prefix}replicas"
        self._heartbeat = self._redis.register_script(_HEARTBEAT)

    async def heartbeat(
        self, replica: str, forget_after_s: float
    ) -> tuple[dict[str, float], float]:
        """Stamp ``replica``; every member's last heartbeat and Redis's time, in seconds."""
        try:
            reply: Any = await self._heartbeat(keys=[self.key], args=[replica, forget_after_s])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        seconds, micros, flat = reply
        store_now = int(seconds) + int(micros) / 1e6
        beats = {str(flat[i]): float(flat[i + 1]) for i in range(0, len(flat), 2)}
        return beats, store_now

    async def leave(self, replica: str) -> None:
        """Remove ``replica`` at once (a clean shutdown), instead of waiting for its TTL."""
        try:
            await self._redis.zrem(self.key, replica)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()
