"""The work a partition task does, on whichever process runs it.

Each function is importable by name (a Dask worker or a pool process unpickles a
reference to it), takes one partition — a Parquet file written by
``MetricStore.export_partitions``, or the same rows as a frame when the work runs in
process — and returns a small frame for the one writer to store. Nothing here opens the
DuckDB file.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from autofix.models.base import to_fill_ratio
from autofix.store import patch_capacity

log = logging.getLogger(__name__)

#: A partition: its Parquet directory or file, its rows, or what reads them (in process).
Source = str | Path | pd.DataFrame | Callable[[], pd.DataFrame]


def read_partition(source: Source, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A partition's rows: the frame itself, or every Parquet file of its directory."""
    if isinstance(source, pd.DataFrame):
        return source
    if callable(source):
        return source()
    path = Path(source)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    frames = [pd.read_parquet(f, columns=list(columns) if columns else None) for f in files]
    if not frames:
        return pd.DataFrame(columns=list(columns or ()))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def forecast_partition(
    source: Source,
    model: Any,
    threshold: float,
    capacity_changes: pd.DataFrame,
    fit_predict: Callable[[Any, pd.DataFrame, float], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """Forecast every series of one partition (``fill_history`` rows + ``down``).

    ``fit_predict(model, frame, threshold)``: who fits (in process only: the service's
    model worker processes); default here.

    The model is cloned (unfitted, same parameters: the same model version on every
    worker), fitted on the partition's fill ratios, and asked for one forecast row per
    series.
    """
    history = read_partition(source)
    if history.empty:
        return pd.DataFrame()
    history = history.sort_values(["series_id", "ts"], kind="stable", ignore_index=True)
    mine = capacity_changes[capacity_changes["series_id"].isin(history["series_id"].unique())]
    history = patch_capacity(history, mine)
    down = history["down"].to_numpy(dtype=bool)
    value = history["value"].to_numpy("float64")
    capacity = history["capacity"].to_numpy("float64")
    fill = np.where(
        down, to_fill_ratio(value, capacity, "down"), to_fill_ratio(value, capacity, "up")
    )
    frame = pd.DataFrame(
        {"series_id": history["series_id"].to_numpy(), "ts": history["ts"], "value": fill}
    )
    # A fresh copy per partition: one model object is shared by every partition's task.
    estimator = clone(model) if hasattr(model, "get_params") else copy.deepcopy(model)
    if fit_predict is not None:
        return fit_predict(estimator, frame, threshold)
    forecasts: pd.DataFrame = estimator.fit(frame).predict(threshold)
    return forecasts


def score_partition(source: Source, scorer: Any) -> pd.DataFrame:
    """Causal anomaly scores of every point of one partition (``series_id, ts, value``)."""
    history = read_partition(source, ["series_id", "ts", "value"])
    if history.empty:
        return history.assign(score=pd.Series(dtype="float64"))
    history = history.sort_values(["series_id", "ts"], kind="stable", ignore_index=True)
    history["score"] = clone(scorer).fit_score(history)
    return history


def backtest_partition(
    factory: Callable[[], Any],
    series: Sequence[Any],
    step: timedelta,
    warmup: timedelta,
) -> pd.DataFrame:
    """Rolling-origin forecasts of a few labelled series (``backtest.rolling_forecasts``)."""
    from autofix.backtest.forecast import rolling_forecasts

    return rolling_forecasts(factory, series, step=step, warmup=warmup)


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` where this task runs (a whole training run, off the API's interpreter)."""
    return fn(*args, **kwargs)


__all__ = [
    "backtest_partition",
    "call",
    "forecast_partition",
    "read_partition",
    "score_partition",
]
