"""``GET /metrics``: Prometheus exposition of what the store holds, read at scrape time.

A custom prometheus-client ``Collector`` on a ``CollectorRegistry`` of the app's own (no
global registry, so two apps in one process never clash) reads the store when scraped:

    autofix_seconds_to_exhaustion{series_id,host,metric}          ETA − now (series with an ETA)
    autofix_exhaustion_probability{series_id,host,metric,horizon}  P(exhaustion within horizon) > 0
    autofix_anomaly_score{series_id,host,metric}                   newest score of the last hour
    autofix_fixes{action,state}                                    fixes by current state
    autofix_gate_refusals_total{gate}                              refusals by the refusing gate
    autofix_kpi{name}                                              KPIs over 30 days (60 s cache)
    autofix_job_duration_seconds{job}                              the last run's duration
    autofix_job_runs_total{job}, autofix_job_failures_total{job}
    autofix_job_last_run_timestamp_seconds{job}

Labels stay few (host, metric, series id): a series' own labels are in the API. Healthy
series (no ETA, probability 0) export nothing, so a large healthy fleet stays small.

The rendered page (and its gzip, for scrapers that accept it, as Prometheus does) is
reused for ``METRICS_TTL`` seconds. A scrape after a longer pause (Prometheus' usual
15 s) renders a fresh page; under a flood of scrapes the page is re-rendered on a
background thread while the previous one (at most ``2 × METRICS_TTL`` old) is served,
so no request waits for the ~50 ms a 10,000-series fleet takes to render.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from datetime import UTC, timedelta

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from autofix.api.auth import viewer
from autofix.api.context import ApiContext, TtlCache
from autofix.api.limits import known_query
from autofix.models.base import HORIZONS

#: How long a rendered /metrics page is served before it is re-rendered (in background).
METRICS_TTL = 5.0
#: How long KPIs (a handful of queries over the audit log) are reused.
KPI_TTL = 60.0
KPI_WINDOW = timedelta(days=30)
#: Anomaly scores older than this are not exported.
SCORE_MAX_AGE = timedelta(hours=1)

_SERIES = ["series_id", "host", "metric"]


class StoreCollector:
    """Metric families read from the store at scrape time."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._kpis = TtlCache(KPI_TTL)

    def describe(self) -> Iterable[Metric]:
        return list(_families())

    def collect(self) -> Iterator[Metric]:
        eta, probability, score, fixes, gates, kpi, duration, runs, failures, last = _families()
        self._forecasts(eta, probability)
        self._scores(score)
        self._fixes(fixes, gates)
        self._kpi(kpi)
        self._jobs(duration, runs, failures, last)
        yield from (eta, probability, score, fixes, gates, kpi, duration, runs, failures, last)

    def _forecasts(self, eta: GaugeMetricFamily, probability: GaugeMetricFamily) -> None:
        table = self.ctx.predictions.get()
        now = _epoch(self.ctx)
        labels = table.metric_labels
        for i in (~np.isnan(table.eta_epoch)).nonzero()[0]:
            eta.add_metric(labels(int(i)), max(float(table.eta_epoch[i]) - now, 0.0))
        for horizon in HORIZONS:
            p = table.probability[horizon]
            for j in (p > 0).nonzero()[0]:
                probability.add_metric([*labels(int(j)), horizon], float(p[j]))

    def _scores(self, family: GaugeMetricFamily) -> None:
        rows = self.ctx.store._run(
            """SELECT a.series_id, any_value(s.host), any_value(s.metric), arg_max(a.score, a.ts)
               FROM anomaly_scores a JOIN series s USING (series_id)
               WHERE a.ts >= ? GROUP BY a.series_id ORDER BY a.series_id""",
            [self.ctx.clock() - SCORE_MAX_AGE],
        )
        for series_id, host, metric, score in rows:
            family.add_metric([str(series_id), str(host), str(metric)], float(score))

    def _fixes(self, fixes: GaugeMetricFamily, gates: CounterMetricFamily) -> None:
        rows = self.ctx.store._run(
            """WITH cur AS (SELECT fix_id, arg_max(state, seq) AS state FROM fix_events
                            GROUP BY fix_id)
               SELECT f.action, coalesce(cur.state, 'planned'), count(*)
               FROM fixes f LEFT JOIN cur USING (fix_id) GROUP BY ALL ORDER BY 1, 2"""
        )
        for action, state, n in rows:
            fixes.add_metric([str(action), str(state)], float(n))
        refused = self.ctx.store._run(
            """SELECT coalesce(gate, 'unknown'), count(*) FROM fix_events
               WHERE state = 'refused' GROUP BY 1 ORDER BY 1"""
        )
        for gate, n in refused:
            gates.add_metric([str(gate)], float(n))

    def _kpi(self, family: GaugeMetricFamily) -> None:
        from autofix.kpi import compute_kpis

        def compute() -> dict[str, float | None]:
            kpis = compute_kpis(
                self.ctx.store, self.ctx.clock(), KPI_WINDOW, self.ctx.settings.kpi_manual_mttr
            )
            return kpis.numbers()

        for name, value in self._kpis.get(compute).items():
            if value is not None:
                family.add_metric([name], value)

    def _jobs(
        self,
        duration: GaugeMetricFamily,
        runs: CounterMetricFamily,
        failures: CounterMetricFamily,
        last: GaugeMetricFamily,
    ) -> None:
        rows = self.ctx.store._run(
            """SELECT job, arg_max(duration_ms, started_at), count(*),
                      count(*) FILTER (WHERE NOT ok), max(finished_at)
               FROM job_runs GROUP BY job ORDER BY job"""
        )
        for job, ms, n, failed, finished in rows:
            duration.add_metric([job], float(ms) / 1000)
            runs.add_metric([job], float(n))
            failures.add_metric([job], float(failed))
            last.add_metric([job], finished.replace(tzinfo=UTC).timestamp())


_H_ETA = "Seconds until the series reaches its capacity threshold (newest forecast)."
_H_P = "Probability the series reaches its capacity threshold within the horizon."
_H_SCORE = "Newest anomaly score of the series in [0, 1]."
_H_FIXES = "Fixes by action and current state."
_H_GATES = "Fixes refused, by the safety gate that refused them."
_H_KPI = "autofix KPIs over the last 30 days (ratios in [0, 1], times in seconds)."
_H_JOB = "Duration of the last run of the job."
_H_FAIL = "Failed runs of the job."
_H_LAST = "When the last run of the job finished (Unix time)."


def _families() -> tuple[
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    CounterMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    CounterMetricFamily,
    CounterMetricFamily,
    GaugeMetricFamily,
]:
    """Empty families, in exposition order."""
    return (
        GaugeMetricFamily("autofix_seconds_to_exhaustion", _H_ETA, labels=_SERIES),
        GaugeMetricFamily("autofix_exhaustion_probability", _H_P, labels=[*_SERIES, "horizon"]),
        GaugeMetricFamily("autofix_anomaly_score", _H_SCORE, labels=_SERIES),
        GaugeMetricFamily("autofix_fixes", _H_FIXES, labels=["action", "state"]),
        CounterMetricFamily("autofix_gate_refusals", _H_GATES, labels=["gate"]),
        GaugeMetricFamily("autofix_kpi", _H_KPI, labels=["name"]),
        GaugeMetricFamily("autofix_job_duration_seconds", _H_JOB, labels=["job"]),
        CounterMetricFamily("autofix_job_runs", "Job runs recorded.", labels=["job"]),
        CounterMetricFamily("autofix_job_failures", _H_FAIL, labels=["job"]),
        GaugeMetricFamily("autofix_job_last_run_timestamp_seconds", _H_LAST, labels=["job"]),
    )


def _epoch(ctx: ApiContext) -> float:
    return ctx.clock().replace(tzinfo=UTC).timestamp()


def build_registry(ctx: ApiContext) -> CollectorRegistry:
    """A registry of this app's own holding the store collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(ctx))
    return registry


def router(ctx: ApiContext, registry: CollectorRegistry) -> APIRouter:
    """The /metrics route; a viewer token is needed when AUTOFIX_API_METRICS_AUTH is set."""
    secured = ctx.settings.api_metrics_auth
    guards = [Depends(known_query), *([Depends(viewer)] if secured else [])]
    out = APIRouter(tags=["status"], dependencies=guards)
    page = TtlCache(METRICS_TTL, stale=2 * METRICS_TTL)

    def render() -> tuple[bytes, bytes]:
        text = generate_latest(registry)
        return text, gzip.compress(text, compresslevel=5)

    @out.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={401: {"description": "No or an invalid token."}} if secured else {},
    )
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition (format 0.0.4); gzip when the scraper accepts it."""
        rendered = page.fresh()
        if rendered is None:  # the first scrape waits; later ones get the last page
            rendered = await run_in_threadpool(page.get_stale, render)
        text, packed = rendered
        if "gzip" in request.headers.get("accept-encoding", ""):
            packed_headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            return Response(packed, media_type=CONTENT_TYPE_PLAIN_0_0_4, headers=packed_headers)
        return Response(
            text, media_type=CONTENT_TYPE_PLAIN_0_0_4, headers={"Vary": "Accept-Encoding"}
        )

    return out
