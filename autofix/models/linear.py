"""The baselines autofix must beat, reimplemented exactly.

``PredictLinear`` is Prometheus' ``predict_linear(v[lookback], t)``: an ordinary
least-squares line through the samples of the range, evaluated relative to the evaluation
time, extrapolated ``t`` seconds ahead. ``NodeMixinRule`` is the node-mixin alert
``NodeFilesystemSpaceFillingUp``:

    warning:  avail/size < 40 % and predict_linear(avail[6h], 24h) < 0, for 1h
    critical: avail/size < 20 % and predict_linear(avail[6h],  4h) < 0, for 1h

On a fill ratio (1 - avail/size) the same rule reads: fill > 0.6 (0.8) and the 6-hour
line reaches 1.0 within 24 h (4 h), continuously for an hour. Both are evaluated at every
sample time in one vectorised pass (``evaluate_all``), which is also what the backtest
uses; ``predict`` answers at each series' last sample.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Self

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from autofix.models.base import (
    HORIZONS,
    Forecaster,
    check_long_frame,
    eta_from_line,
    probabilities_frame,
)

_Z80 = 1.2815515655446004  # two-sided 80 % interval: 10th and 90th percentiles
_NS = 1_000_000_000


def _windowed_regression(frame: pd.DataFrame, lookback: timedelta) -> pd.DataFrame:
    """OLS of value on time over ``[t - lookback, t]`` at every row, relative to ``t``.

    Returns per row: ``n``, ``slope`` (per second), ``intercept`` (the line at ``t``) and
    ``slope_se``. Prometheus needs at least two samples in the range.
    """
    codes = frame["series_id"].factorize()[0].astype("int64")
    stamps = frame["ts"].to_numpy("datetime64[ns]").astype("int64")
    # Seconds since each series' first sample keep the prefix sums small and exact enough.
    first = np.r_[True, codes[1:] != codes[:-1]] if len(codes) else np.zeros(0, bool)
    seconds = (stamps - stamps[np.flatnonzero(first)][np.cumsum(first) - 1]) / _NS
    # One sortable key for all series: series are separated by more than any time range.
    span = (seconds.max() if len(seconds) else 0.0) + lookback.total_seconds() + 1.0
    key = codes * span + seconds
    start = np.searchsorted(key, key - lookback.total_seconds(), side="left")
    end = np.arange(1, len(key) + 1)
    y = frame["value"].to_numpy("float64")
    # Center time on each row's own evaluation time through the identities below,
    # using sums of t, t^2, y, t*y (prefix sums make every window O(1)).
    sums = {
        name: np.concatenate(([0.0], np.cumsum(arr)))
        for name, arr in (
            ("1", np.ones_like(y)),
            ("t", seconds),
            ("tt", seconds * seconds),
            ("y", y),
            ("ty", seconds * y),
            ("yy", y * y),
        )
    }
    win = {name: s[end] - s[start] for name, s in sums.items()}
    n = win["1"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_t = win["t"] / n
        mean_y = win["y"] / n
        sxx = win["tt"] - n * mean_t * mean_t
        sxy = win["ty"] - n * mean_t * mean_y
        syy = win["yy"] - n * mean_y * mean_y
        slope = np.where(sxx > 0, sxy / sxx, np.nan)
        intercept = mean_y + slope * (seconds - mean_t)
        resid = np.maximum(syy - slope * sxy, 0.0)
        slope_se = np.sqrt(resid / np.maximum(n - 2, 1) / sxx)
    slope = np.where(n >= 2, slope, np.nan)
    return pd.DataFrame(
        {"n": n, "slope": slope, "intercept": intercept, "slope_se": slope_se},
        index=frame.index,
    )


class _RollingBaseline(BaseEstimator, Forecaster):
    """Shared by the baselines: they keep the frame and evaluate at every sample time."""

    def fit(self, frame: pd.DataFrame) -> Self:
        self.frame_ = check_long_frame(frame)
        return self

    def evaluate_all(self, threshold: float = 1.0) -> pd.DataFrame:
        raise NotImplementedError

    def predict(self, threshold: float = 1.0) -> pd.DataFrame:
        """The forecast at each series' last sample."""
        every = self.evaluate_all(threshold)
        last: pd.DataFrame = every.groupby("series_id", sort=True).tail(1)
        return last.reset_index(drop=True)


class PredictLinear(_RollingBaseline):
    """Prometheus ``predict_linear`` over ``lookback``: a deterministic ETA, no hedging.

    ``p_H`` is 1 when the line reaches the threshold within H, else 0 (that is what an
    alert on ``predict_linear(v[lookback], H)`` does); the interval comes from the
    slope's standard error.
    """

    name = "predict_linear"

    def __init__(
        self, lookback: timedelta = timedelta(hours=6), max_eta: timedelta = timedelta(days=30)
    ) -> None:
        self.lookback = lookback
        self.max_eta = max_eta

    def evaluate_all(self, threshold: float = 1.0) -> pd.DataFrame:
        """The forecast as it would have been made at every sample time."""
        check_is_fitted(self, "frame_")
        frame = self.frame_
        reg = _windowed_regression(frame, self.lookback)
        origin = frame["ts"].to_numpy("datetime64[ns]")
        slope = reg["slope"].to_numpy()
        level = reg["intercept"].to_numpy()
        se = reg["slope_se"].to_numpy()
        eta = eta_from_line(origin, level, slope, threshold, self.max_eta)
        eta_lo = eta_from_line(origin, level, slope + _Z80 * se, threshold, self.max_eta)
        eta_hi = eta_from_line(origin, level, slope - _Z80 * se, threshold, self.max_eta)
        p = {}
        for key, horizon in HORIZONS.items():
            within = ~np.isnat(eta) & (eta <= origin + np.timedelta64(horizon))
            p[key] = within.astype("float64")
        return probabilities_frame(
            frame["series_id"].to_numpy(), origin, eta, eta_lo, eta_hi, p, self.name
        )


class NodeMixinRule(_RollingBaseline):
    """The node-mixin ``NodeFilesystemSpaceFillingUp`` alert, on fill ratios.

    A firing warning means "exhausts within 24 h" (``p_24h`` and ``p_4d`` are 1); a
    firing critical means "within 4 h" (``p_1h`` and ``p_4h`` are 1 too). ``eta`` is the
    6-hour line's crossing time while an alert fires.
    """

    name = "node_mixin"

    def __init__(
        self,
        lookback: timedelta = timedelta(hours=6),
        for_: timedelta = timedelta(hours=1),
        warning_fill: float = 0.6,
        critical_fill: float = 0.8,
        warning_horizon: timedelta = timedelta(hours=24),
        critical_horizon: timedelta = timedelta(hours=4),
    ) -> None:
        self.lookback = lookback
        self.for_ = for_
        self.warning_fill = warning_fill
        self.critical_fill = critical_fill
        self.warning_horizon = warning_horizon
        self.critical_horizon = critical_horizon

    def evaluate_all(self, threshold: float = 1.0) -> pd.DataFrame:
        """Alert state at every sample time, as a forecast frame."""
        check_is_fitted(self, "frame_")
        frame = self.frame_
        reg = _windowed_regression(frame, self.lookback)
        origin = frame["ts"].to_numpy("datetime64[ns]")
        value = frame["value"].to_numpy("float64")
        slope = reg["slope"].to_numpy()
        level = reg["intercept"].to_numpy()

        def condition(fill: float, horizon: timedelta) -> np.ndarray:
            ahead = level + slope * horizon.total_seconds()
            # Prometheus compares avail < 0, i.e. a predicted fill ratio above 1.
            return (value > fill) & np.isfinite(ahead) & (ahead > threshold)

        warning = self._held(frame, condition(self.warning_fill, self.warning_horizon))
        critical = self._held(frame, condition(self.critical_fill, self.critical_horizon))
        firing = warning | critical
        eta = eta_from_line(origin, level, slope, threshold, timedelta(days=30))
        eta = np.where(firing, eta, np.datetime64("NaT"))
        p = {
            "1h": critical.astype("float64"),
            "4h": critical.astype("float64"),
            "24h": firing.astype("float64"),
            "4d": firing.astype("float64"),
        }
        return probabilities_frame(
            frame["series_id"].to_numpy(), origin, eta, eta, eta, p, self.name
        )

    def _held(self, frame: pd.DataFrame, cond: np.ndarray) -> np.ndarray:
        """True where ``cond`` has held continuously for at least ``for_`` (pending → firing)."""
        series = frame["series_id"].to_numpy()
        ts = frame["ts"].to_numpy("datetime64[ns]")
        new_series = np.r_[True, series[1:] != series[:-1]]
        change = new_series | np.r_[True, cond[1:] != cond[:-1]]
        run = np.cumsum(change) - 1
        run_start = ts[np.flatnonzero(change)][run]
        held: np.ndarray = cond & (ts - run_start >= np.timedelta64(self.for_))
        return held
