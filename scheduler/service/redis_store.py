"""The scheduler's Redis: replica heartbeats, transfer records, model artifacts, a lease.

Replica membership is one sorted set, ``{prefix}replicas``: member the replica's URL,
score the time of its last heartbeat on Redis's own clock (``TIME``), so replicas on
machines whose clocks disagree still agree on ages. One script does a heartbeat: it
stamps this replica, drops members silent for ``forget_after_s`` (long dead; the live
list itself is decided by ``membership.Membership``), and returns every heartbeat with
Redis's time, in one round trip. Redis is never on the path of a scheduling decision:
when it is down, the replicas keep deciding from memory and their heartbeats resume,
re-registering them, as soon as it answers again (``replicas.ReplicaDirectory``).

Training data (issue 5) lives next to it, under the same prefix:

- ``{prefix}records``: a stream, one entry per transfer record (field ``r``: the record's
  JSON). ``XADD ... MAXLEN ~ N`` caps it, so Redis memory stays bounded (about 1 KB a
  record): the oldest records go first. Reading the newest ``limit`` pages backwards
  with ``XREVRANGE`` (exclusive ranges: Redis 6.2 or later).
- ``{prefix}artifact:{name}``: a hash ``{data, sha256}`` written by one ``HSET``, so a
  reader never sees the data of one put with the digest of another; the digest lets a
  replica poll for a new model without fetching it.
- ``{prefix}retrain:lease``: which replica retrains this interval (``RedisLease``).

Every failure to talk to Redis is :class:`StoreUnavailable`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
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


# Artifact names: as for files (``records.FileArtifactStore``), so a name works for both.
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Records per MULTI/EXEC when appending, and per XREVRANGE page when reading.
_APPEND_CHUNK = 1000
_READ_PAGE = 5000
_RECORD_FIELD = b"r"
# KEYS[1]: the lease; ARGV[1]: the holder's token; ARGV[2]: milliseconds.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def data_client(url: str, timeout_s: float) -> aioredis.Redis:
    """A client for records and artifacts: bytes in and out, no retries (the callers
    try again on their own schedule, and keep going meanwhile)."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )


class RedisRecordStore:
    """Transfer records in a capped stream: a ``records.RecordStore``."""

    def __init__(self, client: aioredis.Redis, key_prefix: str, max_len: int) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        self._redis = client
        self.key = f"{key_prefix}records"
        self.max_len = max_len

    async def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append in transactions of ``_APPEND_CHUNK``: a chunk lands whole or not at all."""
        payloads = [json.dumps(dict(r), separators=(",", ":")).encode() for r in records]
        try:
            for start in range(0, len(payloads), _APPEND_CHUNK):
                async with self._redis.pipeline(transaction=True) as pipe:
                    for payload in payloads[start : start + _APPEND_CHUNK]:
                        pipe.xadd(
                            self.key,
                            {_RECORD_FIELD: payload},
                            maxlen=self.max_len,
                            approximate=True,
                        )
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def read(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records, oldest first; entries that are not records are
        skipped."""
        entries: list[Any] = []
        upper: bytes | str = "+"
        try:
            while len(entries) < limit:
                count = min(_READ_PAGE, limit - len(entries))
                page: Any = await self._redis.xrevrange(self.key, max=upper, min="-", count=count)
                entries.extend(page)
                if len(page) < count:
                    break
                upper = b"(" + page[-1][0]
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        records = []
        for _, fields in reversed(entries):
            try:
                record = json.loads(fields[_RECORD_FIELD])
            except (KeyError, ValueError):
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    async def length(self) -> int:
        """Entries in the stream now."""
        try:
            return int(await self._redis.xlen(self.key))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc


class RedisArtifactStore:
    """Artifacts as Redis hashes: a ``records.ArtifactStore``."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self._redis = client
        self._prefix = f"{key_prefix}artifact:"

    def key(self, name: str) -> str:
        if not _ARTIFACT_NAME.fullmatch(name):
            raise ValueError(f"artifact name {name!r}: letters, digits, '.', '_', '-'")
        return self._prefix + name

    async def put(self, name: str, data: bytes) -> None:
        key = self.key(name)
        digest = hashlib.sha256(data).hexdigest()
        try:
            await self._redis.hset(key, mapping={"data": data, "sha256": digest})
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def get(self, name: str) -> bytes | None:
        key = self.key(name)
        try:
            data: Any = await self._redis.hget(key, "data")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return bytes(data) if data is not None else None

    async def stamp(self, name: str) -> str | None:
        """The sha256 of the artifact's data; None when there is none."""
        key = self.key(name)
        try:
            digest: Any = await self._redis.hget(key, "sha256")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return bytes(digest).decode() if digest is not None else None


class RedisLease:
    """A lease one holder at a time gets for ``ttl_s``: ``SET NX PX``; renewed only by
    its holder (a script compares the token), so a holder whose lease expired and was
    taken by another cannot extend the other's."""

    def __init__(self, client: aioredis.Redis, key: str, token: str) -> None:
        self._redis = client
        self.key = key
        self.token = token
        self._renew = client.register_script(_RENEW)

    async def acquire(self, ttl_s: float) -> bool:
        try:
            got = await self._redis.set(self.key, self.token, nx=True, px=_millis(ttl_s))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return bool(got)

    async def renew(self, ttl_s: float) -> bool:
        """Extend the lease to ``ttl_s`` from now; False when this holder lost it."""
        try:
            renewed = await self._renew(keys=[self.key], args=[self.token, _millis(ttl_s)])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return bool(renewed)


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))
