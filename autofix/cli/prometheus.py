"""``autofix import-prometheus``: pull metric history from a Prometheus server."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from autofix.cli._app import app, err, print_json, settings, writer
from autofix.cli._render import say
from autofix.errors import InputError


@app.command("import-prometheus")
def import_prometheus_cmd(
    url: Annotated[
        str, typer.Option("--url", help="Prometheus base URL, e.g. http://prometheus:9090.")
    ],
    query: Annotated[
        list[str], typer.Option("--query", help="PromQL expression; repeat for several.")
    ],
    since: Annotated[
        str, typer.Option("--since", help="Start: a duration ago (6h, 2d) or an ISO 8601 time.")
    ],
    until: Annotated[
        str, typer.Option("--until", help="End: now, a duration ago or an ISO 8601 time.")
    ] = "now",
    step: Annotated[str, typer.Option("--step", help="Time between two points, e.g. 60s.")] = "60s",
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric", help="Metric name for the series (required when the query drops it)."
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Host for every series (default: the instance label)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print counts as JSON.")] = False,
) -> None:
    """Import history from Prometheus' query_range API (paged, idempotent on re-run)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from autofix.collect.prometheus import check_url, import_prometheus, plan_chunks

    now = datetime.now(UTC)
    start, end = _moment("--since", since, now), _moment("--until", until, now)
    resolution = _step(step)
    if start >= end:
        raise InputError(
            f"--since ({start.isoformat(timespec='seconds')}) must be before "
            f"--until ({end.isoformat(timespec='seconds')})"
        )
    check_url(url)
    chunks = len(plan_chunks(start, end, resolution)) * len(query)
    current = settings()
    if current.log_level != "DEBUG":
        # httpx logs every request at INFO: one line per chunk drowns the summary.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    with (
        writer(current) as store,
        Progress(
            TextColumn("importing from Prometheus"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=as_json or chunks < 2,
        ) as bar,
    ):
        task = bar.add_task("chunks", total=chunks)
        summary = import_prometheus(
            store,
            url,
            query,
            start,
            end,
            resolution,
            metric=metric,
            host=host,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print_json(summary.as_dict())
        return
    from autofix.config import format_duration, redact_url

    info = summary.as_dict()
    say(
        f"imported {len(query)} quer{'y' if len(query) == 1 else 'ies'} from "
        f"{redact_url(summary.url)} "
        f"({format_duration(end - start)} every {format_duration(resolution)}): "
        f"{summary.series} series, {summary.points} points: ",
        (f"{info['stored']} stored", "green"),
        f", {info['duplicates']} duplicates, {info['rejected']} rejected, "
        f"{summary.dropped_non_finite} NaN/Inf dropped",
    )


def _moment(flag: str, value: str, now: datetime) -> datetime:
    from autofix.collect.prometheus import parse_time

    try:
        return parse_time(value, now)
    except InputError as exc:
        raise InputError(f"{flag}: {exc}") from None


def _step(value: str) -> timedelta:
    from autofix.config import parse_duration

    try:
        step = parse_duration(value)
    except ValueError as exc:
        raise InputError(f"--step: {exc}") from None
    if step < timedelta(milliseconds=1):
        raise InputError(f"--step: must be at least 1ms, not {value!r}")
    return step
