"""The jobs behind ``autofix serve`` and ``autofix run JOB``, and their scheduler.

``Service`` owns the one writable store of the process and runs each job as a method:

- ``collect``: one collection cycle of this host and the pipeline's targets;
- ``remediate``: predict (the MLflow champion over the store) → anomaly scores of
  latency series → the policy over the rules → decisions recorded → fixes through the
  executor's gates; shadow and dry-run decisions whose horizon has passed are scored;
- ``health``: the self-healing loop (``autofix.selfheal``): every checked target's
  health; a target failing ``recovery.after`` checks in a row gets its recovery actions
  through the executor (a failed verify rolls back and escalates there);
- ``train``, ``maintenance``, ``report``, ``retention``, ``kpi``, ``snapshot``.

Every run is recorded in ``job_runs`` with its duration; a failing job is logged and
counted and never stops the scheduler. APScheduler runs the jobs (``autofix.scheduler``:
one instance of each at a time, missed runs coalesced into one). New escalations and
approvals go to the notifier, which never blocks a job.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd

from autofix.actions.base import Check, Runner, run_argv
from autofix.collect.base import parse_labels
from autofix.compute import Compute
from autofix.conditions import rule_condition
from autofix.config import Settings
from autofix.depends import TargetStates, explained_by, inhibitor, named_failing
from autofix.errors import AutofixError
from autofix.executor import Executor
from autofix.gates import resolve_policy
from autofix.health import HealthResult, check_target, has_check
from autofix.holds import Holds
from autofix.logs import context as log_context
from autofix.pipeline import JOB_NAMES, AlertWhen, BaselineWhen, Pipeline, Rule, Target
from autofix.policy import (
    Alert,
    Decision,
    Observations,
    RuleDecision,
    is_resource_trouble,
    judge_alerts,
    lookback,
    score_outcome,
)
from autofix.scheduler import build_scheduler
from autofix.selfheal import SelfHealer
from autofix.store import MetricStore
from autofix.workers import InlineModelWork, ModelWork

log = logging.getLogger(__name__)

#: Latency metrics the remediate job scores for anomalies.
LATENCY_SUFFIX = "_duration_seconds"
#: History an anomaly scorer warms up on before scoring the newest points.
SCORE_LOOKBACK = timedelta(hours=24)
_SCORER = "robust"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class JobRun:
    """One run of one job."""

    job: str
    ok: bool
    started_at: datetime
    duration_ms: float
    summary: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "ok": self.ok,
            "started_at": self.started_at.isoformat(),
            "duration_ms": round(self.duration_ms, 1),
            "summary": dict(self.summary),
            "error": self.error,
        }


class Service:
    """Every job of the service over one writable store."""

    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        store: MetricStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        runner: Runner = run_argv,
        http_transport: httpx.BaseTransport | None = None,
        notifier: Any | None = None,
        scenarios: str = "data/samples",
        models: ModelWork | None = None,
        compute: Compute | None = None,
    ) -> None:
        self.settings = settings
        #: Where partitioned model work over the fleet runs (``autofix.compute``): Dask
        #: when AUTOFIX_DASK_SCHEDULER names a cluster, a LocalCluster for a large fleet,
        #: else one partition after the other through ``models``.
        self.compute = compute if compute is not None else Compute.from_settings(settings)
        self.pipeline = pipeline
        self.store = store
        self.clock = clock
        self.runner = runner
        self.http_transport = http_transport
        self.scenarios = scenarios
        #: Where fits, scoring and training run (``autofix serve``: worker processes).
        self.models: ModelWork = models if models is not None else InlineModelWork()
        self.executor = Executor(
            store,
            pipeline,
            settings,
            clock=clock,
            sleep=sleep,
            runner=runner,
            http_transport=http_transport,
        )
        self.notifier = notifier
        self.failures: Counter[str] = Counter()
        self.runs: Counter[str] = Counter()
        self.last_run: dict[str, JobRun] = {}
        self._collectors: list[Any] | None = None
        self._model: tuple[Any, str, str] | None = None
        #: The pause and silences in force (``autofix.holds``): consulted before acting.
        self.holds = Holds(store, settings.hostname)
        self._healer = SelfHealer(self)
        self._recent = self._load_recent()
        #: The latest health results of this process, and when they were taken.
        self._health: tuple[datetime, list[HealthResult]] | None = None
        #: When the last remediate run looked, and the targets a resource condition held on.
        self._firing: tuple[datetime | None, dict[str, str]] = (None, {})
        #: Rule decisions recorded as inhibited, by key → inhibiting target (record once).
        self._inhibited: dict[str, str] = {}
        #: Decisions whose fixes found nothing to do, by key: not decided again while
        #: their condition keeps holding.
        self._quiet: dict[str, str] = {}
        # What was already there when this process started is not news (`autofix run`
        # builds a Service per run: without this, cron would re-notify every run).
        self._notified_escalations = self._count("escalations")
        self._incidents: Any | None = None
        if notifier is not None:  # open incidents of earlier runs, to resolve them later
            from autofix.notify.incidents import Incidents

            self._incidents = Incidents(store, pipeline, settings, clock())
        self._notified_pending = {
            r.id for r in self.executor.audit.list(limit=1000, state="pending_approval")
        }
        self._lock = threading.Lock()
        self._notify_lock = threading.Lock()
        # One run of a job at a time: a scheduled run and one a client asked for (`autofix
        # run JOB` carried out by this service, POST /api/v1/jobs/JOB/run) take turns.
        self._job_locks = {name: threading.Lock() for name in JOB_NAMES}
        self.jobs: dict[str, Callable[[], dict[str, Any]]] = {
            "collect": self.collect,
            "remediate": self.remediate,
            "health": self.health,
            "train": self.train,
            "maintenance": self.maintenance,
            "report": self.report,
            "retention": self.retention,
            "kpi": self.kpi,
            "snapshot": self.snapshot,
        }
        assert set(self.jobs) == set(JOB_NAMES)

    # -- running jobs --------------------------------------------------------------------

    def run_job(self, name: str) -> JobRun:
        """Run one job now; record it in ``job_runs``; never raises for a failing job."""
        with self._job_locks[name], log_context(job=name):  # every log line says which job
            return self._run_job(name)

    def _run_job(self, name: str) -> JobRun:
        job = self.jobs[name]
        started_at, started = self.clock(), time.perf_counter()
        try:
            summary, error = job(), None
        except Exception as exc:  # a failing job is logged and counted, never fatal
            summary = {}
            error = " ".join(str(exc).split()) or type(exc).__name__
            if not isinstance(exc, AutofixError):
                error = f"{type(exc).__name__}: {error}"
                log.exception("job %s failed", name)
            else:
                log.error("job %s failed: %s", name, error)
        run = JobRun(
            name, error is None, started_at, (time.perf_counter() - started) * 1000, summary, error
        )
        with self._lock:
            self.runs[name] += 1
            if error is not None:
                self.failures[name] += 1
            self.last_run[name] = run
        try:
            self._record_run(run)
            self._notify_new()
        except Exception as exc:  # bookkeeping must not take the scheduler down either
            log.error("recording job %s: %s", name, " ".join(str(exc).split()))
        log.debug("job %s done", name, extra={"ok": run.ok, "duration_ms": run.duration_ms})
        return run

    def _record_run(self, run: JobRun) -> None:
        with self.store._write_lock:
            self.store.execute(
                "INSERT INTO job_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    run.job,
                    run.started_at,
                    run.started_at + timedelta(milliseconds=run.duration_ms),
                    run.duration_ms,
                    run.ok,
                    run.error,
                    json.dumps(run.summary, default=str),
                ],
            )

    def job_skipped(self, name: str) -> None:
        """A run of ``name`` was skipped because the previous one was still going."""
        with self._lock:
            self.failures[f"{name}_skipped"] += 1

    def close(self) -> None:
        self.models.close()
        self.compute.close()
        if self._collectors is not None:
            from autofix.collect.registry import close_collectors

            close_collectors(self._collectors)
        if self.notifier is not None:
            self.notifier.close(timeout=5)

    # -- collect ----------------------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        from autofix.collect.base import CycleRunner

        runner = CycleRunner(
            self._get_collectors(),
            self.settings.hostname,
            self.settings.collect_timeout.total_seconds(),
        )
        cycle = runner.run_once()
        written = self.store.write(cycle.frame)
        return {"samples": len(cycle.frame), "stored": written.stored, "errors": cycle.errors}

    # -- remediate ----------------------------------------------------------------------

    def model(self, refresh: bool = False) -> tuple[Any, str, str]:
        """The forecaster predictions are made with (the champion, cached)."""
        if self._model is None or refresh:
            self._model = self.models.champion(self.settings.models_dir)
        return self._model

    def predict(self, now: datetime) -> int:
        from autofix.predict import predict_store

        estimator, name, version = self.model()
        run = predict_store(
            self.store,
            estimator,
            model_name=name,
            model_version=version,
            now=now,
            lookback=self.settings.predict_lookback,
            fit_predict=self.models.forecast,
            compute=self.compute,
        )
        return run.written

    def score_anomalies(self, now: datetime) -> pd.DataFrame:
        """Score the latency series causally; store the new points' scores; return recent."""
        found = self.store.query(
            "SELECT count(*) AS n FROM series WHERE suffix(metric, ?)", [LATENCY_SUFFIX]
        )
        if self.compute.kind_for(int(found["n"].iloc[0])) in ("dask", "local"):
            # A fleet's latency series: partitions on Dask, read from a Parquet export.
            from autofix.models.anomaly import RobustScorer
            from autofix.predict import score_store

            scored = score_store(
                self.store,
                RobustScorer(),
                model_name=_SCORER,
                now=now,
                lookback=SCORE_LOOKBACK,
                suffix=LATENCY_SUFFIX,
                compute=self.compute,
            )
            return self._store_scores(scored, now)
        history = self.store.query(
            f"""SELECT s.series_id, s.host, s.metric, s.labels, x.ts, x.value
                FROM samples x JOIN series s USING (series_id)
                WHERE suffix(s.metric, '{LATENCY_SUFFIX}') AND x.ts > ? AND x.ts <= ?
                ORDER BY s.series_id, x.ts""",
            [now - SCORE_LOOKBACK, now],
        )
        if history.empty:
            return history.assign(score=pd.Series(dtype="float64"))
        history["score"] = self.models.score(history[["series_id", "ts", "value"]])
        return self._store_scores(history.assign(model=_SCORER), now)

    def _store_scores(self, history: pd.DataFrame, now: datetime) -> pd.DataFrame:
        """Append the scores of the points not scored before; return ``history``."""
        if history.empty:
            return history
        done = self.store.query(
            "SELECT series_id, max(ts) AS until FROM anomaly_scores GROUP BY series_id"
        ).set_index("series_id")["until"]
        until = history["series_id"].map(done)
        new = history[until.isna() | (history["ts"] > until)]
        if not new.empty:
            rows = new[["series_id", "ts", "value", "score"]].copy()
            rows.insert(0, "made_at", now)
            rows["model"] = new["model"]  # the fallback's name where a partition needed it
            self.store.append("anomaly_scores", rows)
        return history

    def observe(self, now: datetime, rules: list[Rule] | None = None) -> Observations:
        """What the policy sees at ``now``: recent samples, predictions, anomaly scores."""
        rules = self.pipeline.rules if rules is None else rules
        metrics = sorted({r.when.metric for r in rules if not isinstance(r.when, AlertWhen)})
        samples = self.store.query(
            """SELECT s.series_id, s.host, s.metric, s.labels, s.capacity, x.ts, x.value
               FROM samples x JOIN series s USING (series_id)
               WHERE list_contains(?, s.metric) AND x.ts > ? AND x.ts <= ?
               ORDER BY s.series_id, x.ts""",
            [metrics, now - lookback(rules), now],
        )
        return Observations(samples, self.store.latest_predictions(), pd.DataFrame())

    def remediate(self) -> dict[str, Any]:
        now = self.clock()
        predicted = self.predict(now)
        scores = self.score_anomalies(now)
        obs = dataclasses.replace(self.observe(now), scores=scores)
        # Pure but heavy over a fleet: where the model work runs (a worker process).
        decisions, holding = self.models.decide(
            self.pipeline, obs, now, dict(self._recent), self.settings.fix_mode
        )
        self._quiet = {k: v for k, v in self._quiet.items() if k in holding}
        decisions = [rd for rd in decisions if rd.key not in self._quiet]
        self._firing = (now, self._resource_conditions(holding, obs))
        target_states = self.target_states(now)
        runnable: list[RuleDecision] = []
        inhibited = held = 0
        for rd in decisions:
            rd = dataclasses.replace(rd, mode=self.effective_mode(rd.decision, rd.mode))
            if self._inhibit(rd, target_states, now):
                inhibited += 1
            elif self.holds.hold(rd, now, self.record_decision):
                held += 1  # a silence or the pause: recorded once per hold, not acted on
            else:
                runnable.append(rd)
        states: Counter[str] = Counter()
        for records in self._act_parallel(runnable, now):
            for record in records:
                states[record.state] += 1
        scored = self.score_decisions(now)
        judged = self.judge_fixes(self.clock())  # the fixes above finished after `now`
        return {
            "predictions": predicted,
            "scored_points": len(scores),
            "decisions": len(decisions),
            "inhibited": inhibited,
            "held": held,
            "fixes": dict(states),
            "outcomes_scored": scored,
            "fixes_judged": judged,
        }

    def judge_fixes(self, now: datetime) -> int:
        """Outcomes of the fixes that finished (``autofix.outcomes``)."""
        from autofix.outcomes import judge_fixes

        return judge_fixes(
            self.store,
            self.pipeline,
            now,
            window=self.settings.fix_outcome_window,
            host=self.settings.hostname,
            settle=self.settings.fix_settle,
        )

    def _inhibit(self, rd: RuleDecision, states: TargetStates, now: datetime) -> bool:
        """Whether a dependency (or the target's own fix) explains this decision.

        An inhibited decision is recorded once per inhibitor (mode ``inhibited``) and
        not acted on; it is not remembered as decided, so the next run decides again.
        """
        acting = [c.target for c in rd.decision.candidates]
        if rd.about is not None and rd.about not in acting:
            states = states.without_unhealthy(rd.about)  # the symptom's own target fails
        for name in acting:
            states = states.without_unhealthy(name)
        found = inhibitor(
            self.pipeline,
            symptom=rd.about,
            acting_on=acting,
            states=states,
            symptom_only=rd.symptom,
        )
        if found is None:
            self._inhibited.pop(rd.key, None)
            return False
        if self._inhibited.get(rd.key) != found.target:
            self._inhibited[rd.key] = found.target
            log.info("decision %s inhibited by %s: %s", rd.decision.id, found.target, found.reason)
            inputs = {**dict(rd.inputs), "inhibited_by": found.target}
            self.record_decision(
                dataclasses.replace(
                    rd,
                    mode="inhibited",
                    reason=f"{rd.reason}; inhibited by {found.reason}",
                    inputs=inputs,
                ),
                now,
            )
        return True

    def _act_parallel(self, decisions: list[RuleDecision], now: datetime) -> list[list[Any]]:
        """Act on decisions; those about different targets side by side, each target's in
        order (the executor admits one fix at a time through its gates)."""
        by_target: dict[str, list[RuleDecision]] = {}
        for rd in decisions:
            by_target.setdefault(rd.target or rd.subject, []).append(rd)
        if len(by_target) <= 1:
            return [self._act(rd, now) for rd in decisions]

        def act_all(group: list[RuleDecision]) -> list[list[Any]]:
            return [self._act(rd, now) for rd in group]

        from concurrent.futures import ThreadPoolExecutor

        workers = min(8, len(by_target))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="act") as pool:
            groups = list(pool.map(act_all, by_target.values()))
        return [records for group in groups for records in group]

    def target_states(
        self, now: datetime, health: list[HealthResult] | None = None
    ) -> TargetStates:
        """What is known about each target now: unhealthy, planned, fixes running,
        waiting for approval or settling (``autofix.depends``)."""
        if health is not None:
            self._health = (now, health)
        unhealthy: dict[str, str] = {}
        planned: dict[str, str] = {}
        health_every = self.pipeline.job("health").every or timedelta(seconds=30)
        collect_every = self.pipeline.job("collect").every or self.settings.collect_interval
        if self._health is not None and now - self._health[0] <= 3 * health_every:
            reports: list[tuple[str, str]] = []
            for result in self._health[1]:
                if result.ok:
                    continue
                where = planned if result.cause == "planned" else unhealthy
                where[result.target] = f"{result.cause or 'down'}: {result.detail}"
                if result.cause == "dependency" and result.dependency:
                    reports.append((result.target, result.dependency))
            for dependency, names in named_failing(self.pipeline, reports).items():
                if dependency not in planned:
                    unhealthy.setdefault(dependency, f"named failing by {', '.join(names)}")
        else:
            for name, value in self._latest("autofix_health_up", now, 3 * health_every).items():
                if value < 1.0:
                    unhealthy.setdefault(name, "health check failing")
        for name, value in self._latest("probe_up", now, 3 * collect_every).items():
            if value < 1.0 and name not in planned:
                unhealthy.setdefault(name, "probe down")
        running: dict[str, str] = {}
        pending: dict[str, str] = {}
        settling: dict[str, str] = {}
        settle = self.settings.fix_settle
        symptoms = self._fix_symptoms(now - max(settle, timedelta(hours=2)))
        for past in self.executor.audit.history(now - max(settle, timedelta(hours=2))):
            what = f"fix {past.fix_id} ({past.action})"
            # A fix holds its target, and the target whose symptom it answers (terminate
            # idle sessions on the server because the application's role was refused).
            held = {past.target, *symptoms.get(past.fix_id, ())}
            if past.state == "running":
                running.update(dict.fromkeys(held, f"{what} running"))
            elif past.state == "pending_approval":
                pending.update(dict.fromkeys(held, f"{what} waiting for approval"))
            elif (
                past.state == "succeeded"
                and past.finished_at is not None
                and now - past.finished_at < settle
            ):
                why = (
                    f"{what} verified at {past.finished_at:%H:%M:%S}, settling until "
                    f"{past.finished_at + settle:%H:%M:%S}"
                )
                settling.update(dict.fromkeys(held, why))
        remediate_every = self.pipeline.job("remediate").every or timedelta(minutes=1)
        seen_at, firing = self._firing
        if seen_at is None or not timedelta(0) <= now - seen_at <= 3 * remediate_every:
            firing = {}
        return TargetStates(unhealthy, planned, running, pending, settling, firing)

    def check_health(self, target: Target) -> HealthResult:
        """One health check of ``target`` now, as the health job makes it."""
        return check_target(
            target,
            self.settings.probe_timeout.total_seconds(),
            runner=self.runner,
            http_transport=self.http_transport,
            pipeline=self.pipeline,
        )

    def _resource_conditions(self, holding: set[str], obs: Observations) -> dict[str, str]:
        """The targets a resource condition holds on (rule name per target): conditions of
        rules that act (not ``off`` or ``shadow``) and are not about a symptom, decided
        this run or not (a fix waiting for its cooldown leaves the condition holding)."""
        labels: dict[int, str] = {}
        for frame in (obs.samples, obs.predictions):
            if not frame.empty and {"series_id", "labels"} <= set(frame.columns):
                pairs = frame[["series_id", "labels"]].drop_duplicates("series_id")
                labels.update(zip(pairs["series_id"].astype(int), pairs["labels"], strict=True))
        firing: dict[str, str] = {}
        for key in sorted(holding):
            name, _, subject = key.partition("|")
            rule = self.pipeline.rule(name)
            if rule is None or not is_resource_trouble(rule):
                continue
            if not subject.startswith("series:"):
                continue
            text = labels.get(int(subject.removeprefix("series:")))
            about = parse_labels(text).get("target") if text else None
            if about and self.pipeline.target(about) is not None:
                firing.setdefault(about, f"rule {name} holds")
        return firing

    def _fix_symptoms(self, since: datetime) -> dict[int, tuple[str, ...]]:
        """Fix id → the declared target whose series triggered it, for recent fixes."""
        rows = self.store.query(
            """SELECT fix_id, json_extract_string(inputs, '$.labels.target') AS about
               FROM fixes WHERE requested_at >= ?""",
            [since],
        )
        return {
            int(r["fix_id"]): (str(r["about"]),)
            for r in rows.to_dict("records")
            if isinstance(r["about"], str) and self.pipeline.target(r["about"]) is not None
        }

    def _latest(self, metric: str, now: datetime, within: timedelta) -> dict[str, float]:
        """The newest value of ``metric`` per ``target`` label, if fresh within ``within``."""
        rows = self.store.query(
            """SELECT s.labels, arg_max(x.value, x.ts) AS value
               FROM samples x JOIN series s USING (series_id)
               WHERE s.metric = ? AND s.host = ? AND x.ts > ? AND x.ts <= ?
               GROUP BY s.labels""",
            [metric, self.settings.hostname, now - within, now],
        )
        out: dict[str, float] = {}
        for row in rows.to_dict("records"):
            name = parse_labels(str(row["labels"])).get("target")
            if name:
                out[name] = float(row["value"])
        return out

    def effective_mode(self, decision: Decision, fallback: str) -> str:
        """The mode the executor will apply to the first candidate (dry run wins)."""
        if not decision.candidates:
            return fallback
        first = decision.candidates[0]
        policy = resolve_policy(self.settings, self.pipeline, first.action, first.target)
        policy = policy.override(first.gates)
        return "dry_run" if policy.dry_run else policy.mode

    def _act(
        self,
        rd: RuleDecision,
        now: datetime,
        *,
        source: str = "policy",
        requested_by: str | None = None,
    ) -> list[Any]:
        """Record the decision, then run it (or escalate when nothing can be tried)."""
        self.record_decision(rd, now, source=source)
        self._recent[rd.key] = now
        if not rd.decision.candidates:
            if rd.mode not in {"shadow", "off", "dry_run"}:
                self.executor.audit.escalate(
                    None, "-", rd.target or rd.subject, None, f"manual intervention: {rd.reason}"
                )
            return []
        rule = self.pipeline.rule(rd.rule)
        condition = None
        if rule is not None and rd.mode not in {"shadow", "off", "dry_run"}:
            condition = rule_condition(
                rd,
                rule,
                self.store,
                self.collect_now,
                self.collector_names(),
                self.settings.hostname,
            )
        if condition is not None:
            condition = _AfterFix(condition, self, rd)
        records = self.executor.run_decision(
            rd.decision, requested_by=requested_by or f"rule:{rd.rule}", condition=condition
        )
        if records and all(r.state == "noop" for r in records):
            # Nothing to do (0 dead tuples): not again while the condition keeps holding.
            self._quiet[rd.key] = records[-1].error or "no-op"
        return records

    def collector_names(self) -> set[str]:
        """Names of the collectors this service runs (``host`` and one per target)."""
        return {c.name for c in self._get_collectors()}

    def _get_collectors(self) -> list[Any]:
        from autofix.collect.registry import build_collectors

        if self._collectors is None:
            self._collectors = build_collectors(self.pipeline, self.settings)
        return self._collectors

    def collect_now(self, name: str) -> list[Any]:
        """Run the collector called ``name`` once now, store what it saw, return the samples.

        A fresh instance, not the collect job's: that one keeps state between its cycles
        (CPU deltas, growth rates) that a verify in between must not disturb.
        """
        from autofix.collect.base import samples_to_frame
        from autofix.collect.registry import build_collectors, close_collectors

        fresh = [c for c in build_collectors(self.pipeline, self.settings) if c.name == name]
        try:
            samples = [s for c in fresh for s in c.collect()]
        finally:
            close_collectors(fresh)
        if samples:
            self.store.write(samples_to_frame(samples, self.settings.hostname, self.clock()))
        return samples

    def handle_alerts(
        self, alerts: list[Alert], *, actor: str = "alertmanager"
    ) -> list[dict[str, Any]]:
        """Alertmanager alerts → ``type: alert`` rules → decisions, recorded and run (as remediate).

        One entry per verdict of ``policy.judge_alerts``; only ``decided`` ones write
        (a decision with source ``alert``, its fixes requested by ``actor``).
        """
        now = self.clock()
        verdicts = judge_alerts(
            self.pipeline.rules, self.pipeline, alerts, now, self._recent, self.settings.fix_mode
        )
        out = []
        for verdict in verdicts:
            entry: dict[str, Any] = {
                "alertname": verdict.alert.name,
                "fingerprint": verdict.alert.fingerprint,
                "rule": verdict.rule,
                "outcome": verdict.outcome,
                "reason": verdict.reason,
                "decision_id": None,
                "mode": None,
                "target": None,
                "fixes": [],
            }
            if verdict.decision is not None:
                rd = verdict.decision
                rd = dataclasses.replace(rd, mode=self.effective_mode(rd.decision, rd.mode))
                hold = self.holds.hold(
                    rd, now, lambda held, at: self.record_decision(held, at, source="alert")
                )
                if hold is not None:  # silenced or paused: recorded (once), not acted on
                    entry.update(decision_id=rd.decision.id, mode=hold.mode, target=rd.target)
                    entry["reason"] = f"{verdict.reason}; {hold.reason}"
                    out.append(entry)
                    continue
                records = self._act(rd, now, source="alert", requested_by=actor)
                entry.update(decision_id=rd.decision.id, mode=rd.mode, target=rd.target)
                entry["fixes"] = [r.as_dict() for r in records]
            out.append(entry)
        return out

    def record_decision(self, rd: RuleDecision, now: datetime, source: str = "policy") -> None:
        with self.store._write_lock:
            self.store.execute(
                "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    rd.decision.id,
                    now,
                    rd.detected_at,
                    rd.rule,
                    rd.kind,
                    source,
                    rd.subject,
                    rd.series_id,
                    rd.target,
                    rd.mode,
                    rd.score_at,
                    rd.reason,
                    json.dumps(dict(rd.inputs), default=str),
                ],
            )
        log.info(
            "decision",
            extra={
                "decision_id": rd.decision.id,
                "rule": rd.rule,
                "kind": rd.kind,
                "source": source,
                "subject": rd.subject,
                "target": rd.target,
                "mode": rd.mode,
                "candidates": [c.action for c in rd.decision.candidates],
                "reason": rd.reason[:500],
            },
        )

    def _load_recent(self) -> dict[str, datetime]:
        frame = self.store.query(
            "SELECT rule, subject, max(ts) AS ts FROM decisions GROUP BY rule, subject"
        )
        return {
            f"{row['rule']}|{row['subject']}": pd.Timestamp(row["ts"]).to_pydatetime()
            for row in frame.to_dict("records")
        }

    def score_decisions(self, now: datetime) -> int:
        """Score shadow and dry-run decisions whose horizon has passed."""
        due = self.store.query(
            """SELECT d.decision_id, d.ts, d.rule, d.series_id, d.score_at
               FROM decisions d ANTI JOIN decision_outcomes o USING (decision_id)
               WHERE d.mode IN ('shadow', 'dry_run') AND d.score_at <= ?
                 AND d.series_id IS NOT NULL""",
            [now],
        )
        scored = 0
        for row in due.to_dict("records"):
            rule = self.pipeline.rule(str(row["rule"]))
            if rule is None:
                continue
            decided_at = pd.Timestamp(row["ts"]).to_pydatetime()
            score_at = pd.Timestamp(row["score_at"]).to_pydatetime()
            after = self._after(rule, int(row["series_id"]), decided_at, score_at)
            verdict = score_outcome(rule, decided_at, after)
            if verdict is None:
                # Nothing to judge by: wait an hour for late samples, then count it as
                # real (a silent series is not evidence that the fix was unneeded).
                if now - score_at < timedelta(hours=1):
                    continue
                verdict = (True, "no samples after the decision: counted as real")
            with self.store._write_lock:
                self.store.execute(
                    "INSERT INTO decision_outcomes VALUES (?, ?, ?, ?)",
                    [row["decision_id"], now, verdict[0], verdict[1]],
                )
            scored += 1
        return scored

    def _after(self, rule: Rule, series_id: int, start: datetime, end: datetime) -> pd.DataFrame:
        if rule.when.type == "anomaly":
            return self.store.query(
                """SELECT a.ts, a.value, a.score, s.metric, s.capacity FROM anomaly_scores a
                   JOIN series s USING (series_id)
                   WHERE a.series_id = ? AND a.ts > ? AND a.ts <= ? ORDER BY a.ts""",
                [series_id, start, end],
            )
        after = self.store.query(
            """SELECT x.ts, x.value, s.metric, s.capacity FROM samples x
               JOIN series s USING (series_id)
               WHERE x.series_id = ? AND x.ts > ? AND x.ts <= ? ORDER BY x.ts""",
            [series_id, start, end],
        )
        if isinstance(rule.when, BaselineWhen):
            split = start - rule.when.window
            past = self.store.query(
                "SELECT median(value) AS m FROM samples WHERE series_id = ? AND ts < ? AND ts >= ?",
                [series_id, split, split - rule.when.baseline],
            )
            after.attrs["baseline_median"] = float(past["m"].iloc[0])
        return after

    # -- health (self-healing) -------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._healer.run()

    # -- the other jobs ----------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        from pathlib import Path

        if self.compute.scheduler:
            # The backtest's partitions go to the Dask cluster from here; the MLflow run
            # is logged where the models directory is.
            from autofix.training import train_and_register

            result = train_and_register(
                self.settings.models_dir, Path(self.scenarios), compute=self.compute
            )
        else:
            result = self.models.train(self.settings.models_dir, Path(self.scenarios))
        if result.promoted:
            self.model(refresh=True)
        return result.as_dict()

    def maintenance(self) -> dict[str, Any]:
        from autofix.maintenance import Maintenance

        now = self.clock()
        planner = Maintenance(
            self.store,
            self.pipeline,
            self.settings,
            self.executor,
            clock=self.clock,
            runner=self.runner,
        )
        planned = planner.plan_and_record(now)
        # While paused, due tasks wait (their window may pass: they are then `missed`).
        executed = [] if self.holds.paused(now) else planner.execute_due(now)
        upgradable = self._record_upgradable(now)
        return {"planned": len(planned), "executed": len(executed), "upgradable": upgradable}

    def _record_upgradable(self, now: datetime) -> dict[str, int] | None:
        """``autofix_upgradable_packages{kind=security|all}``: what rules about patches read."""
        from autofix.errors import ActionError
        from autofix.maintenance import parse_upgradable

        argv = self.pipeline.maintenance.upgradable_argv
        try:
            done = self.runner(argv, 120.0)
        except ActionError as exc:
            log.info("cannot list upgradable packages: %s", exc)
            return None
        if done.returncode != 0:
            log.info("%s exited %d", argv[0], done.returncode)
            return None
        packages = parse_upgradable(done.stdout)
        counts = {"security": sum(p.security for p in packages), "all": len(packages)}
        frame = pd.DataFrame(
            {
                "ts": [now, now],
                "host": [self.settings.hostname] * 2,
                "metric": ["autofix_upgradable_packages"] * 2,
                "labels": ['{"kind":"security"}', '{"kind":"all"}'],
                "value": [float(counts["security"]), float(counts["all"])],
                "unit": ["count", "count"],
                "capacity": [float("nan")] * 2,
            }
        )
        self.store.write(frame)
        return counts

    def kpi(self) -> dict[str, Any]:
        from autofix.kpi import compute_kpis, snapshot_kpis
        from autofix.tracking import Tracker

        now = self.clock()
        self.judge_fixes(now)
        kpis = compute_kpis(self.store, now, manual_mttr=self.settings.kpi_manual_mttr)
        snapshot_kpis(self.store, kpis, now)
        values = {
            k: float(v)
            for k, v in kpis.as_dict().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        Tracker(self.settings.models_dir).log_metrics_run("kpi", values)
        return values

    def report(self) -> dict[str, Any]:
        from autofix.kpi import compute_kpis
        from autofix.report import write_report

        now = self.clock()
        out_dir = self.settings.report_dir / f"{now:%Y-%m-%d}"
        path = write_report(self.store, out_dir, now, manual_mttr=self.settings.kpi_manual_mttr)
        if self.notifier is not None:
            from autofix.notify import report as report_note

            kpis = compute_kpis(self.store, now, manual_mttr=self.settings.kpi_manual_mttr)
            self.notifier.notify(report_note(str(path), kpis.as_dict()))
        return {"report": str(path)}

    def retention(self) -> dict[str, Any]:
        result = self.store.apply_retention(
            self.clock(), self.settings.raw_retention, self.settings.rollup_retention
        )
        return {k: str(v) if isinstance(v, datetime) else v for k, v in vars(result).items()}

    def snapshot(self) -> dict[str, Any]:
        manifest = self.store.export_parquet(self.settings.snapshot_dir)
        return {"dir": str(self.settings.snapshot_dir), "rows": manifest["rows"]}

    # -- notifications ----------------------------------------------------------------

    def _count(self, table: str) -> int:
        return int(self.store.query(f"SELECT count(*) AS n FROM {table}")["n"].iloc[0])

    def _notify_new(self) -> None:
        """Escalations and pending approvals that appeared since the last job."""
        if self.notifier is None:
            return
        with self._notify_lock:  # jobs finish on several scheduler threads
            self._notify_unsent(self.notifier)

    def _notify_unsent(self, notifier: Any) -> None:
        from autofix.notify import approval
        from autofix.notify.incidents import Incidents

        if self._incidents is None:
            self._incidents = Incidents(self.store, self.pipeline, self.settings, self.clock())
        fresh = self.store.query(
            "SELECT * FROM escalations ORDER BY ts, rowid OFFSET ?", [self._notified_escalations]
        )
        self._notified_escalations += len(fresh)
        for row in fresh.to_dict("records"):
            notifier.notify(self._incidents.escalated(row))  # carries incident key and runbook
        for note in self._incidents.resolutions():  # a fix verified or the target recovered
            notifier.notify(note)
        for record in self.executor.audit.list(limit=100, state="pending_approval"):
            if record.id in self._notified_pending:
                continue
            self._notified_pending.add(record.id)
            policy = self.executor._policy(record)
            notifier.notify(
                approval(
                    record.id,
                    record.action,
                    record.target,
                    record.requested_at + policy.approval_ttl,
                    runbook=self._incidents.runbook_for_fix(record.id),
                )
            )


class _AfterFix:
    """A rule's condition, and how to read it once the fix ran.

    Before the fix it is the condition as it is (cleared already: the fix is not needed).
    After the fix, a condition that still holds while a dependency of the symptom's target
    is in trouble is that dependency's, not this fix's: a hung worker restarted during a
    database outage answers 503 because of the database — the hang is gone, the fix did
    its part (as a recovery's verify reads it). The outcome judged later still says
    whether the symptom cleared.
    """

    def __init__(self, condition: Callable[[], Check], service: Service, rd: RuleDecision):
        self.condition = condition
        self.service = service
        self.rd = rd

    def __call__(self) -> Check:
        return self.condition()

    def after_fix(self) -> Check:
        check = self.condition()
        if check.ok:
            return check
        acting = [c.target for c in self.rd.decision.candidates if c.target]
        states = self.service.target_states(self.service.clock())
        found = explained_by(
            self.service.pipeline, symptom=self.rd.about, acting_on=acting, states=states
        )
        if found is not None:
            return Check(True, f"{check.reason}; left to {found.target}: {found.reason}")
        # The dependency's own check may not show it yet: the target fixed answers now,
        # and names the dependency that fails (a restarted worker's 503 naming the
        # database whose connections just ran out).
        for name in acting:
            target = self.service.pipeline.target(name)
            if target is None or not has_check(target):
                continue
            now = self.service.check_health(target)
            if now.cause == "dependency" and now.dependency:
                return Check(
                    True,
                    f"{check.reason}; left to {now.dependency}: {name} answers and names it "
                    f"failing: {now.detail}",
                )
        return check


__all__ = ["JobRun", "Service", "build_scheduler", "utcnow"]
