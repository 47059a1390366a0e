"""Reading the shipped Grafana dashboards: their panels and the queries Grafana sends."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
# What Grafana puts in place of its built-in variables; a window of several scrapes at
# the one-second scrape interval of the tests.
BUILTINS = {"$__rate_interval": "10s", "$__interval": "2s", "$__range": "5m"}


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with queries, including those inside collapsed rows."""
    found = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            found += panels(panel) if "panels" in panel else []
        if panel.get("targets"):
            found.append(panel)
    return found


def substitute(expr: str, dashboard: dict[str, Any]) -> str:
    """The query Grafana would send with every template variable at "All"."""
    for name, value in BUILTINS.items():
        expr = expr.replace(name, value)
    for variable in dashboard["templating"]["list"]:
        value = variable.get("allValue") or ".*"
        pattern = r"\$\{" + variable["name"] + r"\}|\$" + variable["name"] + r"\b"
        expr = re.sub(pattern, value, expr)
    if "$" in expr:
        raise ValueError(f"unknown variable in {expr}")
    return expr


def all_queries() -> list[tuple[str, str, str]]:
    """(dashboard title, panel title, expression) of every query of every dashboard."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = load(path)
        for panel in panels(dashboard):
            for target in panel["targets"]:
                expr = substitute(target["expr"], dashboard)
                queries.append((dashboard["title"], panel["title"], expr))
    return queries
