"""Commands over fixes: ``fix run|list|show|approve|reject|rollback`` and ``actions``.

``fix run`` exits 0 when the fix succeeded, was planned, is a no-op or waits for
approval; 1 when it was refused by a safety gate, failed or was rolled back; 2 when the
input was bad (unknown action, undeclared target, a parameter outside an allowlist —
those refusals are recorded in the audit log too).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autofix.cli._app import (
    actor,
    app,
    client_path,
    err,
    live_service,
    print_json,
    settings,
    writer,
)
from autofix.cli._render import Col, block, error, say, show, table
from autofix.errors import InputError

if TYPE_CHECKING:
    from autofix.audit import FixRecord

fix_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's help renderer takes ~0.5 s to import
    help="Run, approve and roll back fixes; read the audit log.",
    no_args_is_help=True,
)
app.add_typer(fix_app, name="fix")

_OK = {"succeeded", "planned", "noop", "pending_approval"}
_INPUT_GATES = {"allowlist", "params"}

PipelineOpt = Annotated[
    Path | None,
    typer.Option(
        "--pipeline",
        help="Pipelines file with the targets (else AUTOFIX_PIPELINE).",
        parser=client_path,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _actor() -> str:
    return actor()


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs → params; a value is never changed from what was typed.

    ``5``, ``-2.5`` and ``true`` become a number or a boolean, because they print back
    exactly as typed; ``1.10``, ``007``, ``1e3`` or ``True`` stay text (a number would
    lose what was typed: ``command.run`` would get ``1.1`` and ``7``).
    """
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param {pair!r}: use KEY=VALUE")
        params[key.strip()] = _scalar(value)
    return params


def _scalar(text: str) -> Any:
    if text in {"true", "false"}:
        return text == "true"
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        if str(number) == text and math.isfinite(number):
            return number
    return text


@contextmanager
def _executor(pipeline_file: Path | None) -> Iterator[Any]:
    from autofix.executor import Executor
    from autofix.pipeline import load_pipeline

    current = settings()
    live = live_service()
    if live is not None:  # carried out by `autofix serve`: its executor, its gates and locks
        same = pipeline_file is None or pipeline_file.resolve() == current.pipeline.resolve()
        if not same:
            raise InputError(
                f"--pipeline {pipeline_file}: the service runs {current.pipeline}; fixes go "
                "through its pipelines file (or stop the service)"
            )
        yield live.executor
        return
    pipeline = load_pipeline(pipeline_file or current.pipeline)
    with writer(current) as store:
        executor = Executor(store, pipeline, current, actor=_actor())
        executor.recover()
        yield executor


def _print(record: FixRecord, as_json: bool, events: bool = False) -> None:

    if as_json:
        print_json(record.as_dict(events=events))
        return
    colour = "green" if record.state in _OK else "red"
    say(
        f"fix {record.id} ",
        (record.action, "bold"),
        " on ",
        (record.target, "bold"),
        ": ",
        (record.state, colour),
        f" (gate {record.gate})" if record.gate else "",
    )
    if record.plan:
        steps = table(Col("#", justify="right"), "op", "step")
        for index, step in enumerate(record.plan, 1):
            steps.add_row(index, step["op"], step["detail"])
        show(steps)
    for label, value in (("reason", record.reason), ("output", record.output)):
        if value and not (label == "output" and value == record.reason):
            block(label, value)
    if record.error and not (record.state == "refused" and record.gate in _INPUT_GATES):
        block("error", record.error, console=err)
    if events:
        history = table(
            Col("seq", justify="right"),
            "ts",
            "state",
            "step",
            "gate",
            "actor",
            Col("ms", justify="right"),
        )
        for e in record.events:
            history.add_row(
                e["seq"],
                e["ts"][:19],
                e["state"],
                e["step"],
                e["gate"] or "",
                e["actor"] or "",
                f"{e['duration_ms']:.0f}" if e["duration_ms"] is not None else "",
            )
        show(history)


def _exit_for(record: FixRecord) -> None:
    if record.state in _OK:
        return
    if record.state == "refused" and record.gate in _INPUT_GATES:
        error(record.error)
        raise typer.Exit(2)
    raise typer.Exit(1)


@fix_app.command("run")
def fix_run(
    action: Annotated[
        str, typer.Argument(help="Action name, family.verb (see `autofix actions`).")
    ],
    target: Annotated[str, typer.Option("--target", help="Target name from the pipelines file.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="KEY=VALUE action parameter (repeat).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; apply nothing.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Approve it yourself (rule mode approve).")
    ] = False,
    as_json: JsonOpt = False,
    pipeline: PipelineOpt = None,
) -> None:
    """Gate, plan and apply one action on one target; print the recorded fix."""
    params = parse_params(param or [])
    with _executor(pipeline) as executor:
        record = executor.run(
            action,
            target,
            params,
            dry_run=dry_run or settings().dry_run,  # AUTOFIX_DRY_RUN of the client too
            approved_by=_actor() if yes else None,
            requested_by=_actor(),
        )
    _print(record, as_json)
    _exit_for(record)


@fix_app.command("list")
def fix_list(
    state: Annotated[str | None, typer.Option("--state", help="Only fixes in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest N fixes.")] = 50,
    as_json: JsonOpt = False,
    pipeline: PipelineOpt = None,
) -> None:
    """The newest fixes with their state (recovers interrupted ones first)."""

    with _executor(pipeline) as executor:
        records = executor.audit.list(limit=limit, state=state)
    if as_json:
        print_json([r.as_dict() for r in records])
        return
    listing = table(
        Col("id", justify="right"),
        Col("action", key=True),
        "target",
        "state",
        Col("gate", optional=True),
        Col("updated", optional=True),
        "why",
        title="fixes",
    )
    for r in records:
        listing.add_row(
            r.id,
            r.action,
            r.target,
            r.state,
            r.gate or "",
            r.updated_at.isoformat(timespec="seconds") if r.updated_at else "",
            (r.error or r.reason or "")[:200],
        )
    show(listing)


@fix_app.command("show")
def fix_show(
    fix_id: Annotated[int, typer.Argument(help="Fix id.")],
    as_json: JsonOpt = False,
    pipeline: PipelineOpt = None,
) -> None:
    """One fix with every state transition and escalation."""
    with _executor(pipeline) as executor:
        record = executor.get(fix_id)
        escalations = executor.audit.escalations(fix_id)
    if as_json:
        print_json({**record.as_dict(events=True), "escalations": escalations})
        return
    _print(record, False, events=True)
    for e in escalations:
        block("escalated", e["reason"], console=err)


@fix_app.command("approve")
def fix_approve(
    fix_id: Annotated[int, typer.Argument(help="Id of a fix pending approval.")],
    by: Annotated[str | None, typer.Option("--by", help="Who approves (default: you).")] = None,
    as_json: JsonOpt = False,
    pipeline: PipelineOpt = None,
) -> None:
    """Approve a pending fix and run it now (an expired approval is refused)."""
    with _executor(pipeline) as executor:
        record = executor.approve(fix_id, by or _actor())
    _print(record, as_json)
    _exit_for(record)


@fix_app.command("reject")
def fix_reject(
    fix_id: Annotated[int, typer.Argument(help="Id of a fix pending approval.")],
    by: Annotated[str | None, typer.Option("--by", help="Who rejects (default: you).")] = None,
    as_json: JsonOpt = False,
    pipeline: PipelineOpt = None,
) -> None:
    """Reject a pending fix; it never runs."""
    with _executor(pipeline) as executor:
        record = executor.reject(fix_id, by or _actor())
    _print(record, as_json)


@fix_app.command("rollback")
def fix_rollback(
    fix_id: Annotated[int, typer.Argument(help="Id of an applied fix.")],
    as_json: JsonOpt = False,
    pipeline: PipelineOpt = None,
) -> None:
    """Undo an applied fix from what it recorded (quarantine, previous value, snapshot)."""
    with _executor(pipeline) as executor:
        record = executor.rollback(fix_id, _actor())
    _print(record, as_json)
    if record.state != "rolled_back":
        raise typer.Exit(1)


@app.command("actions")
def actions(as_json: JsonOpt = False) -> None:
    """The action catalog: params, targets, and whether each action rolls back."""

    from autofix.actions.registry import catalog

    entries = catalog()
    if as_json:
        print_json(entries)
        return
    catalog_table = table(
        Col("action", key=True),
        "targets",
        "params",
        "rolls back",
        Col("idempotent", optional=True),
        "summary",
    )
    for entry in entries:
        catalog_table.add_row(
            entry["name"],
            ", ".join(entry["targets"]),
            ", ".join(
                p["name"] + ("" if p["required"] else f"={p['default']}") for p in entry["params"]
            ),
            "yes" if entry["rolls_back"] else "no",
            "yes" if entry["idempotent"] else "no",
            entry["summary"] + (" [needs a maintenance window]" if entry["downtime"] else ""),
        )
    show(catalog_table)
