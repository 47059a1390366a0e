"""Whole runs: determinism, the lower bound, small cases with known answers."""

from __future__ import annotations

import ast
import gc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulations.bound import lower_bound_s
from simulations.report import simulate
from simulations.scenario import GBPS, STRATEGIES, MiB, Scenario, ScenarioError, load_scenario

SIMULATIONS = Path(__file__).resolve().parents[3] / "simulations"

# Small enough for the exact sharing mode: 30 nodes in 3 racks, a 64 MiB image.
SMALL = Scenario(
    name="small",
    nodes=30,
    hosts_per_rack=10,
    layers_mib=(8.0, 40.0, 16.0),
    seed=7,
)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_run_and_other_seed_other_run(strategy: str) -> None:
    scenario = SMALL.replace(strategy=strategy, straggler_fraction=0.1, churn_fraction=0.1)
    first = simulate(scenario)
    assert first == simulate(scenario)
    other = simulate(scenario.replace(seed=8))
    assert other.completion_times_s != first.completion_times_s


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", [1, 2])
def test_no_run_beats_the_lower_bound(strategy: str, seed: int) -> None:
    scenario = SMALL.replace(strategy=strategy, seed=seed, seed_peers=seed - 1)
    result = simulate(scenario)
    assert result.nodes_completed == result.nodes
    assert result.makespan_s >= result.lower_bound_s
    assert result.registry_bytes >= scenario.image_bytes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    strategy=st.sampled_from(STRATEGIES),
    nodes=st.integers(1, 24),
    hosts_per_rack=st.integers(1, 12),
    nic_gbps=st.sampled_from([1.0, 10.0, 25.0]),
    registry_gbps=st.sampled_from([1.0, 10.0, 40.0]),
    layers=st.lists(st.sampled_from([0.5, 2.0, 8.0, 24.0]), min_size=1, max_size=3),
    mixed=st.booleans(),
    stragglers=st.sampled_from([0.0, 0.2]),
    churn=st.sampled_from([0.0, 0.2]),
    spread_s=st.sampled_from([0.0, 2.0]),
    seed=st.integers(0, 1000),
)
def test_no_run_of_any_shape_beats_the_lower_bound(
    strategy: str,
    nodes: int,
    hosts_per_rack: int,
    nic_gbps: float,
    registry_gbps: float,
    layers: list[float],
    mixed: bool,
    stragglers: float,
    churn: float,
    spread_s: float,
    seed: int,
) -> None:
    scenario = Scenario(
        nodes=nodes,
        strategy=strategy,
        hosts_per_rack=hosts_per_rack,
        host_upload_bps=nic_gbps * GBPS,
        host_download_bps=nic_gbps * GBPS,
        registry_egress_bps=registry_gbps * GBPS,
        layers_mib=tuple(layers),
        nic_mix_gbps=((1.0, 1.0), (10.0, 2.0)) if mixed else (),
        straggler_fraction=stragglers,
        churn_fraction=churn,
        arrival_spread_s=spread_s,
        seed=seed,
    )
    result = simulate(scenario)
    assert result.complete
    if result.nodes_completed:
        assert result.makespan_s >= result.lower_bound_s * (1 - 1e-9)
        assert result.registry_bytes >= scenario.image_bytes


def test_staggered_arrival_respects_its_bound() -> None:
    result = simulate(SMALL.replace(arrival_spread_s=3.0))
    assert result.nodes_completed == result.nodes
    assert result.makespan_s >= result.lower_bound_s > 3.0 * 0.5


@pytest.mark.parametrize("strategy", ["rule", "direct"])
@pytest.mark.parametrize(
    ("registry_bps", "download_bps"), [(1 * GBPS, 10 * GBPS), (10 * GBPS, 2 * GBPS)]
)
def test_one_node_takes_image_over_the_narrower_of_registry_and_nic(
    strategy: str, registry_bps: float, download_bps: float
) -> None:
    scenario = Scenario(
        nodes=1,
        strategy=strategy,
        registry_egress_bps=registry_bps,
        host_download_bps=download_bps,
        schedule_latency_s=0.0,
        request_latency_s=0.0,
        layers_mib=(100.0, 28.0),
    )
    result = simulate(scenario)
    expected = scenario.image_bytes / min(registry_bps, download_bps)
    assert result.makespan_s == pytest.approx(expected, rel=1e-9)
    assert result.makespan_s == pytest.approx(result.lower_bound_s, rel=1e-9)
    assert result.registry_bytes == scenario.image_bytes


def test_a_star_of_direct_pulls_shares_the_registry_evenly() -> None:
    # Four nodes stream one layer each from a 1 Gbps registry, one piece after the
    # other with no latency: the registry always carries four flows at a quarter each,
    # so all four end together at 4 F / u_s.
    scenario = Scenario(
        nodes=4,
        strategy="direct",
        registry_egress_bps=1 * GBPS,
        layers_mib=(8.0,),
        schedule_latency_s=0.0,
        request_latency_s=0.0,
    )
    result = simulate(scenario)
    expected = 4 * scenario.image_bytes / (1 * GBPS)
    assert result.makespan_s == pytest.approx(expected, rel=1e-9)
    assert result.completion_p50_s == pytest.approx(expected, rel=1e-9)


def test_a_chain_of_two_sends_the_image_through_the_registry_once() -> None:
    # One registry at 1 Gbps, two nodes with fast NICs: the first goes to the registry,
    # the second takes every piece from it as it arrives (it waits for the first piece:
    # one retry of at most 0.6 s). The makespan is F / u_s plus that pipeline delay.
    scenario = Scenario(
        nodes=2,
        registry_egress_bps=1 * GBPS,
        layers_mib=(64.0,),
        schedule_latency_s=0.0,
        request_latency_s=0.0,
    )
    result = simulate(scenario)
    transfer_s = scenario.image_bytes / (1 * GBPS)
    assert result.registry_bytes == scenario.image_bytes
    assert result.p2p_bytes == scenario.image_bytes
    assert transfer_s <= result.makespan_s <= transfer_s + 0.6 + 4 * MiB / (10 * GBPS)


def test_direct_pull_is_limited_by_the_registry() -> None:
    scenario = SMALL.replace(strategy="direct")
    result = simulate(scenario)
    assert result.registry_bytes == scenario.nodes * scenario.image_bytes
    assert result.p2p_bytes == 0
    floor = scenario.nodes * scenario.image_bytes / scenario.registry_egress_bps
    assert floor <= result.makespan_s <= floor * 1.1


@pytest.mark.parametrize("strategy", ["rule", "random", "kraken", "oracle"])
def test_p2p_sends_the_image_through_the_registry_about_once(strategy: str) -> None:
    result = simulate(SMALL.replace(strategy=strategy))
    assert result.registry_bytes == SMALL.image_bytes
    assert result.p2p_bytes == (SMALL.nodes - 1) * SMALL.image_bytes


def _means(scenario: Scenario, sharing: str, seeds: int) -> tuple[float, float]:
    """Mean makespan and mean node completion time over seeds 0..seeds-1."""
    runs = [simulate(scenario.replace(seed=seed, sharing=sharing)) for seed in range(seeds)]
    makespan = sum(run.makespan_s for run in runs) / seeds
    completion = sum(sum(r.completion_times_s) / len(r.completion_times_s) for r in runs) / seeds
    return makespan, completion


def _sharing_scenario(strategy: str, nodes: int, nic_gbps: float) -> Scenario:
    return SMALL.replace(
        strategy=strategy,
        nodes=nodes,
        hosts_per_rack=10 if nodes <= 30 else 40,
        host_upload_bps=nic_gbps * GBPS,
        host_download_bps=nic_gbps * GBPS,
    )


@pytest.mark.parametrize(
    ("strategy", "nodes", "nic_gbps", "seeds"),
    [
        ("rule", 30, 1.0, 8),
        ("random", 30, 1.0, 16),
        ("rule", 100, 1.0, 6),
        ("direct", 100, 1.0, 1),
        ("direct", 30, 10.0, 1),
        ("rule", 30, 10.0, 24),
        ("random", 30, 10.0, 24),
        ("kraken", 30, 10.0, 24),
        ("rule", 200, 10.0, 12),
    ],
)
def test_fast_sharing_is_within_five_percent_of_exact_max_min(
    strategy: str, nodes: int, nic_gbps: float, seeds: int
) -> None:
    """Issue 4's bound: fast against exact within 5%, mean makespan and mean completion.

    With 1 Gbps NICs a pull is mostly transfer, and a few seeds agree closely, but for
    rack stripes: with them single 100-node runs differ by up to 9% either way (over 8
    seeds the means agree within 0.1%), so that case takes 6 seeds; and with rack claims
    the 30-node means differ by 5.7% over 4 seeds, 3.3% over 8 and 2.8% over 12, so that
    case takes 8; with rack holders the random strategy's differ by 5.2% over 4 seeds,
    3.5% over 8 and 4.3% over 16, so that case takes 16. With
    10 Gbps NICs a 64 MiB pull takes 1-2 s and is mostly protocol (piece lists re-read
    every 0.25 s, a busy parent left alone for 0.25 s, top-ups every 1 s): when the
    sharing moves one transfer's end a little, a node can miss a round and finish later,
    or catch one and finish earlier. Most seeds then agree within 1%, and one in four to
    six differs by 5-26%, either way. That is noise, not bias, so these cases take many
    seeds: over these 12-24 seeds the means differed by -1.3% to +2.2% (makespan) and
    -2.3% to +1.1% (completion), measured on two versions of the simulator. The bottleneck
    rule's own bias is small under that noise: at sampled instants it delivers 94-96% of
    max-min's throughput, and a water-filling fast rule that delivers all of it (tried,
    see simulations/network.py) moved these means by about 1%. The registry's egress
    does fill (see the next test)."""
    scenario = _sharing_scenario(strategy, nodes, nic_gbps)
    fast_makespan, fast_completion = _means(scenario, "fast", seeds)
    exact_makespan, exact_completion = _means(scenario, "exact", seeds)
    assert fast_makespan == pytest.approx(exact_makespan, rel=0.05)
    assert fast_completion == pytest.approx(exact_completion, rel=0.05)


def test_fast_sharing_fills_the_registry_when_registry_and_racks_are_balanced() -> None:
    """Thirty direct pulls from a 10 Gbps registry through three racks whose downlinks
    add up to 10 Gbps: when racks hold different numbers of transfers, the bottleneck
    rule alone holds flows of the crowded rack at the rack's share and the others at the
    registry's, so the registry and the emptier racks idle a little (7.7% over exact on
    this case, the same for every seed: a bias, not noise). The registry's egress is a
    filling link, which gives the emptier racks what the crowded one leaves."""
    scenario = SMALL.replace(strategy="direct", host_upload_bps=GBPS, host_download_bps=GBPS)
    fast, _ = _means(scenario, "fast", 1)
    exact, _ = _means(scenario, "exact", 1)
    assert fast == pytest.approx(exact, rel=0.05)


def test_lower_bound_formula() -> None:
    # max(F/u_s, F/d_min, N F / (u_s + sum u)) = max(10, 5, 3 x 100 / (10 + 3 x 10)).
    assert lower_bound_s(100, 10.0, [20.0, 40.0, 40.0], [10.0] * 3) == pytest.approx(10.0)
    assert lower_bound_s(100, 100.0, [20.0], [1.0]) == pytest.approx(5.0)
    assert lower_bound_s(100, 10.0, [1e9] * 10, [1.0] * 10) == pytest.approx(50.0)


def test_simulator_imports_the_scheduler_core_and_defines_no_scheduler() -> None:
    imported: set[str] = set()
    defined: set[str] = set()
    for path in SIMULATIONS.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.ClassDef | ast.FunctionDef):
                defined.add(node.name)
    assert "scheduler.core" in imported
    assert "peer.piece_picker" in imported
    # The decision and picking code comes from there, never from a copy here.
    assert not defined & {
        "SchedulerState",
        "decide",
        "best_parents",
        "pick_pieces",
        "pick_pieces_masked",
    }
    from simulations import sim_picking, swarm

    assert swarm.SchedulerState.__module__ == "scheduler.core.state"
    assert sim_picking.pick_pieces_masked.__module__ == "peer.piece_picker"


def test_scenario_files_load_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    names = set()
    for path in sorted((SIMULATIONS / "scenarios").glob("*.yaml")):
        names.add(load_scenario(path).name)
        assert load_scenario(path).name == path.stem
    assert {"homogeneous", "heterogeneous", "oversubscribed", "churn", "staggered", "10k"} <= names
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: 10\nnodez: 3\n")
    with pytest.raises(ScenarioError, match="nodez"):
        load_scenario(bad)


def test_simulate_turns_the_cyclic_collector_back_on() -> None:
    assert gc.isenabled()
    simulate(SMALL.replace(nodes=3))
    assert gc.isenabled()


def _thin_uplink_racks(seed: int, **changes: Any) -> Scenario:
    """Three racks of 12 behind 12:1 uplinks, 1 Gbps everywhere, one 64 MiB layer."""
    return Scenario(
        name="racks",
        nodes=36,
        hosts_per_rack=12,
        oversubscription=12.0,
        layers_mib=(64.0,),
        host_upload_bps=GBPS,
        host_download_bps=GBPS,
        registry_egress_bps=GBPS,
        seed=seed,
    ).replace(**changes)


def test_rack_stripes_cut_the_bytes_crossing_rack_uplinks() -> None:
    # Each rack's peers bring in their own share of the pieces and trade the rest
    # inside the rack.
    on = off = 0
    for seed in (1, 3, 5):
        base = _thin_uplink_racks(seed)
        striped, unstriped = simulate(base), simulate(base.replace(rack_stripes=0))
        assert striped.complete and unstriped.complete
        on += striped.cross_rack_bytes
        off += unstriped.cross_rack_bytes
    assert on < 0.85 * off, (on / MiB, off / MiB)


def _with_and_without(off: dict[str, Any], **changes: Any) -> tuple[float, float, int, int]:
    """Summed makespans and bytes across racks of ``_thin_uplink_racks`` (seeds 1, 3, 5)
    with ``changes``, then with ``off`` on top: (on, off, crossed on, crossed off)."""
    on_s = off_s = 0.0
    crossed = uncrossed = 0
    for seed in (1, 3, 5):
        base = _thin_uplink_racks(seed, **changes)
        with_it, without = simulate(base), simulate(base.replace(**off))
        assert with_it.complete and without.complete
        on_s += with_it.makespan_s
        off_s += without.makespan_s
        crossed += with_it.cross_rack_bytes
        uncrossed += without.cross_rack_bytes
    return on_s, off_s, crossed, uncrossed


def test_rack_claims_speed_up_racks_behind_thin_uplinks() -> None:
    # The same racks with a seed, stripes off: claims alone keep rack-mates from
    # fetching the same piece from other racks at the same time.
    on, off, crossed, uncrossed = _with_and_without(
        {"rack_claim_lease_s": 0}, seed_peers=1, rack_stripes=0
    )
    assert on < 0.85 * off, (on, off)
    assert crossed < uncrossed, (crossed / MiB, uncrossed / MiB)


def test_origin_shares_feed_each_rack_from_the_origin_and_fetch_each_piece_once() -> None:
    # The same racks with a seed: the seed and one peer per rack split the origin fetch,
    # so the origin's egress reaches every rack directly instead of through the seed.
    # More bytes cross racks (the seed fetches the others' shares from them), but the
    # racks no longer wait on the seed's uplink. (Off by default: see SchedulerSettings.)
    shares = {"seed_peers": 1, "origin_sharers_per_rack": 1}
    on, off, _, _ = _with_and_without({"origin_sharers_per_rack": 0}, **shares)
    assert on < 0.9 * off, (on, off)
    for seed in (1, 3, 5):
        result = simulate(_thin_uplink_racks(seed, **shares))
        assert result.registry_images == pytest.approx(1.0), seed
        assert result.decisions["back_to_source:origin_share"] == 3, seed


def test_a_held_claim_keeps_a_piece_that_just_arrived_inside_its_rack() -> None:
    # The same racks with a seed: a released claim kept twice as long as its import
    # took leaves the piece to the rack-mate that brought it in, instead of letting the
    # next rack-mate bring it across the uplink again.
    _, _, crossed, uncrossed = _with_and_without(
        {"rack_claim_hold_factor": 0.0}, seed_peers=1, rack_claim_hold_factor=2.0
    )
    assert crossed < uncrossed, (crossed / MiB, uncrossed / MiB)


def test_pieces_a_rack_holds_cross_its_uplink_once() -> None:
    # The same racks with a seed: a piece a rack-mate holds is fetched from it (the
    # scheduler links it as a parent) instead of from another rack again.
    on, off, crossed, uncrossed = _with_and_without({"rack_holders_per_claim": 0}, seed_peers=1)
    assert crossed < 0.6 * uncrossed, (crossed / MiB, uncrossed / MiB)
    assert on < 0.95 * off, (on, off)
