"""A keyed set with O(1) add, remove and uniform random sampling.

Candidate sampling draws a handful of peers out of thousands for every decision; a plain
``set`` cannot be sampled without copying it, and a ``dict`` cannot be indexed. This keeps
the items in a list (for sampling) plus a key -> position map (for O(1) removal by moving
the last item into the hole). Order depends only on the operations applied, never on
string hashing, so a seeded ``random.Random`` gives the same sample in every process.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RandomSet(Generic[T]):
    __slots__ = ("_items", "_keys", "_position")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._keys: list[str] = []
        self._position: dict[str, int] = {}

    def add(self, key: str, item: T) -> None:
        """Add ``item`` under ``key``; a key already present is left as it is."""
        if key in self._position:
            return
        self._position[key] = len(self._items)
        self._items.append(item)
        self._keys.append(key)

    def discard(self, key: str) -> None:
        position = self._position.pop(key, None)
        if position is None:
            return
        last_item = self._items.pop()
        last_key = self._keys.pop()
        if position < len(self._items):
            self._items[position] = last_item
            self._keys[position] = last_key
            self._position[last_key] = position

    def sample(self, rng: random.Random, count: int) -> list[T]:
        """Up to ``count`` distinct items, uniformly at random, in random order."""
        if count >= len(self._items):
            picked = list(self._items)
            rng.shuffle(picked)
            return picked
        return rng.sample(self._items, count)

    def __contains__(self, key: object) -> bool:
        return key in self._position

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))
