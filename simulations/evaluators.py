"""Evaluators the simulator adds to compare against: they implement the core's protocol.

They plug into ``scheduler.core.SchedulerState`` like the rule evaluator does, so the
rest of scheduling (sampling, filters, quota) is the shipped code.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from scheduler.core import Evaluator, Peer


class RandomEvaluator:
    """Scores every candidate uniformly at random: the "random parent" baseline."""

    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def score(self, child: Peer, candidates: Sequence[Peer], now: float) -> list[float]:
        return [self._rng.random() for _ in candidates]


def _check(evaluator: RandomEvaluator) -> Evaluator:
    return evaluator  # mypy proves RandomEvaluator satisfies the core's Evaluator protocol
