"""The strategies: each P2P one is an evaluator inside scheduler.core's pipeline."""

from __future__ import annotations

import random

import pytest

from scheduler.core import (
    HostAnnounced,
    PeerRegistered,
    PieceReport,
    PiecesReported,
    RuleEvaluator,
    SchedulerState,
)
from scheduler.core.learned import LearnedEvaluator
from simulations.evaluators import (
    KRAKEN_JITTER,
    KrakenEvaluator,
    OracleEvaluator,
    RandomEvaluator,
    scheduler_for,
)
from simulations.report import simulate
from simulations.scenario import GBPS, STRATEGIES, Scenario
from simulations.swarm import Swarm

TASK = "sha256:" + "ab" * 32


def _state_with_progress(pieces_held: list[int], piece_count: int = 10) -> SchedulerState:
    """One task; peer i (on host i) holds its first pieces_held[i] pieces."""
    state = SchedulerState()
    for i, held in enumerate(pieces_held):
        state.announce_host(
            HostAnnounced(
                host_id=f"h{i}",
                address=f"10.0.0.{i}",
                piece_port=65002,
                upload_capacity_bps=GBPS,
                download_capacity_bps=GBPS,
                upload_slots=8,
            ),
            0.0,
        )
        state.register_peer(PeerRegistered(f"p{i}", TASK, f"h{i}", piece_count, 1), 0.0)
        reports = tuple(PieceReport(j, None, 1, 0.1, True, f"d{j}") for j in range(held))
        if reports:
            state.report_pieces(PiecesReported(f"p{i}", reports), 0.0)
    return state


def test_kraken_ranks_by_completeness_with_a_bounded_random_part() -> None:
    state = _state_with_progress([0, 2, 9, 5, 10])
    child, candidates = state.peers["p0"], [state.peers[f"p{i}"] for i in (1, 2, 3, 4)]
    evaluator = KrakenEvaluator(random.Random(1))
    for _ in range(50):
        scores = evaluator.score(child, candidates, 0.0)
        for parent, score in zip(candidates, scores, strict=True):
            share = parent.finished_piece_count / 10
            assert share <= score < share + KRAKEN_JITTER
        # Ten points of completeness apart or more: always in completeness order.
        assert scores[3] > scores[1] > scores[2] > scores[0]
    # Within the jitter the order is random: both orders of 0.9 and 1.0 turn up.
    orders = {
        evaluator.score(child, [candidates[1], candidates[3]], 0.0)[0] > 0.95 for _ in range(200)
    }
    assert orders == {True, False}


def test_oracle_prefers_the_parent_whose_path_is_free_now() -> None:
    scenario = Scenario(nodes=4, hosts_per_rack=4, layers_mib=(8.0,), strategy="oracle")
    swarm = Swarm(scenario)
    for node in swarm.nodes:
        swarm.queue.at(0.0, swarm._arrive, node)
    swarm.queue.run(until_s=0.01)  # hosts announced, peers registered
    assert swarm.state is not None
    evaluator = swarm.state.evaluator
    assert isinstance(evaluator, OracleEvaluator)
    peers = [swarm.state.peers[node.peers[0].peer_id] for node in swarm.nodes]
    child, busy, idle = peers[0], peers[1], peers[2]
    busy_host = swarm.nodes[1].host
    # Three transfers already leave the busy parent's NIC: a fourth would get a quarter.
    for _ in range(3):
        swarm.network.start((busy_host.up,), 10**9, 0.01, lambda flow, t: None)
    busy_score, idle_score = evaluator.score(child, [busy, idle], 0.01)
    assert busy_score == pytest.approx(busy_host.upload_bps / 4)
    assert idle_score == pytest.approx(swarm.nodes[2].host.upload_bps)


def test_every_p2p_strategy_schedules_through_the_core() -> None:
    cluster_scenario = Scenario(nodes=3, layers_mib=(2.0,))
    for strategy in STRATEGIES:
        swarm = Swarm(cluster_scenario.replace(strategy=strategy))
        state = scheduler_for(swarm.scenario, random.Random(0), swarm.cluster, swarm.network)
        if strategy == "direct":
            assert state is None
            continue
        assert isinstance(state, SchedulerState)
        kinds = {
            "rule": RuleEvaluator,
            "random": RandomEvaluator,
            "kraken": KrakenEvaluator,
            "oracle": OracleEvaluator,
            "learned": LearnedEvaluator,
            "tuned": RuleEvaluator,  # with other weights, and the rule's name in records
        }
        assert isinstance(state.evaluator, kinds[strategy])
        assert state.evaluator.name == {"tuned": "rule"}.get(strategy, strategy)
    # The oracle looks at a larger sample; the others use the shipped defaults.
    oracle = Swarm(cluster_scenario.replace(strategy="oracle")).state
    rule = Swarm(cluster_scenario).state
    assert oracle is not None and rule is not None
    assert oracle.settings.candidate_sample_size > rule.settings.candidate_sample_size


@pytest.mark.parametrize("strategy", ["random", "kraken", "oracle"])
def test_a_strategy_changes_choices_but_not_the_draw(strategy: str) -> None:
    """Common random numbers: a seed fixes arrivals and the cluster whatever the strategy,
    while the strategy changes the schedule."""
    scenario = Scenario(
        name="crn", nodes=40, hosts_per_rack=10, layers_mib=(8.0, 24.0), arrival_spread_s=1.0
    )
    base, other = Swarm(scenario), Swarm(scenario.replace(strategy=strategy))
    assert [n.arrival_s for n in base.nodes] == [n.arrival_s for n in other.nodes]
    a, b = simulate(scenario), simulate(scenario.replace(strategy=strategy))
    assert a.completion_times_s != b.completion_times_s
