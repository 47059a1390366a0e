"""Evaluators score candidate parents for one child; the rule evaluator is the default.

Every evaluator scores a whole batch in one call, so a learned evaluator can run one model
inference per decision instead of one per candidate. Inputs are only what a real
scheduler observes: announced capacity and load, upload slots it handed out, bytes that
children reported, topology labels and peer progress.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from scheduler.core.model import UPLOAD_WINDOW_S, Host, Peer, PeerState


class Evaluator(Protocol):
    """Scores candidate parents for one child; higher is better."""

    @property
    def name(self) -> str:
        """Short stable name, for logs and metric labels."""
        ...

    def score(self, child: Peer, candidates: Sequence[Peer], now: float) -> Sequence[float]:
        """One score per candidate, in the candidates' order. Must not mutate anything."""
        ...


# Top-level weights of Dragonfly's default evaluator.
LOAD_QUALITY_WEIGHT = 0.6
IDC_AFFINITY_WEIGHT = 0.2
LOCATION_AFFINITY_WEIGHT = 0.1
HOST_TYPE_WEIGHT = 0.1
# Weights inside the load quality term.
BANDWIDTH_HEADROOM_WEIGHT = 0.5
BANDWIDTH_DURATION_WEIGHT = 0.3
CONCURRENCY_WEIGHT = 0.2
# Location strings are compared element by element over at most this many levels.
LOCATION_DEPTH = 5
LOCATION_SEPARATOR = "|"
# Pieces of this size per second that saturate a host's upload: the yardstick for how
# many concurrent uploads a host can take before each one slows the others down.
REFERENCE_PIECE_BYTES = 16 * 1024 * 1024
# A seed still fetching the blob is the best source a new task has; once it is done,
# normal peers are preferred so the seed stays free for the next new blob.
SEED_FETCHING_SCORE = 1.0
SEED_DONE_SCORE = 0.0
NORMAL_HOST_SCORE = 0.5


@dataclass(frozen=True, slots=True)
class RuleWeights:
    """The rule evaluator's weights; the defaults are Dragonfly's.

    Only the order of scores matters (the best few candidates are handed out), so
    scaling every weight by the same factor changes nothing. Each weight must be finite
    and >= 0: a negative weight would turn a term that marks a better parent into a
    penalty, which is never what an operator means.
    """

    load_quality: float = LOAD_QUALITY_WEIGHT
    idc_affinity: float = IDC_AFFINITY_WEIGHT
    location_affinity: float = LOCATION_AFFINITY_WEIGHT
    host_type: float = HOST_TYPE_WEIGHT
    bandwidth_headroom: float = BANDWIDTH_HEADROOM_WEIGHT
    bandwidth_duration: float = BANDWIDTH_DURATION_WEIGHT
    concurrency: float = CONCURRENCY_WEIGHT

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"rule weight {f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"rule weight {f.name} must be finite and >= 0, got {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RuleWeights:
        """Weights from a mapping of field names; missing ones keep Dragonfly's default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown rule weights: {', '.join(map(str, unknown))}; known: {sorted(known)}"
            )
        return cls(**data)

    def to_json(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_RULE_WEIGHTS = RuleWeights()


def bandwidth_headroom(host: Host) -> float:
    """``max(0, 1 - announced_upload_bps / upload_capacity_bps)``; 0 with no capacity."""
    if host.upload_capacity_bps <= 0:
        return 0.0
    return max(0.0, 1.0 - host.announced_upload_bps / host.upload_capacity_bps)


def bandwidth_duration(host: Host, now: float) -> float:
    """``max(0, 1 - recent_upload_bytes / (upload_capacity_bps x UPLOAD_WINDOW_S))``.

    ``recent_upload_bytes`` is what children reported fetching from the host, decayed over
    ``UPLOAD_WINDOW_S``: the share of the last minute's upload capacity already used.
    1 for a host that uploaded nothing recently, 0 with no capacity.
    """
    if host.upload_capacity_bps <= 0:
        return 0.0
    recent_bytes = host.recent_upload_bytes(now)
    if recent_bytes <= 0:
        return 1.0
    return max(0.0, 1.0 - recent_bytes / (host.upload_capacity_bps * UPLOAD_WINDOW_S))


def concurrency(host: Host) -> float:
    """1 while ``uploads <= saturating``, else ``saturating / uploads``; 0 with no capacity.

    ``saturating = max(1, upload_capacity_bps / REFERENCE_PIECE_BYTES)`` and ``uploads`` is
    the larger of the host's announced upload count and the children the scheduler gave
    it since: announcements lag, and a burst of registrations must see its own effect.
    (Dragonfly scores hosts under one reference piece per second as 0 outright; here they
    count as able to take one upload, so slow clusters still rank by load.)
    """
    if host.upload_capacity_bps <= 0:
        return 0.0
    uploads = max(host.announced_upload_count, host.children_count)
    saturating = max(1.0, host.upload_capacity_bps / REFERENCE_PIECE_BYTES)
    if uploads <= saturating:
        return 1.0
    return saturating / uploads


def load_quality(host: Host, now: float, weights: RuleWeights = DEFAULT_RULE_WEIGHTS) -> float:
    """``0.5 x bandwidth_headroom + 0.3 x bandwidth_duration + 0.2 x concurrency``.

    The weights are ``weights``' inner three; those above are the defaults.
    """
    return (
        weights.bandwidth_headroom * bandwidth_headroom(host)
        + weights.bandwidth_duration * bandwidth_duration(host, now)
        + weights.concurrency * concurrency(host)
    )


def idc_affinity(parent_idc: str, child_idc: str) -> float:
    """1 when both idcs are set and equal (ignoring case), else 0."""
    if not parent_idc or not child_idc:
        return 0.0
    return 1.0 if parent_idc.casefold() == child_idc.casefold() else 0.0


def location_affinity(parent_location: str, child_location: str) -> float:
    """``matching leading elements / LOCATION_DEPTH``; 1 when equal, 0 when either is unset.

    ``"cn|bj|haidian|a"`` vs ``"cn|bj|chaoyang|b"``: two leading elements match, 2/5 = 0.4.
    """
    if not parent_location or not child_location:
        return 0.0
    parent_parts = _location_parts(parent_location)
    child_parts = _location_parts(child_location)
    if parent_parts == child_parts:
        return 1.0
    matched = 0
    for parent_part, child_part in zip(
        parent_parts[:LOCATION_DEPTH], child_parts[:LOCATION_DEPTH], strict=False
    ):
        if parent_part != child_part:
            break
        matched += 1
    return matched / LOCATION_DEPTH


@functools.lru_cache(maxsize=4096)
def _location_parts(location: str) -> tuple[str, ...]:
    """A location's elements, case-folded. Cached: a cluster has few distinct locations
    and every decision compares the child's with each candidate's."""
    return tuple(location.casefold().split(LOCATION_SEPARATOR))


def host_type(parent: Peer) -> float:
    """Seed still fetching: 1; seed done: 0; normal host: 0.5."""
    if not parent.host.is_seed:
        return NORMAL_HOST_SCORE
    return SEED_DONE_SCORE if parent.state is PeerState.SUCCEEDED else SEED_FETCHING_SCORE


@dataclass(frozen=True, slots=True)
class RuleTerms:
    """The four terms of the rule score of one parent for one child, each in [0, 1]."""

    load_quality: float
    idc_affinity: float
    location_affinity: float
    host_type: float

    @property
    def total(self) -> float:
        """The score with Dragonfly's default weights."""
        return self.weighted(DEFAULT_RULE_WEIGHTS)

    def weighted(self, weights: RuleWeights) -> float:
        """The score with ``weights``' top-level four (the load term is already mixed)."""
        return (
            weights.load_quality * self.load_quality
            + weights.idc_affinity * self.idc_affinity
            + weights.location_affinity * self.location_affinity
            + weights.host_type * self.host_type
        )


class RuleEvaluator:
    """Dragonfly's default weights, in [0, 1]:

    ``score = 0.6 x load_quality + 0.2 x idc_affinity + 0.1 x location_affinity
    + 0.1 x host_type`` with
    ``load_quality = 0.5 x bandwidth_headroom + 0.3 x bandwidth_duration + 0.2 x concurrency``.

    Each term is defined by the function of the same name in this module. Other
    ``weights`` replace the seven numbers (``RuleWeights``); the terms stay the same.
    """

    name = "rule"

    def __init__(self, weights: RuleWeights = DEFAULT_RULE_WEIGHTS) -> None:
        self.weights = weights

    def terms(self, child: Peer, parent: Peer, now: float) -> RuleTerms:
        parent_host, child_host = parent.host, child.host
        return RuleTerms(
            load_quality=load_quality(parent_host, now, self.weights),
            idc_affinity=idc_affinity(parent_host.idc, child_host.idc),
            location_affinity=location_affinity(parent_host.location, child_host.location),
            host_type=host_type(parent),
        )

    def score(self, child: Peer, candidates: Sequence[Peer], now: float) -> list[float]:
        # ``terms(...).weighted(self.weights)`` for each candidate, without building the
        # terms; the same operations in the same order, so the same floats.
        weights = self.weights
        w_load, w_idc = weights.load_quality, weights.idc_affinity
        w_location, w_host_type = weights.location_affinity, weights.host_type
        child_host = child.host
        child_idc, child_location = child_host.idc, child_host.location
        scores = []
        for parent in candidates:
            parent_host = parent.host
            scores.append(
                w_load * load_quality(parent_host, now, weights)
                + w_idc * idc_affinity(parent_host.idc, child_idc)
                + w_location * location_affinity(parent_host.location, child_location)
                + w_host_type * host_type(parent)
            )
        return scores
