"""Evaluators the simulator adds to compare against: they implement the core's protocol.

They plug into ``scheduler.core.SchedulerState`` like the rule evaluator does, so the
rest of scheduling (sampling, filters, upload slots, quota) is the shipped code and only
the ranking of the sampled candidates differs. ``scheduler_for`` builds the core for a
strategy.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from pathlib import Path

from scheduler.core import (
    Evaluator,
    Peer,
    RuleEvaluator,
    RuleWeights,
    SchedulerSettings,
    SchedulerState,
)
from scheduler.core.learned import LearnedEvaluator
from scheduler.learning.artifact import DEFAULT_MODEL_PATH, load_model
from simulations.network import Network
from simulations.scenario import Scenario
from simulations.topology import Cluster, SimHost

# Kraken: peers whose completeness differs by less than this are ranked at random.
KRAKEN_JITTER = 0.1
# The oracle looks at this many candidates per decision (the core's default is 15).
ORACLE_SAMPLE_SIZE = 64
# The tuned strategy's weights unless a scenario names others: what ``p2psim tune``
# found on the training scenarios (simulations/tuning.py).
DEFAULT_RULE_WEIGHTS_PATH = Path(__file__).with_name("tuned_rule_weights.json")


class RandomEvaluator:
    """Scores every candidate uniformly at random: the "random parent" baseline."""

    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def score(self, child: Peer, candidates: Sequence[Peer], now: float) -> list[float]:
        return [self._rng.random() for _ in candidates]


class KrakenEvaluator:
    """Kraken's completeness hand-out order: the peers with the most pieces first.

    ``score = pieces held / pieces of the blob + KRAKEN_JITTER x U(0, 1)``. Kraken's
    tracker shuffles the peers of a torrent and then sorts them by completeness
    (uber/kraken ``tracker/peerhandoutpolicy``, completeness policy), so peers of equal
    standing come out in random order; the jitter plays that part here. Like Kraken it
    ignores load, bandwidth and topology.
    """

    name = "kraken"

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def score(self, child: Peer, candidates: Sequence[Peer], now: float) -> list[float]:
        rng = self._rng
        return [
            parent.finished_piece_count / max(1, parent.task.piece_count)
            + KRAKEN_JITTER * rng.random()
            for parent in candidates
        ]


class OracleEvaluator:
    """Scores a candidate by the rate a new transfer from it to the child would get now.

    ``score = min over the path's links L, except the child's own NIC download (which
    every candidate shares), of capacity(L) / (flows on L + 1)``, in bytes/s, from the
    simulator's network model: the true capacities of stragglers and racks and the true
    load of every link. No real scheduler can observe this; it is the reference the
    evaluators that ship are measured against. It still goes through the core, so the
    bookkeeping (upload slots, quota, filters) is the same, and it looks at a larger
    sample of candidates (``ORACLE_SAMPLE_SIZE``).
    """

    name = "oracle"

    def __init__(self, cluster: Cluster, network: Network) -> None:
        self._hosts: dict[str, SimHost] = {host.host_id: host for host in cluster.hosts}
        self._cluster = cluster
        self._network = network

    def score(self, child: Peer, candidates: Sequence[Peer], now: float) -> list[float]:
        hosts = self._hosts
        child_host = hosts[child.host.host_id]
        scores = []
        for parent in candidates:
            path = self._cluster.peer_path(hosts[parent.host.host_id], child_host)
            scores.append(
                min(
                    link.capacity_bps / (len(link.flows) + 1)
                    for link in path
                    if link is not child_host.down
                )
            )
        return scores


def learned_evaluator(model_path: str) -> LearnedEvaluator:
    """The learned evaluator with the model at ``model_path``, or the shipped model.

    No exploration: the simulator measures the policy as it would serve.
    """
    return LearnedEvaluator(load_model(model_path or DEFAULT_MODEL_PATH))


def load_rule_weights(path: str | Path) -> RuleWeights:
    """The weights in a ``p2psim tune`` file: a JSON object whose ``weights`` maps weight
    names to numbers (missing ones keep Dragonfly's). ValueError for anything else."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
        raise ValueError(f"{path}: expected a JSON object with a 'weights' object")
    try:
        return RuleWeights.from_mapping(data["weights"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def tuned_evaluator(weights_path: str) -> RuleEvaluator:
    """The rule evaluator with the weights at ``weights_path``, or the committed ones."""
    return RuleEvaluator(load_rule_weights(weights_path or DEFAULT_RULE_WEIGHTS_PATH))


def scheduler_for(
    scenario: Scenario, rng: random.Random, cluster: Cluster, network: Network
) -> SchedulerState | None:
    """The scheduler core for the scenario's strategy; None for direct pulls."""
    strategy = scenario.strategy
    if strategy == "direct":
        return None
    settings = SchedulerSettings(
        rack_gateways=scenario.rack_gateways,
        rack_congestion_ratio=scenario.rack_congestion_ratio,
        rack_stripes=scenario.rack_stripes,
        rack_claim_lease_s=scenario.rack_claim_lease_s,
        rack_claim_hold_factor=scenario.rack_claim_hold_factor,
        rack_holders_per_claim=scenario.rack_holders_per_claim,
        origin_sharers_per_rack=scenario.origin_sharers_per_rack,
    )
    evaluator: Evaluator
    if strategy == "random":
        evaluator = RandomEvaluator(rng)
    elif strategy == "kraken":
        evaluator = KrakenEvaluator(rng)
    elif strategy == "oracle":
        evaluator = OracleEvaluator(cluster, network)
        settings = dataclasses.replace(settings, candidate_sample_size=ORACLE_SAMPLE_SIZE)
    elif strategy == "learned":
        evaluator = learned_evaluator(scenario.model_path)
    elif strategy == "tuned":
        evaluator = tuned_evaluator(scenario.rule_weights)
    else:
        evaluator = RuleEvaluator()
    return SchedulerState(settings, evaluator)
