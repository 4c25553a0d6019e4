"""Commands over the service's results: ``kpi``, ``report`` and ``fix label``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from autofix.cli._app import app, client_path, print_json, reader, settings, writer
from autofix.cli._render import Col, line, say, show, table
from autofix.cli.fix import _actor, fix_app
from autofix.errors import InputError, StoreError

_STATUS_STYLE = {
    "meets_goal": ("meets goal", "green"),
    "meets_target": ("meets target", "yellow"),
    "misses": ("misses", "red"),
    "no_data": ("no data", "dim"),
}


def _window(value: str) -> timedelta:
    from autofix.config import parse_duration

    try:
        span = parse_duration(value)
    except ValueError as exc:
        raise InputError(f"--window: {exc}") from None
    if span <= timedelta(0):
        raise InputError(f"--window: must be positive, not {value!r}")
    return span


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@app.command("kpi")
def kpi(
    window: Annotated[
        str, typer.Option("--window", help="Fixes, decisions and tasks of this last span.")
    ] = "30d",
    as_json: Annotated[bool, typer.Option("--json", help="Print the KPIs as JSON.")] = False,
) -> None:
    """The KPIs from the audit log against the seed targets and our goals."""

    from autofix.kpi import compute_kpis, kpi_rows

    span = _window(window)
    current = settings()
    with reader(current) as store:
        if store.snapshot is not None and not (store.snapshot / "fixes.parquet").exists():
            # The snapshot holds metrics only: KPIs from it would all read "no data".
            raise StoreError(
                f"{current.db_path} is in use by another process and its snapshot has no "
                "audit log; read the KPIs through that service's API, or stop it"
            )
        kpis = compute_kpis(store, _now(), span, current.kpi_manual_mttr)
    if as_json:
        print_json(kpis.as_dict())
        return
    listing = table(
        "KPI",
        Col("value", justify="right"),
        "seed target",
        "goal",
        "status",
        "basis",
        title=f"KPIs, {window}",
    )
    for row in kpi_rows(kpis):
        listing.add_row(
            row.label,
            row.shown,
            row.seed,
            row.goal,
            line(_STATUS_STYLE[row.status]) if row.status else "",
            row.basis,
        )
    show(listing)
    states = ", ".join(f"{n} {s}" for s, n in kpis.fixes_by_state.items() if n)
    say(
        f"fixes: {states or 'none'}; escalations {kpis.escalations}; "
        f"pending approvals {kpis.pending_approvals}"
    )


@app.command("report")
def report(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Directory for index.html and charts (else AUTOFIX_REPORT_DIR).",
            parser=client_path,
        ),
    ] = None,
    window: Annotated[
        str, typer.Option("--window", help="Span of the KPIs, fixes and charts.")
    ] = "7d",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print where the report went and its KPIs as JSON.")
    ] = False,
) -> None:
    """Write the HTML report (KPIs, riskiest series, fixes, charts); print its path."""
    from autofix.kpi import compute_kpis
    from autofix.report import write_report

    span = _window(window)
    current = settings()
    now = _now()
    with reader(current) as store:
        path = write_report(
            store,
            out_dir or current.report_dir,
            now,
            window=span,
            manual_mttr=current.kpi_manual_mttr,
        )
        kpis = compute_kpis(store, now, span, current.kpi_manual_mttr) if as_json else None
    if kpis is not None:
        body = {"report": str(path), "generated_at": now, "window": window}
        print_json({**body, "kpis": kpis.as_dict()})
        return
    say(path)


@fix_app.command("label")
def fix_label(
    fix_id: Annotated[int, typer.Argument(help="Id of an applied or planned fix.")],
    false_fix: Annotated[
        bool, typer.Option("--false", help="The problem was not real: a false fix.")
    ] = False,
    correct: Annotated[
        bool, typer.Option("--correct", help="The problem was real: the fix was right.")
    ] = False,
    comment: Annotated[str | None, typer.Option("--comment", help="Why (kept with it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the fix and labels.")] = False,
) -> None:
    """Label a fix false or correct; the latest label counts in the false-fix rate."""

    from autofix.audit import AuditLog

    if false_fix == correct:
        raise InputError("fix label: give exactly one of --false or --correct")
    with writer(settings()) as store:
        audit = AuditLog(store, _now)
        record = audit.label(fix_id, false_fix, _actor(), comment)
        labels = audit.labels(fix_id)
    if as_json:
        print_json({**record.as_dict(), "labels": labels})
        return
    verdict = ("false fix", "red") if false_fix else ("correct", "green")
    say(
        f"fix {record.id} ",
        record.action,
        " on ",
        record.target,
        f" ({record.state}) labelled ",
        verdict,
    )
