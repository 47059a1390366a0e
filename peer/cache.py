"""Which complete blobs the peer keeps, and which to evict to stay under the quota (sans-IO).

Blobs are kept in least-recently-used order. A blob a client is reading is never
evicted, and bytes of downloads in flight are reserved up front, so a download that
started is never starved of space by later ones. Partial downloads kept for a resume
(the download failed, or the daemon restarted) count too, or failures could fill the
disk past the quota; they are the first to go, oldest first, since nobody is waiting
for them.
"""

from __future__ import annotations

from collections import Counter, OrderedDict


class CacheIndex:
    def __init__(self, quota_bytes: int) -> None:
        self.quota_bytes = quota_bytes
        self._blobs: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._readers: Counter[str] = Counter()
        self._reserved: dict[str, int] = {}
        self._partials: OrderedDict[str, int] = OrderedDict()  # oldest first

    @property
    def blob_bytes(self) -> int:
        return sum(self._blobs.values())

    @property
    def reserved_bytes(self) -> int:
        return sum(self._reserved.values())

    @property
    def partial_bytes(self) -> int:
        return sum(self._partials.values())

    @property
    def used_bytes(self) -> int:
        return self.blob_bytes + self.reserved_bytes + self.partial_bytes

    def __contains__(self, digest: object) -> bool:
        return digest in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def digests(self) -> list[str]:
        """Cached blobs, least recently used first."""
        return list(self._blobs)

    def size_of(self, digest: str) -> int | None:
        return self._blobs.get(digest)

    def add(self, digest: str, size_bytes: int) -> None:
        self._reserved.pop(digest, None)
        self._blobs[digest] = size_bytes
        self._blobs.move_to_end(digest)

    def touch(self, digest: str) -> None:
        if digest in self._blobs:
            self._blobs.move_to_end(digest)

    def remove(self, digest: str) -> None:
        self._blobs.pop(digest, None)

    def acquire(self, digest: str) -> None:
        self._readers[digest] += 1

    def release(self, digest: str) -> None:
        self._readers[digest] -= 1
        if self._readers[digest] <= 0:
            del self._readers[digest]

    def in_use(self, digest: str) -> bool:
        return self._readers[digest] > 0

    def reserve(self, digest: str, size_bytes: int) -> None:
        self._reserved[digest] = size_bytes

    def unreserve(self, digest: str) -> None:
        self._reserved.pop(digest, None)

    def add_partial(self, digest: str, size_bytes: int) -> None:
        """A partial download left on disk, for a later request to resume."""
        self._partials[digest] = size_bytes
        self._partials.move_to_end(digest)

    def remove_partial(self, digest: str) -> None:
        self._partials.pop(digest, None)

    def is_partial(self, digest: str) -> bool:
        return digest in self._partials

    def plan_eviction(self, needed_bytes: int) -> list[str] | None:
        """What to evict so ``needed_bytes`` more fit under the quota: partial downloads,
        oldest first, then blobs, least recently used first.

        Returns None when even evicting every blob not in use would not make room.
        """
        excess = self.used_bytes + needed_bytes - self.quota_bytes
        victims: list[str] = []
        for digest, size_bytes in [*self._partials.items(), *self._blobs.items()]:
            if excess <= 0:
                break
            if self.in_use(digest):
                continue
            victims.append(digest)
            excess -= size_bytes
        return victims if excess <= 0 else None
