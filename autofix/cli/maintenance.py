"""Commands over preventive maintenance: ``maintenance plan|list``.

``plan`` derives the needs, places them in maintenance windows and records the new
tasks; it prints every task and need it touched (new, kept, unscheduled, cancelled,
missed). ``list`` prints the recorded tasks with their current state. Executing due
tasks is the ``maintenance`` job (``autofix run maintenance`` / ``autofix serve``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autofix.cli._app import app, client_path, live_service, print_json, settings, writer
from autofix.cli._render import Col, show, table
from autofix.errors import InputError

if TYPE_CHECKING:
    from autofix.maintenance import Maintenance

maintenance_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's help renderer takes ~0.5 s to import
    help="Preventive maintenance: needs planned into maintenance windows, executed on time.",
    no_args_is_help=True,
)
app.add_typer(maintenance_app, name="maintenance")

PipelineOpt = Annotated[
    Path | None,
    typer.Option(
        "--pipeline",
        help="Pipelines file with the targets (else AUTOFIX_PIPELINE).",
        parser=client_path,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@contextmanager
def _maintenance(pipeline_file: Path | None) -> Iterator[Maintenance]:
    from autofix.maintenance import Maintenance
    from autofix.pipeline import load_pipeline

    current = settings()
    live = live_service()
    if live is not None:  # carried out by `autofix serve`: its pipeline and executor
        if pipeline_file is not None and pipeline_file.resolve() != current.pipeline.resolve():
            raise InputError(
                f"--pipeline {pipeline_file}: the service runs {current.pipeline} (or stop it)"
            )
        yield Maintenance(live.store, live.pipeline, current, live.executor, clock=live.clock)
        return
    pipeline = load_pipeline(pipeline_file or current.pipeline)
    with writer(current) as store:
        yield Maintenance(store, pipeline, current)


def _when(text: str | None) -> str:
    return "" if text is None else text.replace("T", " ")[:16]


def _why(row: dict[str, Any]) -> str:
    # A task going to plan says why it is needed; any other state says why it is there.
    if row["state"] in {"planned", "executed"} or not row["state_reason"]:
        return str(row["reason"] or "")
    return str(row["state_reason"])


def _table(rows: list[dict[str, Any]], title: str) -> None:
    from autofix.config import format_duration

    tasks = table(
        Col("id", justify="right"),
        "need",
        "target",
        Col("action", key=True),
        "urgency",
        "due",
        "window",
        "downtime",
        "estimate",
        "state",
        "why",
        title=title,
    )
    for row in rows:
        window = (
            f"{_when(row['window_start'])} - {_when(row['window_end'])[11:]}"
            if row["window_start"]
            else ""
        )
        tasks.add_row(
            "" if row["task_id"] is None else str(row["task_id"]),
            row["need"],
            row["target"],
            row["action"] or "(none)",
            row["urgency"],
            _when(row["due_by"]),
            window,
            "yes" if row["downtime"] else "no",
            format_duration(timedelta(seconds=round(float(row["estimated_s"])))),
            row["state"],
            _why(row)[:200],
        )
    show(tasks)


@maintenance_app.command("plan")
def maintenance_plan(as_json: JsonOpt = False, pipeline: PipelineOpt = None) -> None:
    """Derive the maintenance needs, plan them into windows and record the new tasks."""
    with _maintenance(pipeline) as maintenance:
        rows = maintenance.record_plan().rows()
    if as_json:
        print_json(rows)
        return
    _table(rows, "maintenance plan")


@maintenance_app.command("list")
def maintenance_list(
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            help="Only tasks in this state: planned, started, executed, failed, cancelled, missed.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    pipeline: PipelineOpt = None,
) -> None:
    """The recorded maintenance tasks with their current state, oldest first."""
    from autofix.maintenance import TASK_STATES

    if state is not None and state not in TASK_STATES:
        raise InputError(f"--state {state!r}: use one of {', '.join(TASK_STATES)}")
    with _maintenance(pipeline) as maintenance:
        rows = maintenance.tasks(state)
    if as_json:
        print_json(rows)
        return
    _table(rows, "maintenance tasks")
