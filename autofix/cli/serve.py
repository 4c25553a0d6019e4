"""``autofix serve`` (the scheduled jobs), ``autofix run JOB`` (one job once), ``autofix jobs``."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autofix.cli._app import (
    app,
    live_service,
    print_json,
    reader,
    settings,
    words,
    writer,
)
from autofix.errors import ActionError, InputError, StoreLockedError
from autofix.jobnames import JOB_NAMES

if TYPE_CHECKING:
    from autofix.config import Settings
from autofix.cli._render import Col, say, show, table

#: `autofix status` leaves out forecasts of series silent for longer than this.
STALE_SERIES = timedelta(hours=1)


def _notifier(current: Settings) -> Any | None:
    """The notifier when a channel is configured (delivery runs on its own thread)."""
    channels = (
        current.notify_slack_url,
        current.notify_webhook_url,
        current.notify_smtp_host,
        current.notify_alertmanager_url,
        current.notify_pagerduty_routing_key,
    )
    if not any(channels):
        return None
    from autofix.notify import Notifier

    notifier = Notifier.from_settings(current)
    if not notifier.channels:
        return None
    notifier.start()
    return notifier


@contextmanager
def _service(current: Settings, models: Any | None = None) -> Iterator[Any]:
    """The live service when one owns the store, else one over the store; ``models``: where
    its model work runs (default: this process)."""
    live = live_service()
    if live is not None:  # carried out by `autofix serve`: its own service, left open
        if current.dry_run and not live.settings.dry_run:
            yield _dry_run_copy(live, current)  # the client asked for AUTOFIX_DRY_RUN
        else:
            yield live
        return
    from autofix.compute import Compute
    from autofix.jobs import Service
    from autofix.pipeline import load_pipeline

    pipeline = load_pipeline(current.pipeline)
    with writer(current) as store:
        # Partitioned fleet work (Dask, a LocalCluster) where AUTOFIX_DASK_SCHEDULER says.
        compute = Compute.from_settings(current)
        service = Service(
            current,
            pipeline,
            store,
            notifier=_notifier(current),
            models=models,
            compute=compute,
        )
        try:
            yield service
        finally:
            service.close()


def _dry_run_copy(live: Any, current: Settings) -> Any:
    """A Service over the live store that plans and applies nothing (its own executor: a
    dry run takes no locks a real fix would need)."""
    from autofix.jobs import Service

    return Service(
        current,
        live.pipeline,
        live.store,
        clock=live.clock,
        runner=live.runner,
        http_transport=live.http_transport,
        compute=live.compute,  # the live service's workers (closed with it, not here)
    )


def _parse_jobs(text: str | None) -> set[str] | None:
    if text is None:
        return None
    chosen = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(chosen - set(JOB_NAMES))
    if unknown:
        raise InputError(f"--jobs: unknown job {unknown[0]!r} (known: {', '.join(JOB_NAMES)})")
    return chosen


@app.command("run")
def run_job(
    job: Annotated[str, typer.Argument(help=f"Job to run once: {', '.join(JOB_NAMES)}.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run one job once (for cron, a Kubernetes CronJob or Airflow); exit 1 if it fails."""
    if job not in JOB_NAMES:
        raise InputError(f"unknown job {job!r} (known: {', '.join(JOB_NAMES)})")
    with _service(settings()) as service:
        if job in {"remediate", "health"} and live_service() is None:
            service.executor.recover()  # never inside the service: its fixes are running
        result = service.run_job(job)
    if as_json:
        print_json(result.as_dict())
    else:
        state = ("ok", "green") if result.ok else ("failed", "red")
        say(f"{job}: ", state, f" in {result.duration_ms / 1000:.2f}s  {words(result.summary)}")
    if not result.ok:
        raise ActionError(f"job {job} failed: {result.error}")


@app.command()
def serve(
    duration: Annotated[
        str | None,
        typer.Option("--duration", help="Stop after this long (default: until signalled)."),
    ] = None,
    jobs: Annotated[
        str | None, typer.Option("--jobs", help="Comma-separated jobs to schedule (default all).")
    ] = None,
    no_api: Annotated[
        bool, typer.Option("--no-api", help="Run no HTTP API (as AUTOFIX_API_PORT=0).")
    ] = False,
) -> None:
    """Run the scheduled jobs (collect, remediate, health, train, …) and the HTTP API.

    The service owns the store: other `autofix` commands on this host are carried out by
    it through its control socket, and other hosts reach it through the API."""
    from autofix.config import parse_duration, systemd_watchdog
    from autofix.control import owner
    from autofix.heartbeat import Heartbeat, interval_for
    from autofix.jobs import build_scheduler

    current = settings()
    running = owner.read(current.db_path)
    if running is not None and running.alive():
        raise StoreLockedError(
            f"{current.db_path} is already served by autofix serve (PID {running.pid}, "
            f"since {running.since}); stop that one first (systemctl stop autofix)"
        )
    heartbeat = Heartbeat(interval_for(current.heartbeat_interval, systemd_watchdog()))
    only = _parse_jobs(jobs)
    try:
        until = parse_duration(duration).total_seconds() if duration else None
    except ValueError as exc:
        raise InputError(f"--duration: {exc}") from None
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with (
            _service(current, _model_workers(current)) as service,
            _control_plane(current, service) as control,
        ):
            recovered = service.executor.recover()
            if recovered:
                say(f"marked {len(recovered)} interrupted fix(es) from a previous run")
            scheduler = build_scheduler(service, only, heartbeat)
            api = None
            if current.api_port and not no_api:
                from autofix.api.app import create_app
                from autofix.api.server import ApiServer

                app = create_app(
                    current,
                    service.store,
                    service=service,
                    scheduler=scheduler,
                    heartbeat=heartbeat,
                )
                api = ApiServer(app, current.api_host, current.api_port, front=True)
                api.start()
            control.announce(api.url if api is not None else None)
            scheduler.start()
            say(f"autofix serving {current.db_path} with {current.pipeline}")
            say(f"  control socket {control.path} (the CLI on this host goes through it)")
            if api is not None:
                say(f"  API on {api.url} (OpenAPI: {api.url}/openapi.json, docs: /docs)")
            for scheduled in scheduler.get_jobs():
                say(f"  {scheduled.id:<12} {scheduled.trigger}")
            # systemd (Type=notify): the store is open, the API listens, the jobs run.
            heartbeat.ready(f"serving {current.db_path}" + (f" on {api.url}" if api else ""))
            started = time.monotonic()
            try:
                while not stop.wait(0.5):
                    if until is not None and time.monotonic() - started >= until:
                        break
            finally:
                heartbeat.stopping()
                if api is not None:
                    api.stop()  # no new operator actions, in-flight requests finish
                scheduler.shutdown(wait=True)
            failed = {k: v for k, v in service.failures.items() if v and "_skipped" not in k}
            skipped = sum(v for k, v in service.failures.items() if "_skipped" in k)
            which = ", ".join(f"{job} {n}" for job, n in sorted(failed.items()))
            say(
                f"stopped: {sum(service.runs.values())} job runs, "
                f"{sum(failed.values())} failed{f' ({which})' if failed else ''}, "
                f"{skipped} skipped while the previous run was still going"
            )
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _model_workers(current: Settings) -> Any | None:
    """Worker processes for the model work (AUTOFIX_MODEL_WORKERS): the API shares this
    interpreter, and a fit of the fleet on a job thread would hold up its requests."""
    if not current.model_workers:
        return None
    from autofix.workers import ModelWorkers

    return ModelWorkers(
        current.model_workers, log_level=current.log_level, log_format=current.log_format
    )


class _ControlPlane:
    """The control socket and the owner record of a running ``autofix serve``."""

    def __init__(self, current: Settings, service: Any) -> None:
        from autofix.control import owner
        from autofix.control.server import ControlServer

        self.db_path = current.db_path
        self.path = owner.socket_path(current.db_path)
        self.server = ControlServer(self.path, service)

    def announce(self, api_url: str | None) -> None:
        from autofix.control import owner

        owner.announce(self.db_path, socket=self.path, api_url=api_url)


@contextmanager
def _control_plane(current: Settings, service: Any) -> Iterator[_ControlPlane]:
    """Listen for the CLI on this host while the store is open; the owner record says
    where. Gone (record, socket) before the store closes."""
    from autofix.control import owner
    from autofix.control.server import routed_std_streams

    plane = _ControlPlane(current, service)
    with routed_std_streams():
        plane.server.start()
        plane.announce(None)  # at once: a CLI that finds the store locked waits for this
        try:
            yield plane
        finally:
            owner.withdraw(current.db_path)
            plane.server.stop()


@app.command("jobs")
def jobs_status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per job.")] = False,
) -> None:
    """Job runs recorded in the store: count, failures, last run and durations."""
    current = settings()
    with reader(current) as store:
        frame = store.query(
            """SELECT job, count(*) AS runs, count(*) FILTER (WHERE NOT ok) AS failures,
                      max(started_at) AS last_run, arg_max(ok, started_at) AS last_ok,
                      arg_max(error, started_at) AS last_error,
                      quantile_cont(duration_ms, 0.5) AS p50_ms,
                      quantile_cont(duration_ms, 0.95) AS p95_ms
               FROM job_runs GROUP BY job ORDER BY job"""
        )
    rows = frame.to_dict("records")
    if as_json:
        for row in rows:
            print_json(row)
        return
    runs = table(
        Col("job", key=True),
        Col("runs", justify="right"),
        Col("failures", justify="right"),
        "last run (UTC)",
        "last",
        Col("p50", justify="right"),
        Col("p95", justify="right"),
    )
    for row in rows:
        runs.add_row(
            str(row["job"]),
            str(row["runs"]),
            str(row["failures"]),
            str(row["last_run"])[:19],
            "ok" if row["last_ok"] else f"failed: {row['last_error']}",
            f"{row['p50_ms'] / 1000:.2f}s",
            f"{row['p95_ms'] / 1000:.2f}s",
        )
    show(runs)


@app.command()
def status(
    top: Annotated[int, typer.Option("--top", help="Rows per table.")] = 10,
    since: Annotated[str, typer.Option("--since", help="Decisions of this last span.")] = "24h",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print everything below as one JSON document.")
    ] = False,
) -> None:
    """What the service sees and did: pause and silences, riskiest series, recent decisions
    and fixes, KPIs."""
    from datetime import UTC, datetime

    import pandas as pd

    from autofix.cli.models import prediction_records, print_riskiest
    from autofix.config import format_duration, parse_duration
    from autofix.kpi import compute_kpis

    current = settings()
    try:
        span = parse_duration(since)
    except ValueError as exc:
        raise InputError(f"--since: {exc}") from None
    now = datetime.now(UTC).replace(tzinfo=None)
    with reader(current) as store:
        latest = store.latest_predictions()
        decisions = store.query(
            """SELECT d.ts, d.rule, d.mode, d.target, d.reason,
                      (SELECT arg_max(e.state, e.seq) FROM fixes f JOIN fix_events e
                         USING (fix_id) WHERE f.decision_id = d.decision_id) AS fix_state
               FROM decisions d WHERE d.ts >= ? ORDER BY d.ts DESC LIMIT ?""",
            [now - span, top],
        )
        kpis = compute_kpis(store, now, manual_mttr=current.kpi_manual_mttr)
        paused, silenced = _holds(store, now)
    # Forecasts of series that stopped reporting describe the past: not risks now.
    fresh = latest
    if len(latest):
        fresh = latest[pd.to_datetime(latest["origin"]) >= now - STALE_SERIES]
    if as_json:
        print_json(
            {
                "now": now,
                "pause": paused.as_dict() if paused is not None else {"paused": False},
                "silences": [s.as_dict(now) for s in silenced],
                "risks": prediction_records(fresh.head(top)),
                "series_left_out": len(latest) - len(fresh),
                "decisions": decisions.to_dict("records"),
                "kpis": kpis.as_dict(),
            }
        )
        return
    if paused is not None:
        say(
            ("PAUSED", "bold red"),
            f": nothing is applied; {paused.describe()} ",
            "(`autofix resume` ends it)",
        )
    for silence in silenced:
        say(
            f"silenced: {silence.describe()} until {silence.end:%Y-%m-%d %H:%M}Z by "
            f"{silence.creator}: {silence.comment}"
        )
    if latest.empty:
        say("no predictions yet (run `autofix run remediate`)")
    else:
        if fresh.empty:
            say(f"no series has reported in the last {format_duration(STALE_SERIES)}")
        else:
            print_riskiest(fresh, top)
        if len(fresh) < len(latest):
            say(
                f"({len(latest) - len(fresh)} series silent for more than "
                f"{format_duration(STALE_SERIES)} left out, e.g. imported history)"
            )
    made = table(
        "when (UTC)",
        Col("rule", key=True),
        "mode",
        "target",
        "fix",
        "why",
        title=f"decisions in the last {since} ({len(decisions)} shown)",
    )
    for row in decisions.to_dict("records"):
        made.add_row(
            str(row["ts"])[:19],
            str(row["rule"]),
            str(row["mode"]),
            str(row["target"] or "-"),
            str(row["fix_state"] or "-"),
            str(row["reason"])[:120],
        )
    if len(decisions):
        show(made)
    else:
        say(f"no decisions in the last {since}")
    rate = kpis.auto_fix_success_rate
    ffr = kpis.false_fix_rate
    say(
        f"KPIs (30d): success rate {'n/a' if rate is None else f'{rate:.0%}'}, "
        f"false-fix rate {'n/a' if ffr is None else f'{ffr:.2%}'} "
        f"({kpis.scored_decisions} shadow decisions scored, {kpis.labelled_fixes} labelled), "
        f"escalations {kpis.escalations}, pending approvals {kpis.pending_approvals}"
    )


def _holds(store: Any, now: Any) -> tuple[Any, list[Any]]:
    """The pause and the active silences; none from a snapshot older than those tables."""
    from autofix import pause, silences

    try:
        return pause.current(store, now), silences.in_force(store, now)
    except Exception:  # a snapshot written by an older autofix has no such view
        if store.snapshot is None:
            raise
        return None, []
