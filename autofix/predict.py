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

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from autofix.collect.base import EXHAUSTIBLE_METRICS
from autofix.compute import Compute, Progress
from autofix.compute.tasks import forecast_partition, score_partition
from autofix.models.anomaly import make_scorer
from autofix.models.base import direction_for, is_exhaustible, to_fill_ratio
from autofix.models.registry import make_forecaster
from autofix.store import ROLLUP_STEP, MetricStore

#: A series silent for this many of its own sampling intervals has stopped reporting.
STALE_INTERVALS = 4
#: Buckets per lookback: the default 7-day lookback is read in 5-minute buckets.
LOOKBACK_BUCKETS = 2016
#: What a partition the model fails on is forecast with (simple, and never fails).
FALLBACK_MODEL = "predict_linear"
#: What a partition the anomaly scorer fails on is scored with.
FALLBACK_SCORER = "zscore"


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
    #: Where the fits ran and how (``Compute.map``): backend, partitions, fallbacks.
    compute: dict[str, Any] = field(default_factory=dict)


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
    compute: Compute | None = None,
    progress: Progress | None = None,
    fit_predict: Callable[[Any, pd.DataFrame, float], pd.DataFrame] | None = None,
) -> PredictionRun:
    """Forecast every exhaustible series that still reports; append the predictions.

    ``now`` is when the predictions are made (and the newest sample considered); each
    forecast's ``origin`` is its series' last sample. Series that stopped reporting
    (see the module docstring) are left out. ``step``: the bucket the history is read
    in (default ``bucket_step(lookback)``).

    The fits run over series partitions where ``compute`` says (default: in this
    process): on Dask or a pool, workers read a partitioned Parquet export of the
    history; in process, each partition is read from the store in turn. Either way
    memory is bounded by a partition. A partition the model fails on is forecast by
    ``FALLBACK_MODEL`` instead (recorded as that model, version ``fallback``) and
    logged; one that fails that too is left out of this pass. In process,
    ``fit_predict(model, frame, threshold)`` runs the model (default: here; ``autofix
    serve`` sends it to a worker process).
    """
    catalog = store.query("SELECT series_id, metric FROM series WHERE capacity IS NOT NULL")
    metrics = catalog.set_index("series_id")["metric"]
    metrics = metrics[
        metrics.map(lambda m: is_exhaustible(m) or m in EXHAUSTIBLE_METRICS).astype(bool)
    ]
    fresh = freshness(store, now, lookback, metrics.index.tolist()) if len(metrics) else None
    metrics = metrics[metrics.index.isin([] if fresh is None else fresh["series_id"])]
    if not len(metrics):
        return PredictionRun(0, 0, model_name, model_version, pd.DataFrame())
    compute = compute if compute is not None else Compute(local_series=2**62)
    step = bucket_step(lookback) if step is None else step
    ids = [int(i) for i in metrics.index]
    down_ids = [i for i in ids if direction_for(str(metrics[i])) == "down"]
    changes = store.capacity_changes()
    kind = compute.kind_for(len(ids))
    count = compute.partitions(len(ids))
    fallback_model = make_forecaster(FALLBACK_MODEL)
    with contextlib.ExitStack() as stack:
        if kind == "inline":
            # Read each partition from the store when its turn comes (bounded memory).
            groups = [[i for i in ids if i % count == part] for part in range(count)]
            sources: list[Any] = [
                _StorePartition(store, lookback, now, step, group, set(down_ids))
                for group in groups
                if group
            ]
        else:
            work = stack.enter_context(compute.workdir("forecast")).resolve()
            sources = [
                str(d)
                for d in store.export_fill_history(work, count, lookback, now, step, ids, down_ids)
            ]
        # In process, the service's model workers fit (``fit_predict``); a Dask or pool
        # task fits where it runs.
        fits = fit_predict if kind == "inline" else None
        done = compute.map(
            forecast_partition,
            [(src, model, threshold, changes, fits) for src in sources],
            kind=kind,
            fallback=lambda i: (sources[i], fallback_model, threshold, changes, fits),
            label="forecast",
            progress=progress,
        )
    parts = []
    for index, frame in enumerate(done.results):
        if frame is None or frame.empty:
            continue
        frame = frame.copy()
        fallback = index in done.fallbacks
        frame["threshold"] = threshold
        frame["model"] = FALLBACK_MODEL if fallback else model_name
        frame["model_version"] = "fallback" if fallback else model_version
        parts.append(frame)
    if not parts:
        return PredictionRun(0, 0, model_name, model_version, pd.DataFrame(), done.as_dict())
    forecasts = pd.concat(parts, ignore_index=True).sort_values("series_id", ignore_index=True)
    written = store.write_predictions(forecasts, now) if write else 0
    return PredictionRun(
        int(forecasts["series_id"].nunique()),
        written,
        model_name,
        model_version,
        forecasts,
        done.as_dict(),
    )


def score_store(
    store: MetricStore,
    scorer: Any,
    *,
    model_name: str,
    now: datetime,
    lookback: timedelta,
    suffix: str,
    compute: Compute | None = None,
) -> pd.DataFrame:
    """Causal anomaly scores of the last ``lookback`` of every series named ``*suffix``.

    Returns ``series_id, host, metric, labels, ts, value, score, model`` ordered by
    series and time. Partitioned and run like ``predict_store``; a partition the
    scorer fails on is scored by ``FALLBACK_SCORER`` (its name in ``model``).
    """
    catalog = store.query(
        "SELECT series_id, host, metric, labels FROM series WHERE suffix(metric, ?) "
        "ORDER BY series_id",
        [suffix],
    )
    columns = ["series_id", "host", "metric", "labels", "ts", "value", "score", "model"]
    empty = pd.DataFrame(
        {c: pd.Series(dtype="float64" if c == "score" else "object") for c in columns}
    )
    if catalog.empty:
        return empty
    compute = compute if compute is not None else Compute(local_series=2**62)
    ids = [int(i) for i in catalog["series_id"]]
    kind = compute.kind_for(len(ids))
    count = compute.partitions(len(ids))
    sql = """SELECT series_id, ts, value FROM samples
             WHERE ts > ? AND ts <= ? AND series_id IN (SELECT unnest(?::BIGINT[]))"""
    fallback = make_scorer(FALLBACK_SCORER)
    with contextlib.ExitStack() as stack:
        if kind == "inline":
            groups = [[i for i in ids if i % count == part] for part in range(count)]
            sources: list[Any] = [
                _StoreQuery(store, f"{sql} ORDER BY series_id, ts", [now - lookback, now, g])
                for g in groups
                if g
            ]
        else:
            work = stack.enter_context(compute.workdir("score")).resolve()
            found = store.export_partitions(work, sql, [now - lookback, now, ids], count)
            sources = [str(d) for d in found]
        done = compute.map(
            score_partition,
            [(src, scorer) for src in sources],
            kind=kind,
            fallback=lambda i: (sources[i], fallback),
            label="anomaly scoring",
        )
    parts = []
    for index, frame in enumerate(done.results):
        if frame is None or frame.empty:
            continue
        model = FALLBACK_SCORER if index in done.fallbacks else model_name
        parts.append(frame.assign(model=model))
    if not parts:
        return empty
    scored = pd.concat(parts, ignore_index=True)
    out = catalog.merge(scored, on="series_id", how="inner")
    ordered: pd.DataFrame = out.sort_values(["series_id", "ts"], ignore_index=True)
    return ordered[columns]


@dataclass(frozen=True)
class _StoreQuery:
    """Rows of one query read from the store when a task asks (in-process runs)."""

    store: MetricStore
    sql: str
    params: list[Any]

    def __call__(self) -> pd.DataFrame:
        return self.store.query(self.sql, self.params)


@dataclass(frozen=True)
class _StorePartition:
    """One partition's history read from the store when a task asks (in-process runs)."""

    store: MetricStore
    lookback: timedelta
    end: datetime
    step: timedelta
    series_ids: list[int]
    down_ids: set[int]

    def __call__(self) -> pd.DataFrame:
        history = self.store.fill_history(
            self.lookback, end=self.end, step=self.step, series_ids=self.series_ids
        )
        # The store patched capacity already: no changes are left to apply.
        return history.assign(down=history["series_id"].isin(self.down_ids))


__all__ = [
    "FALLBACK_MODEL",
    "FALLBACK_SCORER",
    "LOOKBACK_BUCKETS",
    "STALE_INTERVALS",
    "PredictionRun",
    "bucket_step",
    "current_predictions",
    "fill_frame",
    "freshness",
    "predict_store",
    "score_store",
]
