"""The learned evaluator: one model call scores every candidate of a decision.

``score = model.predict(feature_matrix(child, candidates, now))``: the model predicts the
log throughput a piece from each candidate would get (``scheduler.learning.train``), so
higher is better, like every evaluator's score.

The model is passed in (the core reads no files). A model trained on another feature
version is refused at construction with ``ModelMismatchError``; the shell then keeps the
rule evaluator, logs why and counts it. A model that answers with the wrong number of
scores or with NaN for a decision is not trusted for that decision: the rule evaluator
scores it instead, and ``fallbacks`` counts it for the shell's metric.

Exploration: with probability ``exploration`` a decision is randomized among the top
``explore_top`` candidates (by the model's scores): their scores are shuffled among them,
so any ``K`` of them may be handed out. Records carry each chosen parent's propensity,
the probability that the policy would have handed it out given the candidates, so training
data does not only reflect the model's own choices and can be reweighted:

- a parent in the model's top K, not explored: ``1 - e + e x K / M``;
- any other parent among the top M: ``e x K / M``;

with ``e = exploration`` and ``M = min(explore_top, candidates)``. (Approximate: the core
still ranks candidates holding nothing the child lacks last, see ``scheduling``.)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from scheduler.core.errors import SchedulerError
from scheduler.core.evaluator import RuleEvaluator
from scheduler.core.features import FEATURE_NAMES, FEATURE_VERSION, feature_matrix
from scheduler.core.model import Peer

# Exploration picks among this many of the model's best candidates.
DEFAULT_EXPLORE_TOP = 8


class ScoringModel(Protocol):
    """What the learned evaluator needs of a model (``tree_model.TreeEnsemble`` is one)."""

    @property
    def feature_version(self) -> str: ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    @property
    def version(self) -> str: ...

    def predict(self, features: np.ndarray) -> np.ndarray: ...


class ModelMismatchError(SchedulerError):
    """The model was trained on features this scheduler does not compute."""


def check_model(model: ScoringModel) -> None:
    """Raise ``ModelMismatchError`` unless the model reads this core's feature set."""
    if model.feature_version != FEATURE_VERSION:
        raise ModelMismatchError(
            f"model {model.version} was trained on feature set {model.feature_version!r}; "
            f"this scheduler computes {FEATURE_VERSION!r}"
        )
    if tuple(model.feature_names) != FEATURE_NAMES:
        raise ModelMismatchError(
            f"model {model.version} names other feature columns than {FEATURE_VERSION!r}"
        )


@dataclass(frozen=True, slots=True)
class Scoring:
    """What the last decision saw: kept so records can carry the snapshot and propensity."""

    child_id: str
    candidate_ids: tuple[str, ...]
    features: np.ndarray
    scores: tuple[float, ...]
    explored: bool
    # Probability that each candidate would have been handed out as one of ``k``.
    propensities: tuple[float, ...]


class LearnedEvaluator:
    name = "learned"

    def __init__(
        self,
        model: ScoringModel,
        rng: random.Random | None = None,
        exploration: float = 0.0,
        parents_per_decision: int = 4,
        explore_top: int = DEFAULT_EXPLORE_TOP,
    ) -> None:
        check_model(model)
        if not 0.0 <= exploration <= 1.0:
            raise ValueError(f"exploration must be in [0, 1], got {exploration!r}")
        if exploration > 0 and rng is None:
            raise ValueError("exploration needs a random.Random")
        self.model = model
        self.exploration = exploration
        self._rng = rng
        self._k = parents_per_decision
        self._top = max(1, explore_top)
        self._fallback = RuleEvaluator()
        # Decisions the model could not score (wrong shape, NaN); the shell reads it.
        self.fallbacks = 0
        self.last_scoring: Scoring | None = None

    def score(self, child: Peer, candidates: Sequence[Peer], now: float) -> list[float]:
        features = feature_matrix(child, candidates, now)
        raw = np.asarray(self.model.predict(features), dtype=np.float64)
        if raw.shape != (len(candidates),) or not np.all(np.isfinite(raw)):
            self.fallbacks += 1
            self.last_scoring = None
            return self._fallback.score(child, candidates, now)
        scores: list[float] = raw.tolist()
        explored = False
        count = len(scores)
        order = sorted(range(count), key=lambda i: -scores[i])
        top = order[: min(self._top, count)]
        e = self.exploration
        if e > 0 and self._rng is not None and self._rng.random() < e:
            explored = True
            shuffled = [scores[i] for i in top]
            self._rng.shuffle(shuffled)
            for i, value in zip(top, shuffled, strict=True):
                scores[i] = value
        k, m = min(self._k, count), len(top)
        uniform = e * k / m if m else 0.0
        best = set(order[:k])
        in_top = set(top)
        propensities = tuple(
            (1.0 - e) + uniform if i in best else (uniform if i in in_top else 0.0)
            for i in range(count)
        )
        self.last_scoring = Scoring(
            child.peer_id,
            tuple(p.peer_id for p in candidates),
            features,
            tuple(scores),
            explored,
            propensities,
        )
        return scores
