"""The flow-level network model on its own: analytical rates, fast vs exact sharing."""

from __future__ import annotations

import pytest

from simulations.clock import EventQueue
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


def test_links_never_carry_more_than_their_capacity() -> None:
    queue = EventQueue()
    network = Network(queue, "fast", rise_tolerance=0.05)
    links = [network.link(f"l{i}", 1.0 + i) for i in range(6)]
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
