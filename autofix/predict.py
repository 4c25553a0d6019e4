"""Champion models over the store → the predictions table.

Reads the recent history of every exhaustible series (bucketed to 5 minutes by maximum,
with the capacity in force at each moment), turns it into fill ratios, forecasts with the
given model and appends the result, stamped with the model's name and version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from autofix.collect.base import EXHAUSTIBLE_METRICS
from autofix.models.base import direction_for, is_exhaustible, to_fill_ratio
from autofix.store import MetricStore


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
) -> PredictionRun:
    """Forecast every exhaustible series from its newest samples; append the predictions.

    ``now`` is when the predictions are made (and the newest sample considered); each
    forecast's ``origin`` is its series' last sample, so stale series are visible as such.
    """
    catalog = store.query("SELECT series_id, metric FROM series WHERE capacity IS NOT NULL")
    metrics = catalog.set_index("series_id")["metric"]
    metrics = metrics[
        metrics.map(lambda m: is_exhaustible(m) or m in EXHAUSTIBLE_METRICS).astype(bool)
    ]
    history = store.fill_history(lookback, end=now, series_ids=metrics.index.tolist())
    frame = fill_frame(history, metrics)
    if frame.empty:
        empty = pd.DataFrame()
        return PredictionRun(0, 0, model_name, model_version, empty)
    forecasts = model.fit(frame).predict(threshold)
    forecasts["threshold"] = threshold
    forecasts["model"] = model_name
    forecasts["model_version"] = model_version
    written = store.write_predictions(forecasts, now) if write else 0
    return PredictionRun(
        frame["series_id"].nunique(), written, model_name, model_version, forecasts
    )
