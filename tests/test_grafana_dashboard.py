"""The Grafana dashboard in deploy/ charts metrics the service really exports, and compose's
workers serve them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from app.metrics import Metrics
from tests.test_deploy import compose_model
from workers.cli import _parser
from workers.metrics import EngineMetrics

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported(registry: CollectorRegistry) -> set[str]:
    names = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def test_every_metric_the_dashboard_charts_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    charted = {name for expr in exprs for name in re.findall(r"\bhr_[a-z_]+", expr)}
    known = exported(Metrics().registry) | exported(EngineMetrics().registry)
    assert charted, "the dashboard charts nothing"
    assert charted <= known, f"charted but never exported: {sorted(charted - known)}"
    # Every engine metric is on the dashboard: a new one gets a panel too.
    families = {family.name for family in EngineMetrics().registry.collect()}
    missing = {name for name in families if not any(c.startswith(name + "_") for c in charted)}
    assert not missing, f"engine metrics without a panel: {sorted(missing)}"


def test_panels_have_distinct_ids_and_fit_the_grid() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        assert panel["datasource"]["uid"] == "${datasource}"


def test_compose_workers_serve_their_metrics_inside_the_network() -> None:
    worker = compose_model()["services"]["worker"]
    args = _parser().parse_args(worker["command"][1:])
    assert (args.command, args.metrics_host, args.metrics_port) == ("worker", "0.0.0.0", 9100)
    assert [str(port) for port in worker["expose"]] == ["9100"]
    assert "ports" not in worker  # not published on the host: `--scale worker=N` still works
