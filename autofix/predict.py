"""Champion models over the store → the predictions table; which forecasts are current.

``predict_store`` reads the recent history of every exhaustible series that still
reports (bucketed by maximum — 5 minutes for the default 7-day lookback, finer for a
shorter one — with the capacity in force at each moment), turns it into fill ratios,
forecasts with the given model and appends the result, stamped with the model's name and
version.

A series has *stopped reporting* when it has no sample inside the lookback, or none for
``STALE_INTERVALS`` of its own sampling intervals (so a 15-second collector and an
hourly import are each judged by their own pace). Such a series is not forecast, and
``current_predictions`` — what ``autofix predict``, the report and the API rank as risks
— leaves out its older forecasts: imported 2024 history is history, not a risk today. An
ETA that has passed while the series still reports is shown as now (it is due), never
as a time in the past.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from autofix.collect.base import EXHAUSTIBLE_METRICS
from autofix.models.base import direction_for, is_exhaustible, to_fill_ratio
from autofix.store import ROLLUP_STEP, MetricStore

#: A series silent for this many of its own sampling intervals has stopped reporting.
STALE_INTERVALS = 4
#: Buckets per lookback: the default 7-day lookback is read in 5-minute buckets.
LOOKBACK_BUCKETS = 2016


def bucket_step(lookback: timedelta) -> timedelta:
    """The bucket the history is read in: 5 minutes, finer for a lookback under 7 days.

    >>> bucket_step(timedelta(days=7)), bucket_step(timedelta(hours=2))
    (datetime.timedelta(seconds=300), datetime.timedelta(seconds=3))
    """
    seconds = int((lookback / LOOKBACK_BUCKETS).total_seconds())
    return min(ROLLUP_STEP, timedelta(seconds=max(1, seconds)))


def freshness(
    store: MetricStore,
    now: datetime,
    lookback: timedelta = timedelta(days=7),
    series_ids: list[int] | None = None,
) -> pd.DataFrame:
    """``series_id, last, interval, fresh_until`` of the series that report at ``now``.

    ``interval`` is the series' mean sampling interval inside the lookback (one sample:
    the lookback's bucket step); ``fresh_until`` is when it will have been silent for
    ``STALE_INTERVALS`` of them. A series with no sample in ``(now - lookback, now]``, or
    already silent that long, is not in the frame.
    """
    ids = "" if series_ids is None else "AND series_id IN (SELECT unnest(?::BIGINT[]))"
    params: list[Any] = [now - lookback, now]
    if series_ids is not None:
        params.append([int(i) for i in series_ids])
    frame = store.query(
        f"""SELECT series_id, max(ts) AS last, min(ts) AS first, count(*) AS n
            FROM samples WHERE ts > ? AND ts <= ? {ids} GROUP BY series_id""",
        params,
    )
    default = pd.Timedelta(bucket_step(lookback))
    span = pd.to_datetime(frame["last"]) - pd.to_datetime(frame["first"])
    interval = (span / (frame["n"] - 1).where(frame["n"] > 1)).fillna(default)
    interval = interval.where(interval > pd.Timedelta(0), default)
    out = pd.DataFrame(
        {
            "series_id": frame["series_id"].astype("int64"),
            "last": pd.to_datetime(frame["last"]),
            "interval": interval,
            "fresh_until": pd.to_datetime(frame["last"]) + STALE_INTERVALS * interval,
        }
    )
    kept: pd.DataFrame = out[out["fresh_until"] >= pd.Timestamp(now)].reset_index(drop=True)
    return kept


def current_predictions(
    store: MetricStore,
    now: datetime,
    lookback: timedelta = timedelta(days=7),
    latest: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The newest prediction of each series that still reports, riskiest first.

    ``latest`` defaults to ``store.latest_predictions()``. Adds ``fresh_until`` (when the
    series will count as stopped if nothing new arrives); ``eta``, ``eta_lo`` and
    ``eta_hi`` before ``now`` read ``now``: due, not past.
    """
    latest = store.latest_predictions() if latest is None else latest
    if latest.empty:
        return latest.assign(fresh_until=pd.Series(dtype="datetime64[ns]"))
    fresh = freshness(store, now, lookback, [int(i) for i in latest["series_id"]])
    out = latest.merge(fresh[["series_id", "fresh_until"]], on="series_id", how="inner")
    moment = pd.Timestamp(now)
    for column in ("eta", "eta_lo", "eta_hi"):
        times = pd.to_datetime(out[column])
        out[column] = times.where(times.isna() | (times >= moment), moment)
    ordered: pd.DataFrame = out.sort_values(
        ["p_24h", "eta", "series_id"], ascending=[False, True, True], na_position="last"
    ).reset_index(drop=True)
    return ordered


@dataclass(frozen=True)
class PredictionRun:
    """What one prediction pass did."""

    series: int
    written: int
    model: str
    model_version: str
    forecasts: pd.DataFrame


def fill_frame(history: pd.DataFrame, metrics: pd.Series) -> pd.DataFrame:
    """``series_id, ts, value`` fill ratios from ``MetricStore.fill_history`` rows.

    ``metrics`` maps series_id to metric name; it decides each series' direction.
    """
    down_ids = metrics.index[metrics.map(lambda m: direction_for(m) == "down").astype(bool)]
    down = history["series_id"].isin(down_ids).to_numpy()
    value = history["value"].to_numpy("float64")
    capacity = history["capacity"].to_numpy("float64")
    fill = np.where(
        down, to_fill_ratio(value, capacity, "down"), to_fill_ratio(value, capacity, "up")
    )
    return pd.DataFrame(
        {"series_id": history["series_id"].to_numpy(), "ts": history["ts"], "value": fill}
    )


def predict_store(
    store: MetricStore,
    model: Any,
    *,
    model_name: str,
    model_version: str,
    now: datetime,
    lookback: timedelta = timedelta(days=7),
    threshold: float = 1.0,
    write: bool = True,
    step: timedelta | None = None,
    fit_predict: Callable[[Any, pd.DataFrame, float], pd.DataFrame] | None = None,
) -> PredictionRun:
    """Forecast every exhaustible series that still reports; append the predictions.

    ``now`` is when the predictions are made (and the newest sample considered); each
    forecast's ``origin`` is its series' last sample. Series that stopped reporting
    (see the module docstring) are left out. ``step``: the bucket the history is read
    in (default ``bucket_step(lookback)``). ``fit_predict(model, frame, threshold)`` runs
    the model (default: here; ``autofix serve`` sends it to a worker process).
    """
    catalog = store.query("SELECT series_id, metric FROM series WHERE capacity IS NOT NULL")
    metrics = catalog.set_index("series_id")["metric"]
    metrics = metrics[
        metrics.map(lambda m: is_exhaustible(m) or m in EXHAUSTIBLE_METRICS).astype(bool)
    ]
    fresh = freshness(store, now, lookback, metrics.index.tolist()) if len(metrics) else None
    metrics = metrics[metrics.index.isin([] if fresh is None else fresh["series_id"])]
    history = store.fill_history(
        lookback,
        end=now,
        step=bucket_step(lookback) if step is None else step,
        series_ids=metrics.index.tolist(),
    )
    frame = fill_frame(history, metrics) if len(metrics) else pd.DataFrame()
    if frame.empty:
        empty = pd.DataFrame()
        return PredictionRun(0, 0, model_name, model_version, empty)
    if fit_predict is None:
        forecasts = model.fit(frame).predict(threshold)
    else:
        forecasts = fit_predict(model, frame, threshold)
    forecasts["threshold"] = threshold
    forecasts["model"] = model_name
    forecasts["model_version"] = model_version
    written = store.write_predictions(forecasts, now) if write else 0
    return PredictionRun(
        frame["series_id"].nunique(), written, model_name, model_version, forecasts
    )


__all__ = [
    "LOOKBACK_BUCKETS",
    "STALE_INTERVALS",
    "PredictionRun",
    "bucket_step",
    "current_predictions",
    "fill_frame",
    "freshness",
    "predict_store",
]
