"""A peer's view of the scheduler replicas: who is there, who failed it, who owns a task.

The replicas a peer routes over are either the URLs it was configured with (no shared
membership: one scheduler, or a fixed list) or, when the schedulers keep their membership
in Redis, the live list any one of them returns. On top of that the peer keeps its own
evidence: a replica that refused or dropped a request is *marked down* and skipped, so
its tasks go to their next replica in the rendezvous ranking at once, without waiting for
its heartbeat to expire in Redis. A mark is lifted when the membership shows a heartbeat
from that replica newer than the mark (it is alive after all: a blip, or it restarted),
but not before ``hold_s``, so a replica that heartbeats yet cannot be reached from here is
not retried in a tight loop; and after ``down_s`` in any case, so a replica is never
shunned for good on one failure.

Pure: time comes in as ``now`` (seconds on any monotonic clock), nothing is read or sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from peer.rendezvous import rank

# How long a replica that failed a request is skipped, unless it heartbeats before then.
DOWN_S = 10.0
# The least time a replica that failed is skipped, heartbeats or not.
HOLD_S = 2.0


def normalize(url: str) -> str:
    """A replica's name: its base URL without trailing slashes or surrounding spaces."""
    return url.strip().rstrip("/")


class ReplicaView:
    def __init__(
        self, configured: Iterable[str], down_s: float = DOWN_S, hold_s: float = HOLD_S
    ) -> None:
        self.configured = tuple(dict.fromkeys(normalize(url) for url in configured if url.strip()))
        self.down_s = down_s
        self.hold_s = hold_s
        # The live replicas from shared membership; None while there is none (static).
        self._discovered: tuple[str, ...] | None = None
        self._down: dict[str, float] = {}  # replica -> when it was marked down

    @property
    def shared(self) -> bool:
        """Whether the replica list comes from shared membership (Redis)."""
        return self._discovered is not None

    def known(self) -> tuple[str, ...]:
        """Every replica requests may go to, down or not."""
        return self._discovered if self._discovered is not None else self.configured

    def discovered(self, replicas: Mapping[str, float] | None, now: float) -> None:
        """Take a replica's membership answer: URL -> seconds since its last heartbeat.

        None (or an empty list) means the schedulers share no membership: route over the
        configured URLs.
        """
        if not replicas:
            self._discovered = None
            return
        self._discovered = tuple(sorted(normalize(url) for url in replicas))
        for url, age_s in replicas.items():
            marked_at = self._down.get(normalize(url))
            if marked_at is not None and now - age_s > marked_at and now - marked_at >= self.hold_s:
                del self._down[normalize(url)]

    def mark_down(self, url: str, now: float) -> None:
        self._down[normalize(url)] = now

    def is_down(self, url: str, now: float) -> bool:
        marked_at = self._down.get(normalize(url))
        return marked_at is not None and now - marked_at < self.down_s

    def live(self, now: float) -> tuple[str, ...]:
        """Known replicas not marked down, in name order."""
        for url in [u for u, at in self._down.items() if now - at >= self.down_s]:
            del self._down[url]
        return tuple(sorted(url for url in self.known() if url not in self._down))

    def candidates(self, key: str, now: float) -> list[str]:
        """Replicas to try for ``key``, in order: its owner among the live ones and their
        successors, then (a last resort, when every live one failed) those marked down."""
        live = self.live(now)
        down = [url for url in self.known() if url not in live]
        return rank(key, live) + rank(key, down)
