"""Which scheduler replicas are alive, judged from their heartbeats in the shared store.

Every replica writes a heartbeat to Redis every ``replica_heartbeat_s`` and reads all of
them back (``redis_store``); this class turns what it read into the live list it serves
peers at ``GET /api/v1/replicas``. The rules:

- A replica is alive until ``ttl_s`` after its last heartbeat.
- While the store cannot be reached, nothing expires: the list stays as it was, since
  the store's silence says nothing about the replicas, and a list that shrank to "just
  me" on every replica would send each peer somewhere else.
- When the store answers again (restarted, and empty), every replica known before gets
  ``ttl_s`` more to heartbeat into it before it is dropped, for the same reason.

Heartbeats and ``store_now`` are on the store's clock (Redis ``TIME``), ``now`` on this
replica's monotonic clock. Only differences on one clock are compared, so the machines'
clocks need not agree. Pure: time comes in as arguments, nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class _Entry:
    heard_at: float  # local time of the last heartbeat
    expires_at: float  # local time it is dropped unless it heartbeats again


class Membership:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, _Entry] = {}
        self._store_lost = False

    def observe(self, heartbeats: Mapping[str, float], store_now: float, now: float) -> None:
        """Take the heartbeats read from the store (replica -> time, store clock)."""
        if self._store_lost:
            for known in self._entries.values():
                known.expires_at = max(known.expires_at, now + self.ttl_s)
            self._store_lost = False
        for replica, beat in heartbeats.items():
            age_s = max(0.0, store_now - beat)
            if age_s >= self.ttl_s:
                continue
            heard_at = now - age_s
            entry = self._entries.get(replica)
            if entry is None:
                self._entries[replica] = _Entry(heard_at, heard_at + self.ttl_s)
            elif heard_at > entry.heard_at:
                entry.heard_at = heard_at
                entry.expires_at = max(entry.expires_at, heard_at + self.ttl_s)
        for replica in [r for r, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[replica]

    def store_lost(self) -> None:
        """The store could not be read: keep the list as it is until it answers again."""
        self._store_lost = True

    @property
    def is_store_lost(self) -> bool:
        return self._store_lost

    def live(self) -> list[str]:
        """The live replicas as of the last observation, in name order."""
        return sorted(self._entries)

    def heartbeat_age_s(self, replica: str, now: float) -> float | None:
        """Seconds since the replica's last heartbeat; None for one not listed."""
        entry = self._entries.get(replica)
        return None if entry is None else max(0.0, now - entry.heard_at)
