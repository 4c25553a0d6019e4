"""``autofix serve`` (the scheduled jobs), ``autofix run JOB`` (one job once), ``autofix jobs``."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import Annotated, Any

import typer

from autofix.cli._app import app, print_json, reader, settings, writer
from autofix.cli._render import Col, say, show, table
from autofix.config import Settings, format_duration, parse_duration
from autofix.errors import ActionError, InputError
from autofix.pipeline import JOB_NAMES, load_pipeline

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
def _service(current: Settings, *, offload: bool = False) -> Iterator[Any]:
    from autofix.compute import Compute
    from autofix.jobs import Service

    pipeline = load_pipeline(current.pipeline)
    with writer(current) as store:
        # serve: model work in worker processes, off the API's interpreter (issue 12).
        compute = Compute.from_settings(current, offload=offload)
        service = Service(current, pipeline, store, notifier=_notifier(current), compute=compute)
        try:
            yield service
        finally:
            service.close()


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
        if job in {"remediate", "health"}:
            service.executor.recover()
        result = service.run_job(job)
    if as_json:
        print_json(result.as_dict())
    else:
        state = ("ok", "green") if result.ok else ("failed", "red")
        summary = ", ".join(f"{k} {v}" for k, v in result.summary.items())
        say(f"{job}: ", state, f" in {result.duration_ms / 1000:.2f}s  {summary}")
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
    """Run the scheduled jobs (collect, remediate, health, train, …) and the HTTP API."""
    from autofix.config import systemd_watchdog
    from autofix.heartbeat import Heartbeat, interval_for
    from autofix.jobs import build_scheduler

    current = settings()
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
        with _service(current, offload=True) as service:
            recovered = service.executor.recover()
            if recovered:
                say(f"marked {len(recovered)} interrupted fix(es) from a previous run")
            scheduler = build_scheduler(service, only, heartbeat)
            api = None
            if current.api_port and not no_api:
                from autofix.api import create_app
                from autofix.api.server import ApiServer

                app = create_app(
                    current,
                    service.store,
                    service=service,
                    scheduler=scheduler,
                    heartbeat=heartbeat,
                )
                api = ApiServer(app, current.api_host, current.api_port)
                api.start()
            scheduler.start()
            say(f"autofix serving {current.db_path} with {current.pipeline}")
            if api is not None:
                say(f"  API on {api.url} (OpenAPI: {api.url}/openapi.json)")
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
            say(
                f"stopped: {sum(service.runs.values())} job runs, "
                f"{sum(failed.values())} failed{' ' + str(failed) if failed else ''}, "
                f"{skipped} skipped while the previous run was still going"
            )
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
) -> None:
    """What the service sees and did: riskiest series, recent decisions and fixes, KPIs."""
    from datetime import UTC, datetime

    from autofix.cli.models import print_riskiest
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
    if latest.empty:
        say("no predictions yet (run `autofix run remediate`)")
    else:
        # Forecasts of series that stopped reporting describe the past: not risks now.
        import pandas as pd

        fresh = latest[pd.to_datetime(latest["origin"]) >= now - STALE_SERIES]
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
