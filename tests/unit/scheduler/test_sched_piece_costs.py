"""Bad-parent detection: 20x the mean below a full window, mean + 3 sigma with one."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.core import FilterReason, Parents, SchedulerSettings
from scheduler.core.piece_costs import PieceCostWindow
from tests.unit.scheduler.swarm import Swarm


def _window(costs: list[float], window: int = 30, min_ratio: float = 1.5) -> PieceCostWindow:
    costs_window = PieceCostWindow(window, factor=20.0, sigmas=3.0, min_ratio=min_ratio)
    for cost in costs:
        costs_window.add(cost, now=0.0)
    return costs_window


@pytest.mark.parametrize(
    ("earlier", "last", "bad"),
    [
        ([], 1000.0, False),  # nothing to compare with yet
        ([1.0], 20.0, False),  # exactly 20x is not more than 20x
        ([1.0], 20.01, True),
        ([1.0, 3.0], 40.0, False),  # mean 2: the bar is 40
        ([1.0, 3.0], 40.5, True),
        ([1.0] * 27, 5.0, False),  # 28 costs in all: still the 20x rule, though 5x
    ],
)
def test_below_a_full_window_the_bar_is_twenty_times_the_mean(
    earlier: list[float], last: float, bad: bool
) -> None:
    costs = _window(earlier)
    assert costs.add(last, now=0.0) is bad


def _spread(count: int) -> list[float]:
    # Costs alternating 0.8 / 1.2 s: mean 1.0, population stdev 0.2.
    return [0.8 if i % 2 else 1.2 for i in range(count)]


def test_with_a_full_window_the_bar_is_three_sigma() -> None:
    earlier = _spread(29)
    mean = statistics.fmean(earlier)
    bar = mean + 3 * statistics.pstdev(earlier)
    assert bar == pytest.approx(1.6, abs=0.01)
    assert _window(earlier).add(bar - 0.01, now=0.0) is False
    assert _window(earlier).add(bar + 0.01, now=0.0) is True
    # The same cost is far under the 20x bar, which a shorter history would apply.
    assert _window(earlier[:20]).add(bar + 0.01, now=0.0) is False


def test_near_constant_costs_need_the_minimum_ratio_too() -> None:
    earlier = [1.0] * 29  # stdev 0: three sigma alone would flag 1.01 s
    assert _window(earlier).add(1.01, now=0.0) is False
    assert _window(earlier).add(1.51, now=0.0) is True
    assert _window(earlier, min_ratio=0.0).add(1.01, now=0.0) is True


def test_the_window_slides_so_a_lasting_slowdown_becomes_normal() -> None:
    costs = _window(_spread(30))
    assert costs.add(4.0, now=0.0) is True
    for _ in range(29):
        costs.add(4.0, now=0.0)
    assert len(costs) == 30
    assert costs.add(4.0, now=0.0) is False


def test_a_good_cost_clears_the_verdict_and_the_verdict_expires() -> None:
    costs = _window([1.0])
    assert costs.add(100.0, now=5.0)
    assert costs.is_bad(now=5.0, ttl_s=10.0)
    assert costs.is_bad(now=14.9, ttl_s=10.0)
    assert not costs.is_bad(now=15.0, ttl_s=10.0)
    costs.add(1.0, now=6.0)
    assert not costs.is_bad(now=6.0, ttl_s=10.0)


def test_an_outlier_report_blocks_the_parent_for_the_reporter_and_flags_it_for_all() -> None:
    swarm = Swarm(SchedulerSettings(bad_parent_ttl_s=30.0))
    swarm.full("x")
    swarm.peer("slow-child")
    swarm.peer("other")
    assert isinstance(swarm.schedule("slow-child"), Parents)
    swarm.report("slow-child", "x", [0], cost_s=1.0)
    swarm.report("slow-child", "x", [1], cost_s=50.0)
    child = swarm.state.peers["slow-child"]
    assert "x" in child.blocked_parent_ids
    assert "x" not in child.parents
    for name, reason in (("slow-child", FilterReason.BLOCKED), ("other", FilterReason.BAD_PARENT)):
        decision = swarm.schedule(name)
        assert ("x", reason) in [(r.peer_id, r.reason) for r in decision.rejected]
    # Once the verdict expires, children that never had trouble with x may use it again.
    swarm.now = 30.0
    decision = swarm.schedule("other")
    assert isinstance(decision, Parents)
    assert "x" in [p.peer_id for p in decision.parents]


def _reference_verdicts(costs: list[float], window: int) -> list[bool]:
    """The rule as the module docstring states it, recomputed from scratch per cost."""
    verdicts = []
    for i, cost in enumerate(costs):
        earlier = costs[max(0, i - window) : i]
        if not earlier:
            verdicts.append(False)
            continue
        mean = math.fsum(earlier) / len(earlier)
        if len(earlier) + 1 < window:
            verdicts.append(cost > 20.0 * mean)
            continue
        variance = math.fsum((c - mean) ** 2 for c in earlier) / len(earlier)
        verdicts.append(cost > max(mean + 3.0 * math.sqrt(variance), 1.5 * mean))
    return verdicts


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(
        st.one_of(st.floats(0.0, 10.0), st.sampled_from([0.0, 1.0, 1.5, 100.0])),
        max_size=80,
    ),
    window=st.integers(2, 12),
)
def test_verdicts_match_the_rule_recomputed_from_scratch(costs: list[float], window: int) -> None:
    costs_window = PieceCostWindow(window, factor=20.0, sigmas=3.0, min_ratio=1.5)
    assert [costs_window.add(c, now=0.0) for c in costs] == _reference_verdicts(costs, window)
