"""Rendezvous (highest random weight) hashing: which scheduler replica owns a task.

Every peer ranks the replicas for a task the same way, by a hash of (replica, task id):
the replica with the highest weight owns the task, and when it dies the next one in the
ranking takes over. What follows from that, and ``tests/unit/test_rendezvous.py`` checks:

- the ranking depends on the set of replicas only, not on the order a peer learned them;
- tasks spread evenly over the replicas;
- when a replica leaves, only its own tasks move (each to its second choice), and when
  one joins, it takes about 1/n of the tasks and nothing else moves.

So two peers that agree on the live replicas agree on every task's owner without talking
to each other, and a replica's death disturbs only the tasks it owned.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(replica: str, key: str) -> int:
    """The replica's weight for ``key``: 64 bits of BLAKE2b over both, as an integer."""
    digest = hashlib.blake2b(f"{replica}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(key: str, replicas: Iterable[str]) -> list[str]:
    """The distinct ``replicas`` for ``key``, owner first, then each one's successor.

    Ties (a 64-bit collision) fall back to the replica name, so the order is total.
    """
    return sorted(set(replicas), key=lambda replica: (weight(replica, key), replica), reverse=True)


def owner(key: str, replicas: Iterable[str]) -> str | None:
    """The replica that owns ``key``; None when there is none."""
    ranked = rank(key, replicas)
    return ranked[0] if ranked else None
