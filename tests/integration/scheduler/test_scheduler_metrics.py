"""After real traffic, /metrics has decisions, filter reasons, events and the gauges."""

from __future__ import annotations

import re

import pytest

from tests.integration.scheduler.conftest import PIECES, SchedulerClient, drive_traffic

pytestmark = pytest.mark.timeout(60)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text; 0 when absent."""
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    selector = f"{name}{{{label_text}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(selector + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_after_traffic(traffic_scheduler: SchedulerClient) -> None:
    await drive_traffic(traffic_scheduler)
    text = await traffic_scheduler.metrics()
    names = set(re.findall(r"^(p2p_\w+?)(?:\{| )", text, re.MULTILINE))
    assert all(name.startswith("p2p_scheduler_") for name in names), names
    # Decisions by action: the seed and p1 (first of its rack) went to the origin, each
    # for a share of the pieces, then peers got parents...
    assert sample(text, "p2p_scheduler_decisions_total", action="back_to_source") == 2
    assert sample(text, "p2p_scheduler_decisions_total", action="retry_later") >= 1
    assert sample(text, "p2p_scheduler_decisions_total", action="parents") >= 3
    assert sample(text, "p2p_scheduler_back_to_source_decisions_total", reason="seed_peer") == 1
    assert sample(text, "p2p_scheduler_back_to_source_decisions_total", reason="origin_share") == 1
    # ...the seed took six pieces and p1 the other two, then none (and a bad take: 400).
    assert sample(text, "p2p_scheduler_origin_pieces_total") == PIECES
    route = "/api/v1/peers/{peer_id}/origin-pieces"
    assert sample(text, "p2p_scheduler_bad_requests_total", route=route, status="400") == 1
    decisions = sum(
        sample(text, "p2p_scheduler_decisions_total", action=a)
        for a in ("parents", "back_to_source", "retry_later")
    )
    assert sample(text, "p2p_scheduler_decision_latency_seconds_count") == decisions
    # ...and candidates were turned down for the reasons the core gave.
    assert sample(text, "p2p_scheduler_candidates_filtered_total", reason="blocked") >= 1
    assert sample(text, "p2p_scheduler_candidates_filtered_total", reason="self") >= 1
    for event, count in [
        ("host_announced", 5),
        ("peer_registered", 5),
        ("peer_finished", 1),
        ("peer_failed", 1),
        ("peer_left", 1),
        ("host_left", 1),
        ("parent_reported", 1),
    ]:
        assert sample(text, "p2p_scheduler_events_total", type=event) == count, event
    # p3 claimed pieces 2 and 3 (then an out-of-range one): its rack-mate p4 holds 2.
    for outcome, count in [("granted", 1), ("in_rack", 1), ("denied", 0)]:
        assert sample(text, "p2p_scheduler_import_claims_total", outcome=outcome) == count
    assert sample(text, "p2p_scheduler_piece_reports_total", result="failed") == 1
    assert sample(text, "p2p_scheduler_piece_reports_total", result="ok") == 5
    # The 409 for the contradicting digest, the 404 and the 400.
    assert (
        sample(
            text,
            "p2p_scheduler_bad_requests_total",
            route="/api/v1/peers/{peer_id}/pieces",
            status="409",
        )
        == 1
    )
    assert sample(text, "p2p_scheduler_hosts") == 4
    assert sample(text, "p2p_scheduler_peers") == 2
    assert sample(text, "p2p_scheduler_tasks") == 1
