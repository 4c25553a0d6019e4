"""``autofix demo``: the whole loop, live, on a real news-delivery stack, then its KPIs.

``run_demo`` starts the stack (``autofix.demo.stack``), renders
``pipelines/news-delivery.yaml`` onto it on a fast clock (``autofix.demo.pipeline``),
runs autofix's service — the same ``Service`` and scheduler as ``autofix serve`` — in
this process, plays the seeded schedule of faults and benign events
(``autofix.demo.faults`` through ``autofix.demo.truth.Recorder``) while the live view
shows the loop at work, then stops the service and measures the five KPIs from the
run's ground truth (``autofix.demo.kpis``) beside those of ``autofix kpi`` on the
demo's store, and writes ``autofix report``. Whatever happens — the end, an error, a
Ctrl-C or a SIGTERM (the caller sets ``stop``) — every process it started is stopped
and its temporary directory removed; only the report directory stays.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from autofix.demo.app import MEMORY_BUDGET
from autofix.demo.faults import Schedule, schedule
from autofix.demo.kpis import GroundTruth, ground_truth
from autofix.demo.pipeline import Endpoints, WorkerEndpoint, compressed_settings, render_pipeline
from autofix.demo.servers import Servers
from autofix.demo.stack import Stack, StackOptions
from autofix.demo.truth import FixRecord, ProbeLog, Recorder, fixes_from_store
from autofix.demo.view import Feed, LiveView
from autofix.logs import file_handler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    """How to run the demo (the CLI's options)."""

    short: bool = False
    seed: int = 0
    servers: Servers = "auto"
    pipeline: Path = Path("pipelines/news-delivery.yaml")
    report_dir: Path = Path("data/reports/demo")
    live: bool = True
    parent: Path | None = None  # where the temporary directory goes
    mount: bool = True
    dashboard: bool = False  # serve the dashboard on 127.0.0.1 while the demo runs


@dataclass
class DemoResult:
    """What a run did: ground truth, autofix's own KPIs, the report, what it started."""

    seconds: float
    schedule: Schedule
    truth: GroundTruth | None
    autofix_kpis: dict[str, Any] | None
    report: Path | None
    fixes: list[FixRecord]
    stack: list[str]
    pipeline_notes: list[str]
    base: Path | None
    dirs: list[Path] = field(default_factory=list)
    pids: dict[str, list[int]] = field(default_factory=dict)
    jobs: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # Unix seconds each phase began
    interrupted: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "seed": self.schedule.seed,
            "short": self.schedule.short,
            "speedup": self.schedule.speedup,
            "manual_response_s": self.schedule.manual_response,
            "interrupted": self.interrupted,
            "error": self.error,
            "stack": self.stack,
            "pipeline_notes": self.pipeline_notes,
            "base": str(self.base) if self.base else None,
            "dirs": [str(d) for d in self.dirs],
            "pids": self.pids,
            "jobs": self.jobs,
            "phases": {k: round(v, 2) for k, v in self.phases.items()},
            "truth": self.truth.as_dict() if self.truth else None,
            "autofix_kpi": self.autofix_kpis,
            "report": str(self.report) if self.report else None,
            "fixes": [f.as_dict() for f in self.fixes],
        }


def endpoints(stack: Stack) -> Endpoints:
    """Where the pipeline's targets point on this stack."""
    assert stack.supervisor is not None
    assert stack.postgres is not None
    assert stack.redis is not None
    return Endpoints(
        supervisor_url=stack.supervisor.url,
        workers=[
            WorkerEndpoint(w.name, w.program, w.health_url, w.cmdline, MEMORY_BUDGET)
            for w in stack.workers
        ],
        postgres_dsn=stack.postgres.admin_dsn,
        redis_url=stack.redis.url,
        logs=stack.logs,
        logs_quota=stack.quota,
        scratch=stack.base / "dirs",
    )


def demo_environment(stack: Stack, speedup: float) -> dict[str, str]:
    """The AUTOFIX_* settings of the demo's service (and of the CLI run on its store)."""
    return {
        "AUTOFIX_DB_PATH": str(stack.base / "autofix.duckdb"),
        "AUTOFIX_SNAPSHOT_DIR": str(stack.base / "snapshot"),
        "AUTOFIX_MODELS_DIR": str(stack.base / "models"),
        "AUTOFIX_QUARANTINE_DIR": str(stack.quarantine),
        "AUTOFIX_REPORT_DIR": str(stack.base / "reports"),
        "AUTOFIX_PIPELINE": str(stack.base / "pipeline.yaml"),
        "AUTOFIX_CONFIG": str(stack.base / "autofix.toml"),
        "AUTOFIX_HOSTNAME": "demo",
        "AUTOFIX_API_PORT": "0",
        **compressed_settings(speedup),
    }


class _Pids:
    """Every pid the stack ran at some point (workers get new ones when restarted)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def add(self, stack: Stack) -> None:
        for name, pid in stack.pids().items():
            mine = self.seen.setdefault(name, [])
            if pid not in mine:
                mine.append(pid)


def run_demo(
    options: DemoOptions,
    console: Console,
    stop: threading.Event,
    *,
    plan: Schedule | None = None,
) -> DemoResult:
    """Run the demo; see the module docstring. ``stop`` ends it early (Ctrl-C, SIGTERM).

    ``plan``: another schedule than the seed's (``benchmarks/faults.py`` adds cascades).
    """
    started = time.monotonic()
    if plan is None:
        plan = schedule(options.seed, short=options.short)
    result = DemoResult(0.0, plan, None, None, None, [], [], [], None)
    pids = _Pids()
    result.pids = pids.seen
    stack = Stack(
        StackOptions(
            servers=options.servers, seed=options.seed, parent=options.parent, mount=options.mount
        )
    )
    result.base = stack.base
    result.phases["start"] = time.time()
    # The service's log as `autofix serve` writes it: JSON lines, library chatter left out.
    handler = file_handler(stack.base / "autofix.log")
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        # Loading the forecaster (MLflow: the champion, else the default) takes seconds:
        # do it while the stack starts.
        preload = threading.Thread(
            target=_preload, args=(stack.base / "models",), name="preload", daemon=True
        )
        preload.start()
        with console.status("starting the news-delivery stack (PostgreSQL, Redis, supervisord)"):
            stack.start()
        preload.join()
        result.phases["stack_up"] = time.time()
        pids.add(stack)
        result.stack = stack.describe()
        for line in result.stack:
            console.print(line, highlight=False)
        if not stop.is_set():
            _run(options, plan, stack, console, stop, result, pids)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        _keep_log(stack.base / "autofix.log", options.report_dir)
        with console.status("stopping the stack and removing its directory"):
            stack.stop()
        result.phases["stopped"] = time.time()
        result.dirs = stack.dirs()
        result.seconds = time.monotonic() - started
        result.interrupted = stop.is_set()
    return result


def _preload(models_dir: Path) -> None:
    from autofix.training import champion_or_default

    try:
        champion_or_default(models_dir)
    except Exception as exc:  # the service loads it again and reports a failure itself
        log.info("preloading the forecaster: %s", exc)


def _keep_log(path: Path, report_dir: Path) -> None:
    with contextlib.suppress(OSError):
        report_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, report_dir / "autofix.log")


def _run(
    options: DemoOptions,
    plan: Schedule,
    stack: Stack,
    console: Console,
    stop: threading.Event,
    result: DemoResult,
    pids: _Pids,
) -> None:
    from autofix.config import load_settings
    from autofix.jobs import Service, build_scheduler
    from autofix.store import MetricStore

    rendered = render_pipeline(options.pipeline, endpoints(stack), plan.speedup)
    result.pipeline_notes = rendered.notes
    pipeline = rendered.write(stack.base / "pipeline.yaml")
    environ = demo_environment(stack, plan.speedup)
    token_file = options.report_dir / "dashboard-token"
    if options.dashboard:
        # A token for this run only, never printed: the page asks for it.
        import secrets

        token = secrets.token_urlsafe(24)
        environ["AUTOFIX_API_TOKENS"] = f"demo:operator:{token}"
        options.report_dir.mkdir(parents=True, exist_ok=True)
        token_file.unlink(missing_ok=True)
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(token + "\n")
    (stack.base / "autofix.toml").write_text("# the demo's settings come from its environment\n")
    settings = load_settings(environ=environ)
    console.print(
        f"pipeline: {options.pipeline} ({len(pipeline.rules)} rules, modes as written), "
        f"clock ×{plan.speedup:g}; human response time {plan.manual_response:g}s",
        highlight=False,
    )
    store = MetricStore(settings.db_path)
    service = Service(settings, pipeline, store)
    scheduler = build_scheduler(service)
    began = time.time()
    recorder = Recorder(stack, plan, busy=lambda targets: _fixing(store, targets))
    probes = ProbeLog(stack.probes)
    workers = {w.url: w.name for w in stack.workers}
    header = [
        *result.stack,
        f"pipeline {options.pipeline}: {len(pipeline.rules)} rules, modes as written; "
        f"clock ×{plan.speedup:g}; human response {plan.manual_response:g}s",
    ]
    api = None
    try:
        with console.status("loading the forecaster (the MLflow champion, else the default)"):
            service.model()  # the first remediate would otherwise spend its time importing
        if options.dashboard:
            api = _dashboard(settings, service, scheduler)
            console.print(
                f"dashboard: {api.url}/ (sign in with the operator token in {token_file})",
                highlight=False,
            )
        scheduler.start()
        with console.status("autofix's first collect, health and remediate runs"):
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                if all(service.runs[job] for job in ("collect", "health", "remediate")):
                    break
                stop.wait(0.2)
        result.phases["service_ready"] = time.time()
        feed = Feed(store, began)
        view = LiveView(console, header, recorder.records, probes.read, workers, options.live)
        recorder.on_change = lambda record: view.note(
            f"{record.event.kind} {record.name}: {record.phase}"
            + (" (operator stepped in)" if record.operator_at and record.phase != "running" else "")
        )
        player = threading.Thread(target=recorder.run, args=(stop,), name="schedule", daemon=True)
        with view:
            player.start()
            while player.is_alive():
                view.add(feed.poll())
                pids.add(stack)
                view.update()
                player.join(timeout=0.5)
            view.add(feed.poll())
            view.update()
    finally:
        result.phases["schedule_done"] = time.time()
        if api is not None:
            api.stop()
        if options.dashboard:
            token_file.unlink(missing_ok=True)
        scheduler.shutdown(wait=True)
        try:
            result.fixes = fixes_from_store(store, began)
            jobs = store.query(
                """SELECT job, count(*) AS runs, count(*) FILTER (WHERE NOT ok) AS failed,
                          quantile_cont(duration_ms, 0.5) AS p50_ms,
                          quantile_cont(duration_ms, 0.95) AS p95_ms
                   FROM job_runs GROUP BY job ORDER BY job"""
            )
            result.jobs = {
                str(r["job"]): {k: r[k] for k in ("runs", "failed", "p50_ms", "p95_ms")}
                for r in jobs.to_dict("records")
            }
            result.jobs["skipped"] = {
                k: v for k, v in service.failures.items() if k.endswith("_skipped")
            }
        finally:
            service.close()
            store.close()  # `autofix kpi` and `autofix report` open it next
    if stop.is_set():
        return
    result.truth = ground_truth(recorder.records, result.fixes, probes.read(), plan.manual_response)
    with console.status("autofix kpi and autofix report on the demo's store"):
        # Two processes at once: each spends most of its time importing.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2) as pool:
            kpis = pool.submit(_autofix_kpi, environ)
            report = pool.submit(_autofix_report, environ, options.report_dir)
            result.autofix_kpis, result.report = kpis.result(), report.result()
    result.phases["end"] = time.time()


def _dashboard(settings: Any, service: Any, scheduler: Any) -> Any:
    """The API and dashboard of the demo's service on 127.0.0.1, a free port."""
    from autofix.api.app import create_app
    from autofix.api.server import ApiServer

    app = create_app(settings, service.store, service=service, scheduler=scheduler)
    api = ApiServer(app, "127.0.0.1", 0, graceful=2.0, front=True)
    api.start()
    return api


def _fixing(store: Any, targets: tuple[str, ...]) -> bool:
    """Whether autofix is applying a fix to one of ``targets`` right now."""
    frame = store.query(
        """SELECT count(*) AS n FROM fixes f
           JOIN (SELECT fix_id, arg_max(state, seq) AS state FROM fix_events GROUP BY fix_id)
           USING (fix_id)
           WHERE state = 'running' AND list_contains(?, f.target)""",
        [list(targets)],
    )
    return bool(frame["n"].iloc[0])


def _cli(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``autofix`` command on the demo's store (its own process, as a user runs it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFIX_")}
    env.update(environ)
    return subprocess.run(
        [sys.executable, "-c", "from autofix.cli import main; main()", *args],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip


def _autofix_kpi(environ: dict[str, str]) -> dict[str, Any] | None:
    done = _cli(environ, "kpi", "--json", "--window", "1h")
    if done.returncode != 0:
        log.error("autofix kpi failed: %s", done.stderr.strip())
        return None
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def _autofix_report(environ: dict[str, str], out: Path) -> Path | None:
    done = _cli(environ, "report", "--out", str(out.resolve()), "--window", "1h")
    if done.returncode != 0:
        log.error("autofix report failed: %s", done.stderr.strip())
        return None
    return Path(done.stdout.strip().splitlines()[-1])


__all__ = ["DemoOptions", "DemoResult", "demo_environment", "endpoints", "run_demo"]
