"""The rule evaluator's configurable weights: validation, and Dragonfly's by default."""

from __future__ import annotations

import math

import pytest

from scheduler.core import Peer, RuleEvaluator, RuleWeights
from scheduler.core import evaluator as ev
from tests.unit.scheduler.swarm import PIECE_BYTES, MiB, Swarm


def _mixed_candidates() -> tuple[Swarm, Peer, list[Peer]]:
    """A child and five parents that differ in every term of the score."""
    swarm = Swarm()
    child = swarm.peer("c", idc="dc1", location="cn|bj|hd|r1")
    parents = [
        swarm.full("idle-near", idc="dc1", location="cn|bj|hd|r1"),
        swarm.full(
            "busy-near",
            idc="dc1",
            location="cn|bj|hd|r1",
            upload_bps=60 * MiB,
            upload_count=13,
        ),
        swarm.full("idle-far", idc="dc2", location="cn|sh|pd|r9", upload_capacity_bps=37 * MiB),
        swarm.full("seed", seed=True, idc="dc1", location="cn|bj|xc|r2", upload_bps=3 * MiB),
        swarm.peer("partial", pieces=[0, 1], location="cn|bj", upload_count=40),
    ]
    swarm.state.hosts["h-busy-near"].record_upload(7 * PIECE_BYTES, swarm.now)
    swarm.now = 3.7
    return swarm, child, parents


def _dragonfly_score(child: Peer, parent: Peer, now: float) -> float:
    """The score as it was written before the weights became configurable."""
    host = parent.host
    load = (
        0.5 * ev.bandwidth_headroom(host)
        + 0.3 * ev.bandwidth_duration(host, now)
        + 0.2 * ev.concurrency(host)
    )
    return (
        0.6 * load
        + 0.2 * ev.idc_affinity(host.idc, child.host.idc)
        + 0.1 * ev.location_affinity(host.location, child.host.location)
        + 0.1 * ev.host_type(parent)
    )


def test_default_weights_are_dragonflys_constants() -> None:
    assert RuleWeights() == RuleWeights(
        load_quality=ev.LOAD_QUALITY_WEIGHT,
        idc_affinity=ev.IDC_AFFINITY_WEIGHT,
        location_affinity=ev.LOCATION_AFFINITY_WEIGHT,
        host_type=ev.HOST_TYPE_WEIGHT,
        bandwidth_headroom=ev.BANDWIDTH_HEADROOM_WEIGHT,
        bandwidth_duration=ev.BANDWIDTH_DURATION_WEIGHT,
        concurrency=ev.CONCURRENCY_WEIGHT,
    )
    assert (RuleWeights().load_quality, RuleWeights().concurrency) == (0.6, 0.2)
    assert RuleEvaluator().weights == RuleWeights()


def test_default_weights_give_exactly_the_old_scores() -> None:
    swarm, child, parents = _mixed_candidates()
    expected = [_dragonfly_score(child, parent, swarm.now) for parent in parents]
    assert len(set(expected)) == len(parents)  # the candidates really differ
    assert RuleEvaluator().score(child, parents, swarm.now) == expected  # bit for bit
    assert RuleEvaluator(RuleWeights()).score(child, parents, swarm.now) == expected
    terms = [RuleEvaluator().terms(child, parent, swarm.now).total for parent in parents]
    assert terms == expected


def test_other_weights_score_by_the_same_terms() -> None:
    swarm, child, parents = _mixed_candidates()
    weights = RuleWeights(
        load_quality=1.0,
        idc_affinity=0.0,
        location_affinity=2.5,
        host_type=0.3,
        bandwidth_headroom=0.0,
        bandwidth_duration=0.1,
        concurrency=0.9,
    )
    evaluator = RuleEvaluator(weights)
    scores = evaluator.score(child, parents, swarm.now)
    for parent, score in zip(parents, scores, strict=True):
        host = parent.host
        load = 0.1 * ev.bandwidth_duration(host, swarm.now) + 0.9 * ev.concurrency(host)
        assert score == pytest.approx(
            load
            + 2.5 * ev.location_affinity(host.location, child.host.location)
            + 0.3 * ev.host_type(parent)
        )
        assert score == evaluator.terms(child, parent, swarm.now).weighted(weights)
    assert scores != RuleEvaluator().score(child, parents, swarm.now)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, -math.inf, True, "0.5", None])
def test_a_bad_weight_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match="location_affinity"):
        RuleWeights(location_affinity=bad)  # type: ignore[arg-type]


def test_weights_from_a_mapping_keep_the_defaults_and_refuse_unknown_names() -> None:
    weights = RuleWeights.from_mapping({"location_affinity": 1, "concurrency": 0.0})
    assert weights == RuleWeights(location_affinity=1.0, concurrency=0.0)
    assert RuleWeights.from_mapping(weights.to_json()) == weights
    with pytest.raises(ValueError, match="unknown rule weights: rack_affinity"):
        RuleWeights.from_mapping({"rack_affinity": 1.0})
    with pytest.raises(ValueError, match="host_type"):
        RuleWeights.from_mapping({"host_type": -1})
