"""The Grafana dashboard for autofix, built in code with grafana-foundation-sdk.

    python deploy/grafana/dashboard.py > deploy/grafana/autofix.json

The committed ``autofix.json`` is this script's output; a test fails when they differ, and
another runs every panel's PromQL against a real Prometheus scraping ``autofix serve``.
Import it in Grafana (Dashboards → New → Import) and pick the Prometheus data source.

Variables: ``datasource`` (Prometheus), ``instance`` (autofix instances, multi) and
``horizon`` (1h, 4h, 24h, 4d) for the risk panels.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from autofix.kpi import TARGETS

UID = "autofix-overview"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'instance=~"$instance"'  # every query is limited to the chosen instances
#: The KPIs that have a target.
KPIS = "|".join(TARGETS)


def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False) -> Any:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(PromQueryFormat.TABLE)
    return q


def series(title: str, description: str, *queries: Any, unit: str = "short", w: int = 12) -> Any:
    panel = timeseries.Panel().title(title).description(description).unit(unit)
    panel = panel.datasource(DATASOURCE).height(8).span(w)
    for q in queries:
        panel = panel.with_target(q)
    return panel


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    risk = f'autofix_exhaustion_probability{{horizon="$horizon", {SEL}}}'
    riskiest = (
        table.Panel()
        .title("Riskiest series: P(exhaustion within $horizon) and ETA")
        .description(
            "The 20 series most likely to reach their capacity within the horizon, with the "
            "forecast time left. Series that stopped reporting are not exported."
        )
        .datasource(DATASOURCE)
        .height(10)
        .span(24)
        .with_target(query(f"topk(20, {risk})", ref="P", instant=True))
        .with_target(
            query(
                f"autofix_seconds_to_exhaustion{{{SEL}}} and on (instance, series_id) "
                f"topk(20, {risk})",
                ref="ETA",
                instant=True,
            )
        )
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, "__name__": True, "job": True},
                    "renameByName": {"Value #P": "P(within $horizon)", "Value #ETA": "ETA (s)"},
                },
            )
        )
    )
    d = (
        dashboard.Dashboard("autofix")
        .uid(UID)
        .description("Predictions, fixes, KPIs and the health of the autofix service itself.")
        .tags(["autofix"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Instance")
            .datasource(DATASOURCE)
            .query("label_values(autofix_build_info, instance)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(
            dashboard.CustomVariable("horizon")
            .label("Horizon")
            .values("1h,4h,24h,4d")
            .current(model.VariableOption(text="4h", value="4h", selected=True))
        )
        .with_row(dashboard.Row("Risks"))
        .with_panel(riskiest)
        .with_panel(
            series(
                "P(exhaustion within $horizon), riskiest 10",
                "How the probability of the riskiest series moved.",
                query(f"topk(10, {risk})", "{{host}} {{metric}} {{mountpoint}}{{target}}"),
                unit="percentunit",
                w=24,
            )
        )
        .with_row(dashboard.Row("Fixes"))
        .with_panel(
            series(
                "Fixes by state",
                "Fixes recorded in the audit log, by their current state.",
                query(f"sum by (state) (autofix_fixes{{{SEL}}})", "{{state}}"),
            )
        )
        .with_panel(
            series(
                "Fix state changes",
                "Transitions per interval: running, succeeded, failed, rolled back, refused …",
                query(
                    f"sum by (state) (increase(autofix_fix_transitions_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{state}}",
                ),
            )
        )
        .with_panel(
            bargauge.Panel()
            .title("Gate refusals")
            .description("Fixes refused, by the safety gate that refused them (all time).")
            .datasource(DATASOURCE)
            .height(8)
            .span(8)
            .with_target(query(f"sum by (gate) (autofix_gate_refusals_total{{{SEL}}})", "{{gate}}"))
        )
        .with_panel(
            stat.Panel()
            .title("Needs a human")
            .description(
                "Escalations (all time), circuit breakers open now, fixes waiting for approval."
            )
            .datasource(DATASOURCE)
            .height(8)
            .span(8)
            .with_target(query(f"sum(autofix_escalations_total{{{SEL}}})", "escalations"))
            .with_target(
                query(f"sum(autofix_circuit_breaker_open{{{SEL}}})", "breakers open", ref="B")
            )
            .with_target(
                query(
                    f"count(autofix_approval_pending_age_seconds{{{SEL}}}) or vector(0)",
                    "waiting for approval",
                    ref="C",
                )
            )
        )
        .with_panel(
            series(
                "Approvals: time waited / TTL",
                "Share of its approval TTL each pending fix has waited; it expires at 100 %.",
                query(
                    f"autofix_approval_pending_age_seconds{{{SEL}}} / "
                    f"autofix_approval_ttl_seconds{{{SEL}}}",
                    "fix {{fix_id}} {{action}} on {{target}}",
                ),
                unit="percentunit",
                w=8,
            )
        )
        .with_row(dashboard.Row("KPIs against target"))
        .with_panel(
            table.Panel()
            .title("KPIs (30 days) against the seed target and our goal")
            .description(
                "Ratios in [0, 1]; recovery p95 in seconds. False-fix rate: lower is better."
            )
            .datasource(DATASOURCE)
            .height(8)
            .span(24)
            .with_target(query(f'autofix_kpi{{name=~"{KPIS}", {SEL}}}', ref="value", instant=True))
            .with_target(
                query(f'autofix_kpi_target{{level="seed", {SEL}}}', ref="seed", instant=True)
            )
            .with_target(
                query(f'autofix_kpi_target{{level="goal", {SEL}}}', ref="goal", instant=True)
            )
            .with_transformation(
                model.DataTransformerConfig(id_val="joinByField", options={"byField": "name"})
            )
        )
        .with_row(dashboard.Row("The service"))
        .with_panel(
            series(
                "Job durations",
                "Duration of the last run of each job.",
                query(f"autofix_job_duration_seconds{{{SEL}}}", "{{autofix_job}}"),
                unit="s",
                w=8,
            )
        )
        .with_panel(
            series(
                "Job failures",
                "Failed job runs per interval.",
                query(
                    f"sum by (autofix_job) (increase(autofix_job_failures_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{autofix_job}}",
                ),
                w=8,
            )
        )
        .with_panel(
            series(
                "Scheduler heartbeat age",
                "Seconds since the scheduler last ran its heartbeat job (alert: 3 intervals).",
                query(
                    f"time() - autofix_scheduler_heartbeat_timestamp_seconds{{{SEL}}}",
                    "{{instance}}",
                ),
                unit="s",
                w=8,
            )
        )
        .with_panel(
            series(
                "API requests",
                "HTTP requests per second by route and status class.",
                query(
                    f"sum by (handler, status) (rate(http_requests_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{handler}} {{status}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "API latency p95",
                "95th percentile request duration by route.",
                query(
                    "histogram_quantile(0.95, sum by (le, handler) "
                    f"(rate(http_request_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                    "{{handler}}",
                ),
                unit="s",
            )
        )
    )
    encoded: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    for number, panel in enumerate(encoded["panels"], 1):
        panel["id"] = number  # Grafana wants them unique; the builder leaves them all 0
        if panel.get("options") is None:
            panel.pop("options", None)
    return encoded


def render() -> str:
    """The dashboard JSON as committed: sorted keys, two-space indent, final newline."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
