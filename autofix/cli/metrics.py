"""Commands over the metric history: config, collect, import, series, export, run, scenarios."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autofix.cli._app import (
    app,
    client_path,
    err,
    print_json,
    reader,
    settings,
    writer,
)
from autofix.cli._app import stopped as client_gone
from autofix.cli._render import Col, say, show, table
from autofix.errors import InputError

if TYPE_CHECKING:
    from autofix.config import Settings

config_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's help renderer takes ~0.5 s to import
    help="The effective settings, and a check of settings and pipelines file.",
    no_args_is_help=True,
)
scenarios_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's help renderer takes ~0.5 s to import
    help="Labelled synthetic histories for tests and backtests.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")
app.add_typer(scenarios_app, name="scenarios")


# -- config ------------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print every setting with its effective value, its source and its help."""

    from autofix.config import describe

    rows = describe(settings())
    if as_json:
        print_json(
            [
                {"name": r.name, "value": _plain(r.value), "source": r.source, "help": r.help}
                for r in rows
            ]
        )
        return
    listing = table(Col("setting", key=True), "value", "source", "help", title="autofix settings")
    for r in rows:
        listing.add_row(f"AUTOFIX_{r.name.upper()}", _plain(r.value), r.source, r.help)
    show(listing)


def _plain(value: Any) -> Any:
    from autofix.config import format_duration

    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    return value


# -- collect -----------------------------------------------------------------------------


@contextmanager
def _stop_on_signal() -> Iterator[Callable[[], bool]]:
    if threading.current_thread() is not threading.main_thread():
        # Carried out by the service for a client: signals are the service's own; the
        # command stops when the client goes away.
        yield client_gone
        return
    stopped_by_signal = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopped_by_signal
        stopped_by_signal = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield lambda: stopped_by_signal
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def collect(
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit.")] = False,
    interval: Annotated[
        str | None, typer.Option("--interval", help="Time between cycles, e.g. 15s.")
    ] = None,
    duration: Annotated[
        str | None, typer.Option("--duration", help="Stop after this long, e.g. 2m.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per cycle.")] = False,
) -> None:
    """Collect this host and the pipeline's targets into the store."""
    from autofix.collect.base import CycleRunner
    from autofix.collect.registry import build_collectors
    from autofix.pipeline import load_pipeline

    current = settings()
    step = _duration("--interval", interval) if interval else current.collect_interval
    if once and (interval or duration):
        raise InputError("--once cannot be combined with --interval or --duration")
    until = (
        time.monotonic() + _duration("--duration", duration).total_seconds() if duration else None
    )
    pipeline = load_pipeline(current.pipeline)
    collectors = build_collectors(pipeline, current)
    with (
        writer(current) as store,
        CycleRunner(
            collectors, current.hostname, current.collect_timeout.total_seconds()
        ) as runner,
        _stop_on_signal() as stopped,
    ):
        while True:
            started = time.monotonic()
            cycle = runner.run_once()
            written = store.write(cycle.frame)
            report = {
                "ts": datetime.now(UTC).isoformat(),
                "samples": len(cycle.frame),
                **written.as_dict(),
                "errors": cycle.errors,
                "cpu_seconds": round(cycle.cpu_seconds, 4),
                "wall_seconds": round(cycle.wall_seconds, 4),
            }
            if as_json:
                print_json(report)
            else:
                failed: list[Any] = []
                if cycle.errors:
                    failed = [", ", (f"{len(cycle.errors)} failed", "red"), ": "]
                    failed.append(", ".join(cycle.errors))
                say(
                    f"{report['ts'][:19]}Z  {report['samples']} samples, "
                    f"{written.stored} stored, {written.rejected_total} rejected, "
                    f"{cycle.cpu_seconds * 1000:.0f} ms CPU",
                    *failed,
                )
            if once or (not interval and not duration):
                break
            remaining = step.total_seconds() - (time.monotonic() - started)
            if until is not None and time.monotonic() + max(remaining, 0) > until:
                break
            try:
                while remaining > 0 and not stopped():
                    time.sleep(min(remaining, 0.2))
                    remaining -= 0.2
            except KeyboardInterrupt:
                break
            if stopped():
                break


def _duration(flag: str, value: str) -> Any:
    from autofix.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InputError(f"{flag}: {exc}") from None


# -- import / export / series ------------------------------------------------------------


@app.command("import")
def import_(
    path: Annotated[
        Path,
        typer.Argument(help="CSV or Parquet file, or a directory of them.", parser=client_path),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print counts as JSON.")] = False,
    shift_to_now: Annotated[
        bool,
        typer.Option(
            "--shift-to-now",
            help="Move every timestamp by one offset so the newest sample is from the last "
            "minute (sample data: current, and kept by retention).",
        ),
    ] = False,
) -> None:
    """Import history with columns timestamp,host,metric,value[,labels,capacity,unit]."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from autofix.collect.importer import CheckedImport, find_files

    current = settings()
    now = datetime.now(UTC).replace(tzinfo=None)
    # Every file is read and checked before the store is opened: a bad file (or a FIFO)
    # never holds the writer lock.
    with (
        CheckedImport(find_files(path), shift_to=now if shift_to_now else None) as checked,
        writer(current) as store,
        Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=as_json,
        ) as bar,
    ):
        task = bar.add_task("rows", total=None)
        result = checked.write(
            store,
            chunk_rows=current.import_chunk_rows,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    _warn_retention(result.oldest, result.newest, now, current)
    if as_json:
        print_json(result.as_dict())
        return
    info = result.as_dict()
    reasons = ", ".join(f"{k} {v}" for k, v in info["rejected_by_reason"].items())  # type: ignore[attr-defined]
    say(
        f"imported {len(result.files)} file(s), {result.rows} rows: ",
        (f"{info['stored']} stored", "green"),
        f", {info['duplicates']} duplicates, {info['rejected']} rejected",
        f" ({reasons})" if reasons else "",
    )


def _warn_retention(
    oldest: datetime | None, newest: datetime | None, now: datetime, current: Settings
) -> None:
    """Say so (on stderr) when retention will roll up or drop what was just imported."""
    from autofix.config import format_duration

    if oldest is None or newest is None:
        return
    raw, rollup = current.raw_retention, current.rollup_retention
    if oldest >= now - raw:
        return
    if newest < now - rollup:
        fate = (
            f"all of it is older than AUTOFIX_ROLLUP_RETENTION ({format_duration(rollup)}): "
            "`autofix run retention` deletes it"
        )
    elif oldest < now - rollup:
        fate = (
            f"what is older than AUTOFIX_ROLLUP_RETENTION ({format_duration(rollup)}) is "
            "deleted by `autofix run retention`, the rest rolled up into 5-minute buckets"
        )
    else:
        fate = (
            f"`autofix run retention` rolls samples older than AUTOFIX_RAW_RETENTION "
            f"({format_duration(raw)}) up into 5-minute buckets"
        )
    say(
        f"autofix: warning: the imported history runs {oldest:%Y-%m-%d} to {newest:%Y-%m-%d}; "
        f"{fate}. To keep sample data, import it with --shift-to-now (it then ends now); "
        "to keep real history, raise those settings.",
        console=err,
    )


@app.command()
def series(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    snapshot: Annotated[
        Path | None,
        typer.Option("--snapshot", help="Read this Parquet snapshot instead.", parser=client_path),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Only this host.")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Only this metric.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Only this host's series.")] = False,
    summary: Annotated[
        bool, typer.Option("--summary", help="One row per host instead of per series.")
    ] = False,
) -> None:
    """List series with their sample counts and time ranges."""

    current = settings()
    with reader(current, snapshot) as store:
        frame = store.series()
    if local:
        host = current.hostname
    if host:
        frame = frame[frame["host"] == host]
    if metric:
        frame = frame[frame["metric"] == metric]
    if summary:
        _print_summary(frame, as_json)
        return
    if as_json:
        for record in frame.to_dict(orient="records"):
            print_json({k: (None if _is_missing(v) else v) for k, v in record.items()})
        return
    one_host = frame["host"].nunique() == 1
    title = f"{len(frame)} series"
    if one_host:
        title += f" of {frame['host'].iloc[0]}, last seen {_ts(frame['last_ts'].max())[:16]} UTC"
    # The metric name is what people scan for and type: never cut it, fold the labels.
    columns: list[str | Col] = [Col("id", justify="right"), Col("metric", key=True), "labels"]
    columns += [Col("samples", justify="right"), Col("latest", justify="right")]
    columns += [Col("capacity", justify="right", optional=True)]
    if not one_host:
        columns = [Col("host", key=True), *columns, Col("last seen (UTC)", optional=True)]
    listing = table(*columns, title=title)
    for r in frame.itertuples(index=False):
        cells = [
            str(r.series_id),
            str(r.metric),
            _labels_text(str(r.labels)),
            str(r.samples),
            _human(r.last_value, str(r.unit), str(r.metric)),
            _human(r.capacity, str(r.unit), str(r.metric)),
        ]
        if not one_host:
            cells = [str(r.host), *cells, _ts(r.last_ts)[:16]]
        listing.add_row(*cells)
    show(listing)


def _labels_text(labels: str) -> str:
    return ",".join(f"{k}={v}" for k, v in json.loads(labels).items())


def _human(value: Any, unit: str, metric: str) -> str:
    if _is_missing(value):
        return ""
    number = float(value)
    if unit == "bytes" or metric.endswith("_bytes"):
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(number) < 1024 or suffix == "TiB":
                return f"{number:.1f} {suffix}" if suffix != "B" else f"{number:.0f} B"
            number /= 1024
    return f"{number:.4g}"


def _print_summary(frame: Any, as_json: bool) -> None:

    hosts = (
        frame.groupby("host")
        .agg(
            series=("series_id", "count"),
            samples=("samples", "sum"),
            first_ts=("first_ts", "min"),
            last_ts=("last_ts", "max"),
        )
        .reset_index()
    )
    if as_json:
        for record in hosts.to_dict(orient="records"):
            print_json(record)
        return
    listing = table(
        Col("host", key=True),
        Col("series", justify="right"),
        Col("samples", justify="right"),
        "first",
        "last",
        title=f"{len(frame)} series, {int(frame['samples'].sum())} samples",
    )
    for r in hosts.itertuples(index=False):
        listing.add_row(r.host, r.series, r.samples, _ts(r.first_ts), _ts(r.last_ts))
    show(listing)


def _is_missing(value: Any) -> bool:
    try:
        return bool(value != value) or value is None  # NaN and NaT are not equal to themselves
    except (TypeError, ValueError):
        return False


def _ts(value: Any) -> str:
    return "" if _is_missing(value) else str(value)[:19]


@app.command()
def export(
    parquet: Annotated[
        Path,
        typer.Option("--parquet", help="Directory to write the snapshot to.", parser=client_path),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Write a Parquet snapshot that readers use while a writer holds the store."""
    with writer(settings()) as store:
        manifest = store.export_parquet(parquet)
    if as_json:
        print_json(manifest)
        return
    rows = manifest["rows"]
    say(f"snapshot written to {parquet}: {rows['series']} series, {rows['samples']} samples")


# -- scenarios ---------------------------------------------------------------------------


@scenarios_app.command("generate")
def scenarios_generate(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the suite to.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    days: Annotated[float, typer.Option("--days", min=1.0, help="Length of each history.")] = 14.0,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    names: Annotated[
        str | None, typer.Option("--only", help="Comma-separated scenario names.")
    ] = None,
) -> None:
    """Write labelled scenario histories plus their ground-truth labels."""
    from autofix.data.scenarios import SCENARIOS, write_suite

    if fmt not in {"parquet", "csv"}:
        raise InputError(f"--format: {fmt!r} is not parquet or csv")
    chosen = [n.strip() for n in names.split(",")] if names else None
    unknown = [n for n in chosen or [] if n not in SCENARIOS]
    if unknown:
        raise InputError(f"--only: unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})")
    paths = write_suite(out_dir, names=chosen, seed=seed, days=days, fmt=fmt)  # type: ignore[arg-type]
    say(f"wrote {len(paths)} files to {out_dir}")
