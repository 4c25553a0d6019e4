"""``GET /metrics``: Prometheus exposition of what the store holds, read at scrape time.

A custom prometheus-client ``Collector`` on a ``CollectorRegistry`` of the app's own (no
global registry, so two apps in one process never clash) reads the store when scraped.
Risk series carry the series' own labels (``mountpoint``, ``device``, ``target`` …) next
to ``series_id``, ``host`` and ``metric``; a series label whose name clashes with one of
these, or is not a valid Prometheus name, is exported as ``exported_<name>``:

    autofix_seconds_to_exhaustion{series_id,host,metric,…}          ETA − now (with an ETA)
    autofix_exhaustion_probability{series_id,host,metric,horizon,…}  P(exhaustion in horizon) > 0
    autofix_anomaly_score{series_id,host,metric,…}                   newest score
    autofix_fixes{action,state}                                      fixes by current state
    autofix_fix_transitions_total{action,state}                      state changes (audit events)
    autofix_gate_refusals_total{gate}                                refusals by the refusing gate
    autofix_escalations_total                                        escalations to a human
    autofix_circuit_breaker_open{action,target}                      1 while a breaker holds
    autofix_approval_pending_age_seconds{fix_id,action,target}       fixes waiting for approval,
    autofix_approval_ttl_seconds{fix_id,action,target}               and how long they may wait
    autofix_kpi{name}, autofix_kpi_target{name,level}                KPIs (30 days) and targets
    autofix_job_duration_seconds{autofix_job}                        the last run's duration
    autofix_job_runs_total{autofix_job}, autofix_job_failures_total{autofix_job}
    autofix_job_last_run_timestamp_seconds{…}, autofix_job_last_run_success{…}
    autofix_job_interval_seconds{autofix_job}                        (longest) time between runs
    autofix_scheduler_heartbeat_timestamp_seconds                    the scheduler's last beat
    autofix_scheduler_heartbeat_interval_seconds
    autofix_paused                                                    1 while autofix is paused
    autofix_silences_active                                           silences in force now
    autofix_build_info{version}, process_*                           the process itself
    http_requests_total{handler,method,status}, http_request_duration_seconds{handler,method} …

The job label is ``autofix_job``: ``job`` is Prometheus' own target label, and a scraped
``job`` would be renamed ``exported_job``.

Series that stopped reporting — their newest sample older than ``stale_after`` (5 minutes,
or 4 collection intervals when longer) — export nothing, and neither do healthy series
(no ETA, probability 0), so a large healthy fleet stays small. HTTP request metrics come
from prometheus-fastapi-instrumentator; paths with no route are grouped as ``none`` so
an untrusted URL never becomes a label.

The rendered page (and its gzip, for scrapers that accept it, as Prometheus does) is
reused for ``METRICS_TTL`` seconds. A scrape after a longer pause (Prometheus' usual
15 s) renders a fresh page; under a flood of scrapes the page is re-rendered on a
background thread while the previous one (at most ``2 × METRICS_TTL`` old) is served,
so no request waits for the ~50 ms a 10,000-series fleet takes to render.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from autofix import __version__
from autofix.api.auth import viewer
from autofix.api.context import ApiContext, ForecastTable, TtlCache
from autofix.api.limits import known_query
from autofix.audit import STATES
from autofix.collect.base import parse_labels
from autofix.config import Settings
from autofix.gates import Request as GateRequest
from autofix.gates import check_breaker, resolve_policy
from autofix.models.base import HORIZONS
from autofix.pipeline import JOB_NAMES, JobSpec

#: How long a rendered /metrics page is served before it is re-rendered (in background).
METRICS_TTL = 5.0
#: How long KPIs (a handful of queries over the audit log) are reused.
KPI_TTL = 60.0
KPI_WINDOW = timedelta(days=30)
#: A series whose newest sample is older than this (or 4 collection intervals) is stale.
STALE_MIN = timedelta(minutes=5)

_SERIES = ("series_id", "host", "metric")
_RESERVED = {*_SERIES, "horizon", "job", "instance", "le", "quantile"}
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def stale_after(settings: Settings) -> timedelta:
    """Age of a series' newest sample after which it has stopped reporting."""
    return max(STALE_MIN, 4 * settings.collect_interval)


def series_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """A series' own labels as Prometheus labels: invalid or clashing names renamed.

    >>> series_labels({"mountpoint": "/", "host": "x", "a-b": "1", "__x": "2"})
    {'mountpoint': '/', 'exported_host': 'x', 'exported_a_b': '1', 'exported___x': '2'}
    """
    out: dict[str, str] = {}
    for name, value in labels.items():
        valid = bool(_LABEL_NAME.match(name))
        clean = name if valid else re.sub(r"[^a-zA-Z0-9_]", "_", name)
        if not valid or clean in _RESERVED or clean.startswith("__"):
            clean = f"exported_{clean}"
        out.setdefault(clean, str(value))
    return out


def job_interval(spec: JobSpec, now: datetime) -> float:
    """Seconds between two runs; for a crontab line the longest gap over its next runs."""
    if spec.every is not None:
        return spec.every.total_seconds()
    from apscheduler.triggers.cron import CronTrigger

    assert spec.cron is not None
    trigger = CronTrigger.from_crontab(spec.cron, timezone="UTC")
    moment = now.replace(tzinfo=UTC)
    previous = trigger.get_next_fire_time(None, moment)
    longest = 0.0
    for _ in range(16):  # covers a week of a weekday-only schedule
        following = trigger.get_next_fire_time(previous, previous + timedelta(seconds=1))
        if following is None or previous is None:
            break
        longest = max(longest, (following - previous).total_seconds())
        previous = following
    return longest


class StoreCollector:
    """Metric families read from the store at scrape time."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._kpis = TtlCache(KPI_TTL)
        self._labels_of: tuple[ForecastTable | None, list[dict[str, str]]] = (None, [])
        self._intervals: dict[str, float] | None = None

    def describe(self) -> Iterable[Metric]:
        return list(_families().values())

    def collect(self) -> Iterator[Metric]:
        f = _families()
        now = self.ctx.clock()
        self._forecasts(f, now)
        self._scores(f, now)
        self._fixes(f)
        self._breakers(f, now)
        self._approvals(f, now)
        self._kpi(f)
        self._jobs(f, now)
        self._heartbeat(f)
        self._holds(f, now)
        f["build_info"].add_metric([__version__], 1.0)
        yield from f.values()

    # -- risks ------------------------------------------------------------------------

    def _labels(self, table: ForecastTable) -> list[dict[str, str]]:
        """Every row's Prometheus labels, built once per prediction run."""
        cached, labels = self._labels_of
        if cached is not table:
            c = table.columns
            labels = [
                {
                    **series_labels(parse_labels(c["labels"][i])),
                    "series_id": str(c["series_id"][i]),
                    "host": str(c["host"][i]),
                    "metric": str(c["metric"][i]),
                }
                for i in range(len(table))
            ]
            self._labels_of = (table, labels)
        return labels

    def _forecasts(self, f: _Families, now: datetime) -> None:
        table = self.ctx.predictions.get()
        labels = self._labels(table)
        cutoff = np.datetime64(now - stale_after(self.ctx.settings), "ns")
        fresh = table.columns["origin"] >= cutoff
        epoch = now.replace(tzinfo=UTC).timestamp()
        eta, probability = f["eta"], f["probability"]
        for i in (~np.isnan(table.eta_epoch) & fresh).nonzero()[0]:
            seconds = max(float(table.eta_epoch[i]) - epoch, 0.0)
            eta.add_sample(eta.name, labels[int(i)], seconds)
        for horizon in HORIZONS:
            p = table.probability[horizon]
            for j in ((p > 0) & fresh).nonzero()[0]:
                sample = {**labels[int(j)], "horizon": horizon}
                probability.add_sample(probability.name, sample, float(p[j]))

    def _scores(self, f: _Families, now: datetime) -> None:
        rows = self.ctx.store._run(
            """SELECT a.series_id, any_value(s.host), any_value(s.metric),
                      any_value(s.labels), arg_max(a.score, a.ts)
               FROM anomaly_scores a JOIN series s USING (series_id)
               WHERE a.ts >= ? GROUP BY a.series_id ORDER BY a.series_id""",
            [now - stale_after(self.ctx.settings)],
        )
        family = f["score"]
        for series_id, host, metric, labels, score in rows:
            sample = {
                **series_labels(parse_labels(labels)),
                "series_id": str(series_id),
                "host": str(host),
                "metric": str(metric),
            }
            family.add_sample(family.name, sample, float(score))

    # -- fixes ------------------------------------------------------------------------

    def _fixes(self, f: _Families) -> None:
        store = self.ctx.store
        rows = store._run(
            """WITH cur AS (SELECT fix_id, arg_max(state, seq) AS state FROM fix_events
                            GROUP BY fix_id)
               SELECT f.action, coalesce(cur.state, 'planned'), count(*)
               FROM fixes f LEFT JOIN cur USING (fix_id) GROUP BY ALL ORDER BY 1, 2"""
        )
        for action, state, n in rows:
            f["fixes"].add_metric([str(action), str(state)], float(n))
        # Every state of every known action, zeros included: increase() in an alert rule
        # then sees the first failure of an action too (a new series would start at 1).
        counts = {
            (str(a), str(s)): float(n)
            for a, s, n in store._run(
                """SELECT f.action, e.state, count(*) FROM fix_events e JOIN fixes f
                   USING (fix_id) GROUP BY ALL"""
            )
        }
        seen = {str(a) for (a,) in store._run("SELECT DISTINCT action FROM fixes")}
        actions = sorted(seen | set(self.ctx.executor.registry))
        for action in actions:
            for state in STATES:
                f["transitions"].add_metric([action, state], counts.get((action, state), 0.0))
        refused = store._run(
            """SELECT coalesce(gate, 'unknown'), count(*) FROM fix_events
               WHERE state = 'refused' GROUP BY 1 ORDER BY 1"""
        )
        for gate, n in refused:
            f["gates"].add_metric([str(gate)], float(n))
        (escalations,) = store._run("SELECT count(*) FROM escalations")[0]
        f["escalations"].add_metric([], float(escalations))

    def _breakers(self, f: _Families, now: datetime) -> None:
        settings, pipeline = self.ctx.settings, self.ctx.pipeline
        hold = max(
            [settings.fix_breaker_hold]
            + [g.breaker_hold for g in pipeline.gates.values() if g.breaker_hold is not None]
            + [
                t.gates.breaker_hold
                for t in pipeline.targets
                if t.gates is not None and t.gates.breaker_hold is not None
            ]
        )
        history = self.ctx.executor.audit.history(now - hold)
        for action, target in sorted({(p.action, p.target) for p in history}):
            policy = resolve_policy(settings, pipeline, action, target)
            verdict = check_breaker(GateRequest(action, target), history, policy, now)
            f["breaker"].add_metric([action, target], 0.0 if verdict is None else 1.0)

    def _approvals(self, f: _Families, now: datetime) -> None:
        executor = self.ctx.executor
        for record in executor.audit.list(limit=1000, state="pending_approval"):
            since = next((e["ts"] for e in record.events if e["state"] == "pending_approval"), None)
            if since is None:
                continue
            age = (now - datetime.fromisoformat(since)).total_seconds()
            ttl = executor._policy(record).approval_ttl.total_seconds()
            if age >= ttl:
                continue  # expired: it can never run, and nobody needs to hurry
            labels = [str(record.id), record.action, record.target]
            f["approval_age"].add_metric(labels, max(age, 0.0))
            f["approval_ttl"].add_metric(labels, ttl)

    # -- KPIs, jobs, the scheduler ------------------------------------------------------

    def _kpi(self, f: _Families) -> None:
        from autofix.kpi import TARGETS, compute_kpis

        def compute() -> dict[str, float | None]:
            kpis = compute_kpis(
                self.ctx.store, self.ctx.clock(), KPI_WINDOW, self.ctx.settings.kpi_manual_mttr
            )
            return kpis.numbers()

        for name, value in self._kpis.get(compute).items():
            if value is not None:
                f["kpi"].add_metric([name], value)
        for name, target in TARGETS.items():
            f["kpi_target"].add_metric([name, "seed"], target.seed)
            f["kpi_target"].add_metric([name, "goal"], target.goal)

    def _scheduled(self, now: datetime) -> dict[str, float]:
        """Interval of each job this process schedules (all enabled ones without a scheduler)."""
        if self._intervals is None:
            pipeline = self.ctx.pipeline
            if self.ctx.scheduler is not None:
                names = [j.id for j in self.ctx.scheduler.get_jobs() if j.id in JOB_NAMES]
            else:
                names = [n for n in JOB_NAMES if pipeline.job(n).enabled]
            self._intervals = {n: job_interval(pipeline.job(n), now) for n in names}
        return self._intervals

    def _jobs(self, f: _Families, now: datetime) -> None:
        rows = self.ctx.store._run(
            """SELECT job, arg_max(duration_ms, started_at), count(*),
                      count(*) FILTER (WHERE NOT ok), max(finished_at),
                      arg_max(ok, started_at)
               FROM job_runs GROUP BY job ORDER BY job"""
        )
        for job, ms, n, failed, finished, ok in rows:
            f["job_duration"].add_metric([job], float(ms) / 1000)
            f["job_runs"].add_metric([job], float(n))
            f["job_failures"].add_metric([job], float(failed))
            f["job_last"].add_metric([job], finished.replace(tzinfo=UTC).timestamp())
            f["job_success"].add_metric([job], 1.0 if ok else 0.0)
        for job, seconds in self._scheduled(now).items():
            f["job_interval"].add_metric([job], seconds)

    def _heartbeat(self, f: _Families) -> None:
        beat = self.ctx.heartbeat
        if beat is None:
            return
        f["heartbeat_interval"].add_metric([], beat.interval)
        if beat.last is not None:
            f["heartbeat"].add_metric([], beat.last)

    def _holds(self, f: _Families, now: datetime) -> None:
        from autofix import pause, silences

        f["paused"].add_metric([], 1.0 if pause.current(self.ctx.store, now) else 0.0)
        f["silences"].add_metric([], float(len(silences.in_force(self.ctx.store, now))))


_Families = dict[str, GaugeMetricFamily | CounterMetricFamily]

_HELP = {
    "eta": "Seconds until the series reaches its capacity threshold (newest forecast).",
    "probability": "Probability the series reaches its capacity threshold within the horizon.",
    "score": "Newest anomaly score of the series in [0, 1].",
    "fixes": "Fixes by action and current state.",
    "transitions": "Fix state changes recorded in the audit log, by action and state.",
    "gates": "Fixes refused, by the safety gate that refused them.",
    "escalations": "Escalations to a human (failed, rolled back or held fixes, no fix to try).",
    "breaker": "1 while the circuit breaker of the action on the target is open.",
    "approval_age": "How long the fix has been waiting for approval.",
    "approval_ttl": "How long the fix may wait for approval before it expires.",
    "kpi": "autofix KPIs over the last 30 days (ratios in [0, 1], times in seconds).",
    "kpi_target": "The KPI's seed target and our goal (level seed or goal).",
    "job_duration": "Duration of the last run of the job.",
    "job_runs": "Job runs recorded.",
    "job_failures": "Failed runs of the job.",
    "job_last": "When the last run of the job finished (Unix time).",
    "job_success": "1 when the last run of the job succeeded, 0 when it failed.",
    "job_interval": "Time between two scheduled runs of the job (longest gap for a crontab).",
    "heartbeat": "When the scheduler last ran its heartbeat job (Unix time).",
    "heartbeat_interval": "Time between two heartbeats of the scheduler.",
    "paused": "1 while autofix is paused (`autofix pause`): no fix is applied.",
    "silences": "Silences in force now: the decisions they match are not acted on.",
    "build_info": "The running autofix version.",
}


def _families() -> _Families:
    """Empty families, in exposition order."""

    def gauge(key: str, name: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, _HELP[key], labels=list(labels))

    def counter(key: str, name: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
        return CounterMetricFamily(name, _HELP[key], labels=list(labels))

    pair = ("action", "state")
    approval = ("fix_id", "action", "target")
    return {
        # Risk families take each series' own labels: samples are added with add_sample.
        "eta": gauge("eta", "autofix_seconds_to_exhaustion"),
        "probability": gauge("probability", "autofix_exhaustion_probability"),
        "score": gauge("score", "autofix_anomaly_score"),
        "fixes": gauge("fixes", "autofix_fixes", pair),
        "transitions": counter("transitions", "autofix_fix_transitions", pair),
        "gates": counter("gates", "autofix_gate_refusals", ["gate"]),
        "escalations": counter("escalations", "autofix_escalations"),
        "breaker": gauge("breaker", "autofix_circuit_breaker_open", ["action", "target"]),
        "approval_age": gauge("approval_age", "autofix_approval_pending_age_seconds", approval),
        "approval_ttl": gauge("approval_ttl", "autofix_approval_ttl_seconds", approval),
        "kpi": gauge("kpi", "autofix_kpi", ["name"]),
        "kpi_target": gauge("kpi_target", "autofix_kpi_target", ["name", "level"]),
        "job_duration": gauge("job_duration", "autofix_job_duration_seconds", ["autofix_job"]),
        "job_runs": counter("job_runs", "autofix_job_runs", ["autofix_job"]),
        "job_failures": counter("job_failures", "autofix_job_failures", ["autofix_job"]),
        "job_last": gauge("job_last", "autofix_job_last_run_timestamp_seconds", ["autofix_job"]),
        "job_success": gauge("job_success", "autofix_job_last_run_success", ["autofix_job"]),
        "job_interval": gauge("job_interval", "autofix_job_interval_seconds", ["autofix_job"]),
        "heartbeat": gauge("heartbeat", "autofix_scheduler_heartbeat_timestamp_seconds"),
        "heartbeat_interval": gauge(
            "heartbeat_interval", "autofix_scheduler_heartbeat_interval_seconds"
        ),
        "paused": gauge("paused", "autofix_paused"),
        "silences": gauge("silences", "autofix_silences_active"),
        "build_info": gauge("build_info", "autofix_build_info", ["version"]),
    }


def build_registry(ctx: ApiContext) -> CollectorRegistry:
    """A registry of this app's own: the store collector and the process' own metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(ctx))
    ProcessCollector(registry=registry)
    return registry


def instrument(app: FastAPI, registry: CollectorRegistry) -> None:
    """HTTP request metrics (count, latency, sizes by route template) into ``registry``."""
    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator(registry=registry, should_group_untemplated=True).instrument(app)


def router(ctx: ApiContext, registry: CollectorRegistry) -> APIRouter:
    """The /metrics route; a viewer token is needed when AUTOFIX_API_METRICS_AUTH is set."""
    secured = ctx.settings.api_metrics_auth
    guards = [Depends(known_query), *([Depends(viewer)] if secured else [])]
    out = APIRouter(tags=["status"], dependencies=guards)
    page = TtlCache(METRICS_TTL, stale=2 * METRICS_TTL)

    def render() -> tuple[bytes, bytes]:
        text = generate_latest(registry)
        return text, gzip.compress(text, compresslevel=5)

    # The API front keeps its own copy: it gets a page at most METRICS_TTL old.
    ctx.metrics_page = lambda: page.get(render)

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


__all__ = [
    "METRICS_TTL",
    "StoreCollector",
    "build_registry",
    "instrument",
    "job_interval",
    "router",
    "series_labels",
    "stale_after",
]
