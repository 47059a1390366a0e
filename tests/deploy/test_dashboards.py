"""The shipped Grafana dashboards are well-formed and cover every metric the code exports.

Whether each panel's query returns data is checked against a live cluster in
test_dashboards_live.py; this checks what needs no cluster.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from peer.metrics import PeerMetrics
from scheduler.service.config import SchedulerConfig
from scheduler.service.metrics import SchedulerMetrics
from scheduler.service.models import ModelMetrics
from scheduler.service.records import RecordMetrics
from scheduler.service.replicas import ReplicaDirectory
from scheduler.service.retraining import RetrainMetrics
from scheduler.service.writer import Counts
from tests.support.dashboards import DASHBOARDS, all_queries, load, panels

GRAFANA = DASHBOARDS.parent
RULES = GRAFANA.parent / "prometheus" / "rules" / "starling.rules.yml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Series names Prometheus derives from a family: counters get _total (and _created),
# histograms _bucket, _count and _sum.
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _families(registry: CollectorRegistry) -> dict[str, str]:
    return {family.name: family.type for family in registry.collect()}


def _model_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    ModelMetrics(registry)
    RecordMetrics(registry)
    RetrainMetrics(registry)
    return registry


def _replica_registry() -> CollectorRegistry:
    """The replica gauges, as a scheduler with Redis configured has them (no connection
    is made)."""
    registry = CollectorRegistry()
    ReplicaDirectory(SchedulerConfig(redis_url="redis://redis:6379/0"), registry)
    return registry


def exported_series() -> dict[str, str]:
    """Every series name the peer and the scheduler export -> its family."""
    families = {
        **_families(PeerMetrics().registry),
        **_families(SchedulerMetrics(lambda: Counts()).registry),
        **_families(_model_registry()),
        **_families(_replica_registry()),
    }
    return {name + suffix: name for name, kind in families.items() for suffix in _SUFFIXES[kind]}


def dashboard_paths() -> list[Path]:
    paths = sorted(DASHBOARDS.glob("*.json"))
    assert {p.stem for p in paths} == {
        "starling-overview",
        "starling-peer",
        "starling-scheduler",
    }
    return paths


@pytest.mark.parametrize("path", dashboard_paths(), ids=lambda p: p.stem)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["uid"] == path.stem
    assert dashboard["title"].startswith("Starling / ")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_queries_name_only_metrics_that_exist_and_every_metric_is_shown() -> None:
    exported = exported_series()
    shown: set[str] = set()
    for path in dashboard_paths():
        for panel in panels(load(path)):
            for target in panel["targets"]:
                for name in re.findall(r"\b(p2p_\w+)", target["expr"]):
                    assert name in exported, f"{path.stem} / {panel['title']}: no metric {name}"
                    shown.add(exported[name])
    # Every family on some dashboard, or at least in an alert or recording rule.
    rules_text = RULES.read_text()
    unshown = {
        family
        for family in set(exported.values()) - shown
        if not re.search(rf"\b{family}", rules_text)
    }
    assert not unshown, f"metrics on no dashboard and in no rule: {sorted(unshown)}"


def test_every_query_uses_known_variables_only() -> None:
    assert len(all_queries()) >= 30  # substitute() raises on an unknown variable


def test_provisioning_points_at_the_dashboards() -> None:
    provisioning = GRAFANA / "provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "starling.yml").read_text())
    (only,) = provider["providers"]
    assert only["type"] == "file" and only["options"]["path"].endswith("/starling")
    sources = yaml.safe_load((provisioning / "datasources" / "starling-prometheus.yml").read_text())
    assert [s["type"] for s in sources["datasources"]] == ["prometheus"]
