"""``autofix demo``: the whole loop live on a real news-delivery stack, then its KPIs."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from autofix.cli._app import app, err, out
from autofix.cli._render import say, show
from autofix.errors import ActionError, InputError


@app.command()
def demo(
    short: Annotated[
        bool, typer.Option("--short", help="A shorter schedule on a faster clock (~2 min).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fault schedule.")] = 0,
    servers: Annotated[
        str,
        typer.Option(
            "--servers",
            help="PostgreSQL and Redis: auto (the system's when installed, else the "
            "embedded ones from PyPI), system, or embedded.",
        ),
    ] = "auto",
    pipeline: Annotated[
        Path, typer.Option("--pipeline", help="Pipelines file whose rules the demo runs.")
    ] = Path("pipelines/news-delivery.yaml"),
    report_dir: Annotated[
        Path, typer.Option("--report-dir", help="Where `autofix report` writes (kept).")
    ] = Path("data/reports/demo"),
    result: Annotated[
        Path | None, typer.Option("--json", help="Also write the run's results to this JSON file.")
    ] = None,
    live: Annotated[
        bool | None,
        typer.Option("--live/--no-live", help="Live view (default: when on a terminal)."),
    ] = None,
    tmp: Annotated[
        Path | None, typer.Option("--tmp", help="Parent of the demo's temporary directory.")
    ] = None,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Also serve the dashboard on 127.0.0.1 (a free port) while the demo runs; "
            "its URL is printed, its sign-in token is in a file of the report directory.",
        ),
    ] = False,
) -> None:
    """Start a news-delivery stack, inject faults and benign events, watch autofix fix them.

    Two news-app workers under supervisord, PostgreSQL, Redis, a small log disk, users
    and a prober; autofix's service with the pipeline's rules on a 60x clock. At the end:
    the five KPIs from the run's ground truth beside `autofix kpi`, and the report.
    Everything it started is stopped and removed, also on Ctrl-C.
    """
    from autofix.demo.run import DemoOptions, run_demo
    from autofix.demo.view import kpi_table, outcome_table

    if servers not in {"auto", "system", "embedded"}:
        raise InputError(f"--servers: {servers!r} is not auto, system or embedded")
    if not pipeline.is_file():
        raise InputError(f"--pipeline: {pipeline}: no such file")
    options = DemoOptions(
        short=short,
        seed=seed,
        servers=servers,  # type: ignore[arg-type]
        pipeline=pipeline,
        report_dir=report_dir,
        live=out.is_terminal if live is None else live,
        parent=tmp,
        dashboard=dashboard,
    )
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            say("stopping: cleaning up what the demo started…", console=err)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        run = run_demo(options, out, stop)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if result is not None:
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_text(json.dumps(run.as_dict(), indent=1, default=str), encoding="utf-8")
    if run.interrupted:
        say(f"interrupted after {run.seconds:.0f}s; everything the demo started is stopped")
        raise typer.Exit(130)
    if run.truth is None:
        raise ActionError("the demo ended before its schedule finished")
    fixes = {f.id: f.as_dict() for f in run.fixes}
    # The demo's own tables (autofix.demo.view) over the demo's own scenario data.
    show(outcome_table([e.as_dict() for e in run.truth.events], fixes))
    show(kpi_table(run.truth.kpis(), run.autofix_kpis))
    applied = run.truth.applied_fixes
    say(
        f"{applied} fixes applied, {len(run.truth.false_fixes)} of them false "
        f"(ground truth); the demo took {run.seconds:.0f}s"
    )
    say(f"report: {run.report or '(autofix report failed: see autofix.log)'}")
    say(f"log of autofix's service: {report_dir / 'autofix.log'}")
