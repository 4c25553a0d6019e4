"""Commands over the models: forecast, predict, backtest, train, models list."""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autofix.cli._app import app, err, live_service, print_json, settings, writer
from autofix.cli._render import Col, say, show, table
from autofix.errors import InputError
from autofix.models.registry import FORECASTERS, make_forecaster

if TYPE_CHECKING:
    import pandas as pd

    from autofix.config import Settings

# numpy, pandas, rich tables and the models are imported where used: `--help` stays instant.

models_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's help renderer takes ~0.5 s to import
    help="Trained model versions in the local MLflow store.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")


def _iso(value: Any) -> str | None:
    import pandas as pd

    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value).floor("s").tz_localize("UTC")
    return stamp.isoformat().replace("+00:00", "Z")


def _forecast_record(row: Any, horizon: timedelta) -> dict[str, Any]:
    import pandas as pd

    from autofix.models.base import HORIZONS

    eta = row.eta if not pd.isna(row.eta) else None
    within = eta is not None and pd.Timestamp(eta) <= pd.Timestamp(row.origin) + horizon
    return {
        "eta": _iso(row.eta),
        "eta_lo": _iso(row.eta_lo),
        "eta_hi": _iso(row.eta_hi),
        "p_within": {h: round(float(getattr(row, f"p_{h}")), 6) for h in HORIZONS},
        "model": row.model,
        "origin": _iso(row.origin),
        "exhausts_within_horizon": bool(within),
    }


def read_value_csv(path: Path) -> pd.DataFrame:
    """``timestamp,value[,series_id]`` → long frame, or InputError naming line and column."""
    import numpy as np
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty file"
        raise InputError(f"{path}: cannot read as CSV: {first}") from None
    for column in ("timestamp", "value"):
        if column not in raw.columns:
            raise InputError(f"{path}: missing column {column!r} (need timestamp,value)")
    ts = pd.to_datetime(raw["timestamp"], errors="coerce", utc=True, format="mixed")
    numeric = raw["timestamp"].str.fullmatch(r"\s*-?\d{1,11}(\.\d+)?\s*")
    if numeric.any():
        ts[numeric] = pd.to_datetime(
            raw.loc[numeric, "timestamp"].astype(float), unit="s", utc=True
        )
    bad = ts.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{path}: line {i + 2}, column timestamp: cannot parse time "
            f"{raw['timestamp'].iloc[i]!r}"
        )
    value = pd.to_numeric(raw["value"], errors="coerce")
    bad = value.isna() & (raw["value"].str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{path}: line {i + 2}, column value: not a number {raw['value'].iloc[i]!r}"
        )
    series = raw["series_id"] if "series_id" in raw.columns else pd.Series("0", index=raw.index)
    return pd.DataFrame(
        {"series_id": series, "ts": ts.dt.tz_convert(None), "value": value.astype("float64")}
    )


@app.command()
def forecast(
    input_file: Annotated[Path, typer.Option("--input", help="CSV: timestamp,value[,series_id]")],
    capacity: Annotated[
        float, typer.Option("--capacity", help="What exhaustion is measured against.")
    ],
    threshold: Annotated[
        float, typer.Option("--threshold", help="Share of capacity that counts as exhausted.")
    ] = 1.0,
    horizon: Annotated[
        str, typer.Option("--horizon", help="Horizon for exhausts_within_horizon, e.g. 24h.")
    ] = "24h",
    model: Annotated[str, typer.Option("--model", help=f"One of {', '.join(FORECASTERS)}.")] = (
        "default"
    ),
    direction: Annotated[
        str | None,
        typer.Option(
            "--direction",
            help="up: the value rises to capacity; down: it falls to 0 (default: from "
            "--metric: *_avail_bytes, *_available_bytes, *_free_bytes, *_files_free are "
            "down; else up).",
        ),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="Metric name of the CSV's values (default: its file name)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per series).")] = (
        False
    ),
) -> None:
    """Forecast when a series (or many, with a series_id column) reaches its capacity."""
    import pandas as pd

    from autofix.config import parse_duration
    from autofix.models.base import HORIZONS, direction_for, to_fill_ratio

    if not (capacity > 0 and math.isfinite(capacity)):
        raise InputError(f"--capacity: must be a positive number, not {capacity:g}")
    if not (threshold > 0 and math.isfinite(threshold)):
        raise InputError(f"--threshold: must be a positive number, not {threshold:g}")
    if direction is not None and direction not in {"up", "down"}:
        raise InputError(f"--direction: {direction!r} is not up or down")
    name = metric or input_file.stem
    assumed = direction is None
    chosen = direction_for(name) if direction is None else direction
    try:
        span = parse_duration(horizon)
    except ValueError as exc:
        raise InputError(f"--horizon: {exc}") from None
    estimator = make_forecaster(model)
    frame = read_value_csv(input_file)
    multi = "series_id" in pd.read_csv(input_file, nrows=0).columns
    if assumed:
        # On stderr, so that --json output stays one JSON document per line.
        what = (
            "it counts what is left: exhausted at 0"
            if chosen == "down"
            else "it counts what is used: exhausted at --capacity"
        )
        say(
            f"autofix: assuming --direction {chosen} for {name!r} ({what}); "
            "give --direction to override",
            console=err,
        )
    frame["value"] = to_fill_ratio(frame["value"], capacity, "down" if chosen == "down" else "up")
    result = estimator.fit(frame).predict(threshold)
    records = []
    for row in result.itertuples(index=False):
        record = _forecast_record(row, span)
        if multi:
            record = {"series_id": row.series_id, **record}
        records.append(record)
    if as_json:
        for record in records:
            print_json(record)
        return
    forecasts = table(
        "series",
        "eta",
        "80 % interval",
        *[Col(f"p {h}", justify="right") for h in HORIZONS],
        "model",
    )
    for record in records:
        forecasts.add_row(
            str(record.get("series_id", input_file.name)),
            record["eta"] or "—",
            f"{record['eta_lo'] or '—'} … {record['eta_hi'] or '—'}",
            *[f"{record['p_within'][h]:.2f}" for h in HORIZONS],
            record["model"],
        )
    show(forecasts)


@app.command()
def predict(
    model: Annotated[
        str | None,
        typer.Option("--model", help="Use this model instead of the MLflow champion."),
    ] = None,
    lookback: Annotated[str, typer.Option("--lookback", help="History to forecast from.")] = "7d",
    top: Annotated[int, typer.Option("--top", help="Rows in the printed table.")] = 15,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the run and the newest prediction of every series."),
    ] = False,
) -> None:
    """Forecast every exhaustible series in the store with the champion; write predictions."""
    import pandas as pd

    from autofix.config import parse_duration
    from autofix.predict import current_predictions, predict_store

    current = settings()
    try:
        span = parse_duration(lookback)
    except ValueError as exc:
        raise InputError(f"--lookback: {exc}") from None
    if model is not None:
        estimator, name, version = make_forecaster(model), model, "untracked"
    else:
        estimator, name, version = _champion_or_default(current.models_dir)
    now = datetime.now(UTC).replace(tzinfo=None)
    with writer(current) as store, _compute(current) as compute:
        run = predict_store(
            store,
            estimator,
            model_name=name,
            model_version=version,
            now=now,
            lookback=span,
            compute=compute,
        )
        # Only series that still report are risks (stale history is left out, and an
        # ETA that has passed reads now).
        latest = current_predictions(store, now, span) if run.written else pd.DataFrame()
    summary = {
        "series": run.series,
        "written": run.written,
        "model": name,
        "model_version": version,
        # Where the fits ran: backend (inline/pool/local/dask), partitions, fallbacks, failed.
        "compute": run.compute,
    }
    if as_json:
        print_json({**summary, "predictions": prediction_records(latest)})
        return
    made_by = f"{name} (untracked)" if version == "untracked" else f"{name} v{version}"
    say(f"{run.written} predictions written by {made_by}")
    if not latest.empty:
        print_riskiest(latest, top, now)
    elif not run.written:
        say(
            f"no series has reported within the last {lookback}: nothing to forecast "
            "(imported history that ended earlier is not a risk now; "
            "`autofix import --shift-to-now` moves sample data to the present)"
        )


def _compute(current: Settings) -> AbstractContextManager[Any]:
    """Where the fits run: the live service's workers inside `autofix serve` (left open),
    else what the settings say for this command (closed at its end)."""
    live = live_service()
    if live is not None:
        return nullcontext(live.compute)
    from autofix.compute import Compute

    return Compute.from_settings(current)


def prediction_records(latest: pd.DataFrame) -> list[dict[str, Any]]:
    """The newest prediction per series, riskiest first, as JSON-ready dicts."""
    from autofix.collect.base import parse_labels

    if latest.empty:
        return []
    keep = [c for c in latest.columns if c not in {"labels"}]
    records: list[dict[str, Any]] = [
        {str(k): v for k, v in row.items()} for row in latest[keep].to_dict("records")
    ]
    for record, labels in zip(records, latest["labels"], strict=True):
        record["labels"] = parse_labels(str(labels))
    return records


def _champion_or_default(models_dir: Path) -> tuple[Any, str, str]:
    from autofix.tracking import Tracker
    from autofix.training import REGISTERED_MODEL, champion_or_default

    if Tracker(models_dir).champion(REGISTERED_MODEL) is None:
        say(
            "autofix: no champion model yet (run `autofix train`); using the default model",
            console=err,
        )
        return make_forecaster("default"), "default", "untracked"
    return champion_or_default(models_dir)


def print_riskiest(latest: pd.DataFrame, top: int, now: datetime | None = None) -> None:
    """The series most likely to exhaust, with ETA and interval (``due`` once passed)."""
    risky = table(
        Col("host", key=True),
        "series",
        "eta (UTC)",
        "80 % interval",
        *[Col(f"p {h}", justify="right") for h in ("4h", "24h", "4d")],
        title=f"riskiest series (of {len(latest)})",
    )
    for row in latest.head(top).itertuples(index=False):
        risky.add_row(
            str(row.host),
            short_series(str(row.metric), str(row.labels)),
            _eta(row.eta, now),
            f"{_short(row.eta_lo)} … {_short(row.eta_hi)}",
            f"{row.p_4h:.2f}",
            f"{row.p_24h:.2f}",
            f"{row.p_4d:.2f}",
        )
    show(risky)


_TELLING_LABELS = ("mountpoint", "container", "target", "path", "query")


def short_series(metric: str, labels: str) -> str:
    """``metric{the one label that tells series apart}`` for narrow tables."""
    parsed = json.loads(labels)
    shown = [f"{k}={parsed[k]}" for k in _TELLING_LABELS if k in parsed][:1]
    name = metric.removeprefix("node_").removesuffix("_bytes")
    return f"{name}{{{shown[0]}}}" if shown else name


def _short(value: Any) -> str:
    import pandas as pd

    return "—" if value is None or pd.isna(value) else str(pd.Timestamp(value))[:16]


def _eta(value: Any, now: datetime | None) -> str:
    import pandas as pd

    if now is None or value is None or pd.isna(value):
        return _short(value)
    return "due now" if pd.Timestamp(value) <= pd.Timestamp(now) else _short(value)


@app.command()
def backtest(
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="Comma-separated, any of: " + ",".join(FORECASTERS) + " (autoets, autotheta "
            "and mstl are statsforecast's AutoETS, AutoTheta and MSTL).",
        ),
    ] = "default,predict_linear,node_mixin",
    scenarios: Annotated[
        Path, typer.Option("--scenarios", help="Directory written by `autofix scenarios generate`.")
    ] = Path("data/samples"),
    step: Annotated[str, typer.Option("--step", help="Time between forecast origins.")] = "1h",
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """Rolling-origin backtest of forecasters on labelled scenarios."""
    from autofix.backtest.forecast import backtest as run_backtest
    from autofix.backtest.forecast import load_scenarios
    from autofix.config import parse_duration

    names = [n.strip() for n in models.split(",") if n.strip()]
    for name in names:
        if name not in FORECASTERS:
            raise InputError(f"--models: unknown model {name!r} (known: {', '.join(FORECASTERS)})")
    try:
        origin_step = parse_duration(step)
    except ValueError as exc:
        raise InputError(f"--step: {exc}") from None
    series = load_scenarios(scenarios)
    factories = {name: partial(make_forecaster, name) for name in names}
    with err.status("backtesting") as status, _compute(settings()) as compute:
        results, _ = run_backtest(
            factories,
            series,
            step=origin_step,
            progress=lambda name: status.update(f"backtesting {name}"),
            compute=compute,  # on AUTOFIX_DASK_SCHEDULER's cluster when one is named
        )
    if as_json:
        print_json({"scenarios": str(scenarios), "series": len(series), "models": results})
        return
    print_metrics(results)


def print_metrics(results: dict[str, dict[str, float]]) -> None:
    """Metrics side by side, one column per model."""

    names = list(results)
    metrics = table(
        Col("metric", key=True), *[Col(n, justify="right") for n in names], title="backtest"
    )
    for metric in results[names[0]]:
        metrics.add_row(metric, *[f"{results[n][metric]:.4g}" for n in names])
    show(metrics)


@app.command()
def train(
    scenarios: Annotated[
        Path, typer.Option("--scenarios", help="Labelled scenarios to backtest on.")
    ] = Path("data/samples"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Backtest the default forecaster, log it to MLflow, promote it if the gate passes."""
    from autofix.training import train_and_register

    current = settings()
    with (
        err.status("backtesting the default forecaster and logging it to MLflow"),
        _compute(current) as compute,
    ):
        result = train_and_register(current.models_dir, scenarios, compute=compute)
    if as_json:
        print_json(result.as_dict())
        return
    verdict = ("promoted to champion", "green") if result.promoted else ("not promoted", "yellow")
    say(
        f"{result.model} v{result.version}: false_fix_rate "
        f"{result.metrics['false_fix_rate']:.4f}, recall_24h "
        f"{result.metrics['recall_24h']:.3f} — ",
        verdict,
        f": {result.reason}",
    )


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Registered model versions with their gate metrics and the champion alias."""

    from autofix.tracking import Tracker

    rows = Tracker(settings().models_dir).list_models()
    if as_json:
        for row in rows:
            print_json(row)
        return
    versions = table(
        Col("model", key=True), "version", "alias", "created", "false_fix_rate", "recall_24h"
    )
    for row in rows:
        versions.add_row(
            *[
                str(row.get(k, ""))
                for k in ("name", "version", "alias", "created", "false_fix_rate", "recall")
            ]
        )
    show(versions)
