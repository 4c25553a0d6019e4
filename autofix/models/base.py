"""The model contract shared by every forecaster and scorer.

Models work on a long frame ``series_id, ts, value`` and never decide anything: a
forecaster answers "when does this series reach its threshold, how sure are we", a scorer
answers "how unusual is this point"; thresholds on those answers live in the policy.

Forecasters see a *fill ratio*: 0 is empty, 1 is full (capacity reached). ``to_fill_ratio``
turns raw samples into it using the series' capacity and direction, so one model serves
disks counted as bytes available (falling to 0) and memory counted as bytes used (rising
to capacity).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd

from autofix.errors import InputError

#: Horizons for P(exhaust within H), keyed as they appear in JSON output.
HORIZONS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
    "24h": timedelta(hours=24),
    "4d": timedelta(days=4),
}

#: Columns of a forecast frame, one row per series.
FORECAST_COLUMNS = (
    "series_id",
    "origin",  # time of the last observation the forecast starts from
    "eta",  # when the fill ratio reaches the threshold (NaT: not within the look-ahead)
    "eta_lo",  # 80 % interval for eta
    "eta_hi",
    *(f"p_{h}" for h in HORIZONS),  # P(exhaust within H)
    "model",
)

Direction = Literal["up", "down"]

_DOWN_SUFFIXES = ("_avail_bytes", "_available_bytes", "_free_bytes", "_files_free")

# Series whose exhaustion means something. Totals and sizes carry a capacity too (it is
# their own value) and used/free twins say the same thing as avail, so they are left out.
_EXHAUSTIBLE_SUFFIXES = (
    "_avail_bytes",
    "_available_bytes",
    "_files_free",
    "_swap_used_bytes",
    "_working_set_bytes",
    "_resident_memory_bytes",
    "_open_fds",
    "_dir_size_bytes",  # a directory against its quota (logdir targets with a capacity)
)


def is_exhaustible(metric: str) -> bool:
    """Whether forecasting this metric against its capacity answers a real question."""
    return metric.endswith(_EXHAUSTIBLE_SUFFIXES)


def direction_for(metric: str) -> Direction:
    """``down`` when the metric counts what is left (avail, free), else ``up``."""
    return "down" if metric.endswith(_DOWN_SUFFIXES) else "up"


def to_fill_ratio(
    value: np.ndarray | pd.Series, capacity: float | np.ndarray | pd.Series, direction: Direction
) -> np.ndarray:
    """Raw values to the fill ratio the forecasters see (1.0 = capacity reached)."""
    values = np.asarray(value, dtype="float64")
    cap = np.asarray(capacity, dtype="float64")
    ratio: np.ndarray = values / cap
    return 1.0 - ratio if direction == "down" else ratio


def check_long_frame(frame: pd.DataFrame, where: str = "frame") -> pd.DataFrame:
    """Validate and sort a long frame ``series_id, ts, value``; drop non-finite values."""
    missing = [c for c in ("series_id", "ts", "value") if c not in frame.columns]
    if missing:
        raise InputError(f"{where}: missing column {missing[0]!r}")
    out = frame[["series_id", "ts", "value"]].copy()
    out["ts"] = pd.to_datetime(out["ts"])
    out["value"] = pd.to_numeric(out["value"], errors="coerce").astype("float64")
    out = out[np.isfinite(out["value"].to_numpy())]
    if _is_sorted(out):
        unsorted: pd.DataFrame = out.reset_index(drop=True)
        return unsorted
    ordered: pd.DataFrame = out.sort_values(["series_id", "ts"], kind="stable")
    return ordered.reset_index(drop=True)


def _is_sorted(frame: pd.DataFrame) -> bool:
    """Already ordered by series then time? (Store reads are; sorting 40M rows is not free.)"""
    ids = frame["series_id"].to_numpy()
    ts = frame["ts"].to_numpy("datetime64[ns]")
    if len(ids) < 2:
        return True
    try:
        same = ids[1:] == ids[:-1]
        ids_ok = bool(np.all(same | (ids[1:] > ids[:-1])))
    except TypeError:  # mixed id types: let pandas decide the order
        return False
    return ids_ok and bool(np.all(~same | (ts[1:] >= ts[:-1])))


def eta_from_line(
    origin: np.ndarray,
    level: np.ndarray,
    slope: np.ndarray,
    threshold: float,
    max_eta: timedelta,
) -> np.ndarray:
    """When a line from ``level`` at ``origin`` rising ``slope``/s reaches ``threshold``.

    NaT where it never does, or not within ``max_eta``; ``origin`` where it already has.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        seconds = np.where(level >= threshold, 0.0, (threshold - level) / slope)
    ok = np.isfinite(seconds) & (seconds >= 0) & (seconds <= max_eta.total_seconds())
    ns = np.where(ok, seconds * 1e9, 0).astype("int64").astype("timedelta64[ns]")
    eta: np.ndarray = np.where(ok, origin.astype("datetime64[ns]") + ns, np.datetime64("NaT"))
    return eta


def empty_forecast() -> pd.DataFrame:
    """A forecast frame with no rows and the right columns."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in FORECAST_COLUMNS})


class Forecaster:
    """Mixin documenting the forecaster contract (use with sklearn's BaseEstimator).

    ``fit(frame)`` takes a long frame ``series_id, ts, value`` where ``value`` is the fill
    ratio, and returns ``self``. ``predict(threshold=1.0)`` returns one row per fitted
    series with ``FORECAST_COLUMNS``: the forecast starts at each series' last observation
    (``origin``); ``eta`` is when the fill ratio reaches ``threshold`` (NaT when it is not
    expected within ``max_horizon``), ``eta_lo``/``eta_hi`` the 80 % interval, and
    ``p_1h … p_4d`` the probability that it is reached within each horizon.
    """

    #: Registry name, recorded with every prediction.
    name: str = "forecaster"


def probabilities_frame(
    series_id: np.ndarray,
    origin: np.ndarray,
    eta: np.ndarray,
    eta_lo: np.ndarray,
    eta_hi: np.ndarray,
    p_within: dict[str, np.ndarray],
    model: str,
) -> pd.DataFrame:
    """Assemble a forecast frame from per-series arrays (times as datetime64[ns])."""
    data: dict[str, object] = {
        "series_id": series_id,
        "origin": pd.to_datetime(origin),
        "eta": pd.to_datetime(eta),
        "eta_lo": pd.to_datetime(eta_lo),
        "eta_hi": pd.to_datetime(eta_hi),
    }
    for key in HORIZONS:
        data[f"p_{key}"] = np.clip(np.asarray(p_within[key], dtype="float64"), 0.0, 1.0)
    data["model"] = model
    return pd.DataFrame(data, columns=list(FORECAST_COLUMNS))
