"""``autofix anomaly``: score a CSV of samples with an anomaly scorer."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from autofix.cli._app import app, print_json
from autofix.cli._render import say
from autofix.errors import InputError
from autofix.models.registry import SCORER_NAMES

if TYPE_CHECKING:  # imported where used: `--help` stays instant
    import numpy as np
    import pandas as pd

anomaly_app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's help renderer takes ~0.5 s to import
    help="Anomaly scores for metric samples.",
    no_args_is_help=True,
)
app.add_typer(anomaly_app, name="anomaly")


@anomaly_app.command("score")
def score(
    input_path: Annotated[
        Path, typer.Option("--input", help="CSV with timestamp,value (and optionally series_id).")
    ],
    output_path: Annotated[
        Path, typer.Option("--output", help="CSV to write: the input plus anomaly_score.")
    ],
    model: Annotated[
        str, typer.Option("--model", help=f"Scorer: {', '.join(SCORER_NAMES)}.")
    ] = "default",
    direction: Annotated[
        str | None,
        typer.Option(
            "--direction",
            help="Which way is bad: up (latency), down, or both (traffic); default: the "
            "scorer's own (default: up, onset: both).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Score every point in [0, 1], causally: a score uses only its point and earlier ones.

    With a series_id column each series is scored on its own, all in one batch. Rows are
    written in input order and every row gets a score, repeated timestamps included. A
    series' first points (its warm-up: 20 points) score 0.
    """
    import pandas as pd

    from autofix.models.anomaly import make_scorer  # scikit-learn: only when scoring

    if direction is not None and direction not in ("up", "down", "both"):
        raise InputError(f"--direction: {direction!r} is not up, down or both")
    scorer = make_scorer(model, **({"direction": direction} if direction else {}))
    frame, has_series = read_samples(input_path)
    started = time.perf_counter()
    scores = scorer.fit_score(
        pd.DataFrame({"series_id": frame["series_id"], "ts": frame["ts"], "value": frame["value"]})
    )
    seconds = time.perf_counter() - started
    write_scores(output_path, frame, scores, has_series=has_series)
    threshold = scorer.default_threshold
    summary = {
        "input": str(input_path),
        "output": str(output_path),
        "model": model,
        "points": len(frame),
        "series": int(frame["series_id"].nunique()),
        "above_default_threshold": int((scores >= threshold).sum()),
        "default_threshold": threshold,
        "seconds": round(seconds, 4),
    }
    if as_json:
        print_json(summary)
    else:
        say(
            f"scored {summary['points']} points of {summary['series']} series with {model} "
            f"→ {output_path} ({summary['above_default_threshold']} >= {threshold})"
        )


def read_samples(path: Path) -> tuple[pd.DataFrame, bool]:
    """Parse and check the input CSV; any problem is an InputError naming line and column.

    Returns the raw text columns plus parsed ``ts`` (naive UTC), ``value`` and
    ``series_id`` (``""`` when the file has none), and whether the file had series_id.
    """
    import numpy as np
    import pandas as pd

    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read CSV: {first}") from exc
    for column in ("timestamp", "value"):
        if column not in raw.columns:
            raise InputError(f"{path}: line 1: missing column {column!r}")
    if raw.empty:
        raise InputError(f"{path}: no data rows")
    ts = _parse_times(raw["timestamp"])
    _first_bad(path, raw["timestamp"], ts.isna().to_numpy(), "timestamp", "cannot parse time")
    value = pd.to_numeric(raw["value"], errors="coerce").to_numpy(dtype=np.float64)
    _first_bad(path, raw["value"], ~np.isfinite(value), "value", "not a finite number")
    series = raw["series_id"] if "series_id" in raw.columns else pd.Series("", index=raw.index)
    # Repeated times (a DST change, a re-sent batch) are real data: every row is scored.
    frame = raw.assign(ts=ts, value_f=value, series_id=series)
    frame = frame.rename(columns={"value": "value_text", "value_f": "value"})
    return frame, "series_id" in raw.columns


def _parse_times(text: pd.Series) -> pd.Series:
    """ISO 8601 (no zone means UTC) or epoch seconds; NaT where neither parses."""
    import pandas as pd

    stripped = text.str.strip()
    epoch = pd.to_numeric(stripped, errors="coerce")
    iso = pd.to_datetime(stripped.where(epoch.isna()), utc=True, errors="coerce", format="ISO8601")
    # Only plausible epochs go through the unit conversion: pandas' vectorised cast
    # raises FloatingPointError on some NaN-filled inputs and overflows on huge ones.
    plausible = epoch.notna() & (epoch.abs() < 1e11)
    from_epoch = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    if plausible.any():
        from_epoch[plausible] = pd.to_datetime(epoch[plausible], unit="s", utc=True)
    return iso.fillna(from_epoch).dt.tz_localize(None)


def _first_bad(path: Path, text: pd.Series, bad: np.ndarray, column: str, what: str) -> None:
    import numpy as np

    if bad.any():
        row = int(np.argmax(bad))
        # Line 1 is the header, so data row N (0-based) is on line N + 2.
        raise InputError(f"{path}: line {row + 2}, column {column}: {what} {text.iloc[row]!r}")


def write_scores(path: Path, frame: pd.DataFrame, scores: np.ndarray, *, has_series: bool) -> None:
    """Input rows in input order with ``anomaly_score`` appended (series_id first if given)."""
    import numpy as np
    import pandas as pd

    columns = ["timestamp", "value", "anomaly_score"]
    result = pd.DataFrame(
        {
            "timestamp": frame["timestamp"],
            "value": frame["value_text"],
            "anomaly_score": np.round(scores, 6),
        }
    )
    if has_series:
        result.insert(0, "series_id", frame["series_id"])
        columns.insert(0, "series_id")
    try:
        result.to_csv(path, index=False, columns=columns, quoting=csv.QUOTE_MINIMAL)
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from exc
