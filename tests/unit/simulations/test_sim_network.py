"""The flow-level network model on its own: analytical rates, fast vs exact sharing."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from simulations.clock import EventQueue
from simulations.maxmin import max_min_rates
from simulations.network import Flow, Link, Network


def _run(network: Network, starts: list[tuple[float, tuple[Link, ...], int]]) -> list[float]:
    """Start flows at the given times; returns each flow's finish time, in start order."""
    done: dict[int, float] = {}
    order: list[int] = []

    def launch(now: float, spec: tuple[tuple[Link, ...], int]) -> None:
        links, size = spec
        flow = network.start(links, size, now, lambda f, t: done.__setitem__(f.flow_id, t))
        order.append(flow.flow_id)

    for at, links, size in starts:
        network.queue.at(at, launch, (links, size))
    network.queue.run()
    return [done[flow_id] for flow_id in order]


@pytest.mark.parametrize("sharing", ["fast", "exact"])
def test_one_flow_runs_at_its_narrowest_link(sharing: str) -> None:
    network = Network(EventQueue(), sharing)
    wide, narrow = network.link("wide", 100.0), network.link("narrow", 25.0)
    assert _run(network, [(0.0, (wide, narrow), 1000)]) == [pytest.approx(40.0)]


@pytest.mark.parametrize("sharing", ["fast", "exact"])
def test_flows_on_one_link_share_it_and_the_survivor_speeds_up(sharing: str) -> None:
    network = Network(EventQueue(), sharing)
    link = network.link("l", 10.0)
    # Both at 5 B/s until the small one ends at t=10 (50 B); the big one then has 50 B
    # left at 10 B/s: t=15.
    assert _run(network, [(0.0, (link,), 50), (0.0, (link,), 100)]) == [
        pytest.approx(10.0),
        pytest.approx(15.0),
    ]


def test_exact_sharing_gives_unused_capacity_to_others_and_fast_does_not() -> None:
    # Flow a crosses x (cap 10) and y (cap 2); flow b only x. Max-min: a=2, b=8.
    # The bottleneck rule: a = min(10/2, 2) = 2, b = 10/2 = 5 (3 B/s of x idle).
    for sharing, b_rate in (("exact", 8.0), ("fast", 5.0)):
        network = Network(EventQueue(), sharing)
        x, y = network.link("x", 10.0), network.link("y", 2.0)
        finish = _run(network, [(0.0, (x, y), 20), (0.0, (x,), 40)])
        assert finish[0] == pytest.approx(10.0)
        assert finish[1] == pytest.approx(40 / b_rate)


@pytest.mark.parametrize("filling", [False, True])
def test_links_never_carry_more_than_their_capacity(filling: bool) -> None:
    queue = EventQueue()
    network = Network(queue, "fast", rise_tolerance=0.05)
    links = [network.link(f"l{i}", 1.0 + i, fills=filling and i == 0) for i in range(6)]
    worst = 0.0

    def check(now: float, _: object) -> None:
        nonlocal worst
        for link in links:
            load = sum(flow.rate_bps for flow in link.flows.values())
            worst = max(worst, load / link.capacity_bps)
        if now < 30.0:
            queue.at(now + 0.05, check)

    starts = [
        (0.01 * i, (links[i % 6], links[(i * 7 + 1) % 6]), 3 + i % 5)
        for i in range(60)
        if i % 6 != (i * 7 + 1) % 6
    ]
    queue.at(0.0, check)
    _run(network, starts)
    assert 0 < worst <= 1.0 + 1e-9


def test_zero_byte_flow_finishes_at_once() -> None:
    network = Network(EventQueue())
    seen: list[Flow] = []
    network.start((network.link("l", 1.0),), 0, 0.0, lambda f, t: seen.append(f))
    network.queue.run()
    assert len(seen) == 1 and seen[0].done


# -- the incremental network against a from-scratch reference ----------------------------


def _reference_rates(
    capacities: list[float],
    paths: dict[int, tuple[int, ...]],
    sharing: str,
    fill: int | None = None,
) -> dict[int, float]:
    """The rate of each flow, computed from nothing but the current paths.

    ``fill``: with the fast rule, the filling link: a water level over the rates the
    flows' other links allow (max-min on that one link, the others held fixed)."""
    count = [0] * len(capacities)
    for path in paths.values():
        for link in path:
            count[link] += 1
    if sharing == "fast":
        elsewhere = {
            i: min((capacities[k] / count[k] for k in path if k != fill), default=math.inf)
            for i, path in paths.items()
        }
        crossing = sorted((elsewhere[i], i) for i, path in paths.items() if fill in path)
        if not crossing:
            return elsewhere
        assert fill is not None
        left, unfrozen = capacities[fill], len(crossing)
        for other, _ in crossing:
            if other * unfrozen >= left:
                break
            left -= other
            unfrozen -= 1
        level = left / unfrozen if unfrozen else math.inf
        return {i: min(rate, level) if fill in paths[i] else rate for i, rate in elsewhere.items()}
    # Progressive filling, the slow obvious way: raise every unfrozen flow to the level
    # of the first link to fill, freeze that link's flows, repeat.
    left = list(capacities)
    rates: dict[int, float] = {}
    while len(rates) < len(paths):
        unfrozen = [0] * len(capacities)
        for i, path in paths.items():
            if i not in rates:
                for link in path:
                    unfrozen[link] += 1
        level, full = min((left[k] / unfrozen[k], k) for k in range(len(left)) if unfrozen[k])
        for i, path in paths.items():
            if i not in rates and full in path:
                rates[i] = level
                for link in path:
                    left[link] -= level
    return rates


def _reference(
    capacities: list[float],
    starts: list[tuple[float, tuple[int, ...], int]],
    sharing: str,
    fill: int | None = None,
) -> list[float]:
    """Finish times with every rate recomputed from scratch at every start and finish."""
    waiting = sorted(range(len(starts)), key=lambda i: (starts[i][0], i))
    remaining: dict[int, float] = {}
    finish: dict[int, float] = {}
    now = 0.0
    while waiting or remaining:
        paths = {i: starts[i][1] for i in remaining}
        rates = _reference_rates(capacities, paths, sharing, fill)
        next_start = starts[waiting[0]][0] if waiting else math.inf
        next_finish = min(
            (now + left / rates[i] for i, left in remaining.items()), default=math.inf
        )
        later = min(next_start, next_finish)
        for i in remaining:
            remaining[i] -= rates[i] * (later - now)
        now = later
        for i in [i for i, left in remaining.items() if left <= 1e-9 * starts[i][2]]:
            del remaining[i]
            finish[i] = now
        while waiting and starts[waiting[0]][0] <= now:
            i = waiting.pop(0)
            remaining[i] = float(starts[i][2])
    return [finish[i] for i in range(len(starts))]


def _random_case(seed: int) -> tuple[list[float], list[tuple[float, tuple[int, ...], int]]]:
    rng = random.Random(seed)
    capacities = [rng.choice([1.0, 2.0, 5.0, 10.0]) * rng.uniform(0.8, 1.2) for _ in range(6)]
    starts = []
    for _ in range(rng.randint(5, 40)):
        path = tuple(rng.sample(range(len(capacities)), rng.randint(1, 4)))
        starts.append((round(rng.uniform(0.0, 20.0), 1), path, rng.randint(1, 60)))
    # In time order, so _run's launch order is the list order; ties keep both orders.
    starts.sort(key=lambda start: start[0])
    return capacities, starts


@pytest.mark.parametrize("sharing", ["fast", "exact"])
@pytest.mark.parametrize("seed", range(25))
def test_incremental_network_matches_rates_recomputed_from_scratch(sharing: str, seed: int) -> None:
    """The fast rule's virtual clocks and moves (and the exact mode's lanes and batched
    refills) give the finish times of recomputing every rate at every event."""
    capacities, starts = _random_case(seed)
    network = Network(EventQueue(), sharing, rise_tolerance=0.0)
    links = [network.link(f"l{k}", cap) for k, cap in enumerate(capacities)]
    got = _run(network, [(at, tuple(links[k] for k in path), size) for at, path, size in starts])
    assert got == pytest.approx(_reference(capacities, starts, sharing), rel=1e-7, abs=1e-9)
    assert not network.active


@pytest.mark.parametrize("seed", range(40))
def test_a_filling_link_matches_its_water_level_recomputed_from_scratch(seed: int) -> None:
    """With one filling link (the registry's egress), every finish time is that of
    recomputing at every event the other links' fair shares and the filling link's
    water level over them."""
    capacities, starts = _random_case(seed)
    network = Network(EventQueue(), "fast", rise_tolerance=0.0)
    links = [network.link(f"l{k}", cap, fills=k == 0) for k, cap in enumerate(capacities)]
    got = _run(network, [(at, tuple(links[k] for k in path), size) for at, path, size in starts])
    want = _reference(capacities, starts, "fast", fill=0)
    assert got == pytest.approx(want, rel=1e-7, abs=1e-9)
    assert not network.active


def test_a_filling_link_gives_what_a_slower_link_leaves_to_its_other_flows() -> None:
    # x fills (cap 10); a crosses x and y (cap 2), b and c only x. a = 2 (y); b and c
    # share the 8 a leaves: 4 each, where the bottleneck rule gives them 10/3. After a
    # ends (t=10), b and c get 5 each.
    network = Network(EventQueue(), "fast")
    x, y = network.link("x", 10.0, fills=True), network.link("y", 2.0)
    finish = _run(network, [(0.0, (x, y), 20), (0.0, (x,), 40), (0.0, (x,), 60)])
    assert finish == [pytest.approx(10.0), pytest.approx(10.0), pytest.approx(12.0)]


def test_a_network_has_at_most_one_filling_link() -> None:
    network = Network(EventQueue(), "fast")
    network.link("registry", 10.0, fills=True)
    with pytest.raises(ValueError, match="already has a filling link"):
        network.link("another", 10.0, fills=True)
    exact = Network(EventQueue(), "exact")
    assert not exact.link("a", 1.0, fills=True).fills
    assert not exact.link("b", 1.0, fills=True).fills


def test_fast_rule_moves_a_flow_to_its_new_bottleneck_and_back() -> None:
    # a crosses x (cap 10) and y (cap 4); b joins y at t=1 and leaves at t=3.
    # t<1: a = min(10, 4) = 4 (bound at y). 1<=t<3: y has 2 flows: a = b = 2.
    # b: 4 B at 2 B/s from t=1 ends at t=3. Then a is alone again at 4 B/s.
    # a: 4 B by t=1, 4 B more by t=3, 12 B left at 4 B/s: t=6.
    network = Network(EventQueue(), "fast")
    x, y = network.link("x", 10.0), network.link("y", 4.0)
    assert _run(network, [(0.0, (x, y), 20), (1.0, (y,), 4)]) == [
        pytest.approx(6.0),
        pytest.approx(3.0),
    ]


def test_a_cancelled_flow_frees_its_share_and_never_calls_back() -> None:
    queue = EventQueue()
    network = Network(queue, "fast")
    link = network.link("l", 10.0)
    done: list[float] = []
    keep = network.start((link,), 100, 0.0, lambda f, t: done.append(t))
    drop = network.start((link,), 100, 0.0, lambda f, t: done.append(-t))
    moved: list[float] = []
    queue.at(4.0, lambda now, _: moved.append(network.cancel(drop, now)))
    queue.run()
    # Both at 5 B/s for 4 s (20 B each); then keep runs alone: 80 B at 10 B/s.
    assert moved == [pytest.approx(20.0)]
    assert done == [pytest.approx(12.0)]
    assert keep.done and drop.done and not network.active


def test_failed_links_fail_their_flows_now_and_later() -> None:
    queue = EventQueue()
    network = Network(queue, "fast")
    up, other = network.link("up", 10.0), network.link("other", 10.0)
    ended: list[tuple[str, float, bool]] = []

    def record(name: str) -> Callable[[Flow, float], None]:
        return lambda flow, t: ended.append((name, t, flow.failed))

    network.start((up,), 100, 0.0, record("crossing"))
    network.start((other,), 50, 0.0, record("elsewhere"))
    queue.at(2.0, lambda now, _: network.fail_links((up,), now))
    queue.at(3.0, lambda now, _: network.start((other, up), 10, now, record("later")))
    queue.run()
    assert ended == [
        ("crossing", pytest.approx(2.0), True),
        ("later", pytest.approx(3.0), True),
        ("elsewhere", pytest.approx(5.0), False),
    ]
    assert network.bytes_done == 50


def test_max_min_rates_of_a_known_case() -> None:
    # Three flows: f1 over x, f2 over x and y, f3 over y; x = 10, y = 4.
    # y fills first at 2 each (f2, f3 frozen at 2); f1 takes the rest of x: 8.
    network = Network(EventQueue(), "exact")
    x, y = network.link("x", 10.0), network.link("y", 4.0)
    finish = _run(network, [(0.0, (x,), 80), (0.0, (x, y), 20), (0.0, (y,), 20)])
    assert finish == [pytest.approx(10.0), pytest.approx(10.0), pytest.approx(10.0)]
    assert max_min_rates([]) == {}


@pytest.mark.parametrize("seed", range(10))
def test_max_min_rates_match_progressive_filling_even_with_ties(seed: int) -> None:
    # Capacities of 1 and 2 and paths of one to three links make equal levels common;
    # whichever link of a tie fills first, the rates are the slow obvious way's.
    rng = random.Random(seed)
    capacities = [float(rng.choice([1, 2])) for _ in range(8)]
    links = [Link(f"l{k}", capacity) for k, capacity in enumerate(capacities)]
    paths: dict[int, tuple[int, ...]] = {}
    for flow_id in range(rng.randint(5, 40)):
        path = tuple(rng.sample(range(len(links)), rng.randint(1, 3)))
        paths[flow_id] = path
        flow = Flow(flow_id, tuple(links[k] for k in path), 1, 0.0, lambda f, t: None)
        for k in path:
            links[k].flows[flow_id] = flow
    got = max_min_rates([link for link in links if link.flows])
    assert got == pytest.approx(_reference_rates(capacities, paths, "exact"), rel=1e-12)


# -- analytical cases: a chain and a tree with known makespans -----------------------------


def test_a_pipelined_chain_takes_pieces_plus_hops_minus_one_piece_times() -> None:
    """Node 0 holds k pieces; each node forwards each piece to the next as soon as it has
    it and its previous send is done. With one flow per link at a time, every hop of a
    piece takes P / C, and the last of n hops ends at (k + n - 1) P / C."""
    pieces, hops, piece_bytes, nic_bps = 5, 4, 100, 10.0
    queue = EventQueue()
    network = Network(queue, "fast")
    ups = [network.link(f"n{i}/up", nic_bps) for i in range(hops + 1)]
    downs = [network.link(f"n{i}/down", nic_bps) for i in range(hops + 1)]
    have = [pieces] + [0] * hops  # pieces held, always a prefix
    sent = [0] * (hops + 1)  # pieces node i has sent on
    busy = [False] * (hops + 1)
    finished: list[float] = []

    def pump(node: int, now: float) -> None:
        if node < hops and not busy[node] and sent[node] < have[node]:
            busy[node] = True
            network.start((ups[node], downs[node + 1]), piece_bytes, now, arrived(node))

    def arrived(node: int) -> Callable[[Flow, float], None]:
        def done(flow: Flow, now: float) -> None:
            busy[node] = False
            sent[node] += 1
            have[node + 1] += 1
            if node + 1 == hops and have[hops] == pieces:
                finished.append(now)
            pump(node, now)
            pump(node + 1, now)

        return done

    queue.at(0.0, lambda now, _: pump(0, now))
    queue.run()
    assert finished == [pytest.approx((pieces + hops - 1) * piece_bytes / nic_bps)]


@pytest.mark.parametrize("sharing", ["fast", "exact"])
def test_a_binary_tree_takes_two_piece_times_per_level(sharing: str) -> None:
    """Each holder sends the piece to two children at once, so its upload is shared: each
    level takes 2 P / C, and depth d ends at 2 d P / C."""
    depth, piece_bytes, nic_bps = 4, 100, 10.0
    queue = EventQueue()
    network = Network(queue, sharing)
    count = 2 ** (depth + 1) - 1
    ups = [network.link(f"n{i}/up", nic_bps) for i in range(count)]
    downs = [network.link(f"n{i}/down", nic_bps) for i in range(count)]
    got: dict[int, float] = {0: 0.0}

    def send(parent: int, now: float) -> None:
        for child in (2 * parent + 1, 2 * parent + 2):
            if child < count:
                network.start((ups[parent], downs[child]), piece_bytes, now, received(child))

    def received(child: int) -> Callable[[Flow, float], None]:
        def done(flow: Flow, now: float) -> None:
            got[child] = now
            send(child, now)

        return done

    queue.at(0.0, lambda now, _: send(0, now))
    queue.run()
    assert len(got) == count
    assert max(got.values()) == pytest.approx(2 * depth * piece_bytes / nic_bps)
