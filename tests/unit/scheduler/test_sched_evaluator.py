"""The rule evaluator: each term against its formula, and the ranking it produces."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from scheduler.core import Parents, Peer, RuleEvaluator, SchedulerError
from scheduler.core import evaluator as ev
from scheduler.core.model import UPLOAD_WINDOW_S
from tests.unit.scheduler.swarm import PIECE_BYTES, MiB, Swarm


def _near_idle_and_far_loaded() -> Swarm:
    swarm = Swarm()
    swarm.peer("c", idc="dc1", location="cn|bj|hd")
    swarm.full("near", idc="dc1", location="cn|bj|hd", upload_capacity_bps=100 * MiB)
    swarm.full(
        "far",
        idc="dc2",
        location="cn|sh|pd",
        upload_capacity_bps=100 * MiB,
        upload_bps=75 * MiB,
        upload_count=25,
    )
    swarm.state.hosts["h-far"].record_upload(30 * PIECE_BYTES, swarm.now)  # 120 MiB
    return swarm


def test_same_idc_idle_parent_beats_loaded_remote_one_by_the_formula() -> None:
    swarm = _near_idle_and_far_loaded()
    decision = swarm.schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["near", "far"]
    near, far = decision.parents

    # near: idle (load quality 1), same idc (1), same location (1), normal host (0.5).
    assert near.score == pytest.approx(0.6 * 1 + 0.2 * 1 + 0.1 * 1 + 0.1 * 0.5)  # 0.95

    # far: headroom 1 - 75/100; duration 1 - 120 MiB / (100 MiB/s x 60 s);
    # concurrency (100 MiB / 16 MiB) / 25 uploads; location "cn" of 5 levels matches.
    headroom = 1 - 75 / 100
    duration = 1 - 120 / (100 * UPLOAD_WINDOW_S)
    concurrency = (100 / 16) / 25
    load = 0.5 * headroom + 0.3 * duration + 0.2 * concurrency
    assert load == pytest.approx(0.469)
    assert far.score == pytest.approx(0.6 * load + 0.2 * 0 + 0.1 * (1 / 5) + 0.1 * 0.5)


def test_terms_expose_each_part_of_the_score() -> None:
    swarm = _near_idle_and_far_loaded()
    state = swarm.state
    terms = RuleEvaluator().terms(state.peers["c"], state.peers["far"], swarm.now)
    assert terms.idc_affinity == 0.0
    assert terms.location_affinity == pytest.approx(0.2)
    assert terms.host_type == 0.5
    assert terms.total == pytest.approx(
        0.6 * terms.load_quality + 0.1 * terms.location_affinity + 0.1 * terms.host_type
    )


def test_scores_are_the_totals_of_the_terms_to_the_last_bit() -> None:
    swarm = _near_idle_and_far_loaded()
    state = swarm.state
    child = state.peers["c"]
    candidates = [state.peers["near"], state.peers["far"]]
    evaluator = RuleEvaluator()
    totals = [evaluator.terms(child, parent, swarm.now).total for parent in candidates]
    assert evaluator.score(child, candidates, swarm.now) == totals


@pytest.mark.parametrize(
    ("parent", "child", "expected"),
    [
        ("dc1", "dc1", 1.0),
        ("DC1", "dc1", 1.0),
        ("dc1", "dc2", 0.0),
        ("", "", 0.0),  # unknown is not "the same"
        ("dc1", "", 0.0),
    ],
)
def test_idc_affinity(parent: str, child: str, expected: float) -> None:
    assert ev.idc_affinity(parent, child) == expected


@pytest.mark.parametrize(
    ("parent", "child", "expected"),
    [
        ("cn|bj|hd|a|x", "cn|bj|hd|a|x", 1.0),
        ("CN|BJ", "cn|bj", 1.0),
        ("cn|bj|hd", "cn|bj|cy", 0.4),
        ("cn|bj", "cn|bj|hd", 0.4),
        ("cn", "us", 0.0),
        ("", "cn", 0.0),
        ("a|b|c|d|e|f", "a|b|c|d|e|g", 1.0),  # only five levels count
        ("a|b|c|d|x|f", "a|b|c|d|e|f", 0.8),
    ],
)
def test_location_affinity(parent: str, child: str, expected: float) -> None:
    assert ev.location_affinity(parent, child) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("capacity_bps", "upload_bps", "expected"),
    [(0.0, 0.0, 0.0), (100.0, 0.0, 1.0), (100.0, 50.0, 0.5), (100.0, 150.0, 0.0)],
)
def test_bandwidth_headroom(capacity_bps: float, upload_bps: float, expected: float) -> None:
    host = Swarm().host("h", upload_capacity_bps=capacity_bps, upload_bps=upload_bps)
    assert ev.bandwidth_headroom(host) == pytest.approx(expected)


def test_bandwidth_duration_decays_with_the_window() -> None:
    host = Swarm().host("h", upload_capacity_bps=1 * MiB)
    assert ev.bandwidth_duration(host, 0.0) == 1.0
    host.record_upload(30 * MiB, now=0.0)  # half of 60 s at 1 MiB/s
    assert ev.bandwidth_duration(host, 0.0) == pytest.approx(0.5)
    later = 0.5 * math.exp(-1)
    assert ev.bandwidth_duration(host, UPLOAD_WINDOW_S) == pytest.approx(1 - later)
    host.record_upload(600 * MiB, now=UPLOAD_WINDOW_S)
    assert ev.bandwidth_duration(host, UPLOAD_WINDOW_S) == 0.0
    assert ev.bandwidth_duration(Swarm().host("none", upload_capacity_bps=0), 0.0) == 0.0


@pytest.mark.parametrize(
    ("capacity_bps", "uploads", "expected"),
    [
        (0.0, 0, 0.0),
        (160 * MiB, 0, 1.0),
        (160 * MiB, 10, 1.0),  # 10 reference pieces per second saturate it
        (160 * MiB, 40, 0.25),
        (1 * MiB, 1, 1.0),  # a slow host still takes one upload
        (1 * MiB, 4, 0.25),
    ],
)
def test_concurrency(capacity_bps: float, uploads: int, expected: float) -> None:
    host = Swarm().host("h", upload_capacity_bps=capacity_bps, upload_count=uploads)
    assert ev.concurrency(host) == pytest.approx(expected)


def test_concurrency_counts_children_handed_out_since_the_announcement() -> None:
    host = Swarm().host("h", upload_capacity_bps=1 * MiB, upload_count=0)
    host.children_count = 2
    assert ev.concurrency(host) == pytest.approx(0.5)


def test_host_type_prefers_a_fetching_seed_then_normal_peers_then_a_finished_seed() -> None:
    swarm = Swarm()
    fetching = swarm.peer("s1", seed=True, pieces=[0])
    normal = swarm.peer("n", pieces=[0])
    done = swarm.full("s2", seed=True)
    swarm.state.finish_peer("s2")
    assert [ev.host_type(p) for p in (fetching, normal, done)] == [1.0, 0.5, 0.0]


def test_weights_sum_to_one() -> None:
    top = ev.LOAD_QUALITY_WEIGHT + ev.IDC_AFFINITY_WEIGHT + ev.LOCATION_AFFINITY_WEIGHT
    assert top + ev.HOST_TYPE_WEIGHT == pytest.approx(1.0)
    inner = ev.BANDWIDTH_HEADROOM_WEIGHT + ev.BANDWIDTH_DURATION_WEIGHT + ev.CONCURRENCY_WEIGHT
    assert inner == pytest.approx(1.0)


class _ByPeerId:
    """An evaluator of our own: scores candidates by a fixed table, for the pipeline."""

    name = "table"

    def __init__(self, scores: dict[str, float], extra: int = 0) -> None:
        self.scores = scores
        self.extra = extra
        self.calls = 0

    def score(self, child: Peer, candidates: Sequence[Peer], now: float) -> list[float]:
        self.calls += 1
        return [self.scores[p.peer_id] for p in candidates] + [0.0] * self.extra


def _three_parents(evaluator: _ByPeerId) -> Swarm:
    swarm = Swarm(evaluator=evaluator)
    swarm.peer("c")
    for name in ("a", "b", "d"):
        swarm.full(name)
    return swarm


def test_any_evaluator_scores_the_whole_batch_in_one_call() -> None:
    evaluator = _ByPeerId({"a": 0.1, "b": 0.9, "d": 0.5})
    decision = _three_parents(evaluator).schedule("c")
    assert evaluator.calls == 1
    assert isinstance(decision, Parents)
    assert [(p.peer_id, p.score) for p in decision.parents] == [
        ("b", 0.9),
        ("d", 0.5),
        ("a", 0.1),
    ]


def test_not_a_number_ranks_last() -> None:
    decision = _three_parents(_ByPeerId({"a": 0.1, "b": math.nan, "d": 0.5})).schedule("c")
    assert isinstance(decision, Parents)
    assert [p.peer_id for p in decision.parents] == ["d", "a", "b"]


def test_an_evaluator_returning_the_wrong_number_of_scores_is_an_error() -> None:
    swarm = _three_parents(_ByPeerId({"a": 0.1, "b": 0.9, "d": 0.5}, extra=1))
    with pytest.raises(SchedulerError, match="returned 4 scores for 3 candidates"):
        swarm.schedule("c")
