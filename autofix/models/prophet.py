"""Prophet behind the forecaster contract: the slow, well-known challenger.

One Prophet model is fitted per series on the fill ratio. Forecasts come from Prophet's
posterior predictive sample paths on a regular grid after each series' last sample:

- ``eta``: first grid time where the median path reaches the threshold;
- ``eta_lo``/``eta_hi``: the ``interval_width`` quantiles (10th/90th by default) of the
  paths' first crossing times, widened to contain ``eta``;
- ``p_H``: the share of paths that reach the threshold within H.

Prophet is quiet here: its loggers and cmdstanpy's are silenced before it is imported
(it logs "Importing plotly failed" at import time, cmdstanpy logs every chain), and it is
imported lazily so that importing autofix stays fast. A series Prophet cannot fit (too
few points, constant, a Stan error) is handed to ``fallback`` and logged once at INFO;
a batch never dies. Fitting fans out over series with joblib (``n_jobs``; a joblib
``parallel_config`` backend such as Dask applies too).

>>> import pandas as pd
>>> ts = pd.date_range("2024-01-01", periods=48, freq="h")
>>> frame = pd.DataFrame({"series_id": 1, "ts": ts, "value": 0.5 + 0.01 * ts.hour / 23})
>>> model = ProphetForecaster(uncertainty_samples=50).fit(frame)
>>> bool(model.predict().loc[0, "p_1h"] < 0.5)
True
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Hashable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from autofix.config import parse_duration
from autofix.errors import InputError
from autofix.models.base import HORIZONS, Forecaster, check_long_frame, probabilities_frame

if TYPE_CHECKING:
    from prophet import Prophet

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_LONGEST_HORIZON = max(HORIZONS.values())
_Z80 = 1.2815515655446004  # 10th/90th percentiles of a normal: an 80 % interval


def _quiet_loggers() -> None:
    # prophet.plot logs "Importing plotly failed" at ERROR on import; cmdstanpy installs
    # its own stderr handler unless the logger already has one, then logs every chain.
    # Failures still reach users: the adapter logs each fallback with its reason.
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    cmdstanpy_logger = logging.getLogger("cmdstanpy")
    if not any(isinstance(h, logging.NullHandler) for h in cmdstanpy_logger.handlers):
        cmdstanpy_logger.addHandler(logging.NullHandler())
    cmdstanpy_logger.setLevel(logging.CRITICAL)


# At import, not only before our own `import prophet`: fitted models coming back from
# joblib workers import prophet while being unpickled, in a process that never fitted.
_quiet_loggers()


@functools.cache
def _prophet_class() -> type[Prophet]:
    """Import Prophet with its and cmdstanpy's logging silenced (once per process)."""
    _quiet_loggers()
    from prophet import Prophet

    # prophet.forecaster sets its logger to INFO at import ("Disabling yearly
    # seasonality", "Optimization terminated abnormally. Falling back to Newton").
    logging.getLogger("prophet").setLevel(logging.ERROR)
    return Prophet


def _duration(value: timedelta | str, name: str) -> timedelta:
    try:
        result = parse_duration(value)
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from None
    if result <= timedelta(0):
        raise InputError(f"{name}: must be positive, got {value!r}")
    return result


def _naive_utc(ts: pd.Series) -> pd.Series:
    """Prophet wants naive timestamps; the store keeps naive UTC, so do the same."""
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        naive: pd.Series = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        return naive
    return ts


def _fit_one(
    series_id: Hashable, ds: np.ndarray, y: np.ndarray, params: dict[str, Any], min_points: int
) -> tuple[Hashable, Prophet | None, str]:
    """Fit one series; never raises. Returns (id, model or None, why it fell back)."""
    if len(y) < min_points:
        return series_id, None, f"too few points ({len(y)} < {min_points})"
    if np.ptp(y) == 0.0:
        return series_id, None, "constant series"
    try:
        model = _prophet_class()(**params)
        # Prophet picks Newton below 100 points, which can take seconds on a clean line;
        # L-BFGS finds the same optimum in milliseconds (Newton stays its fallback).
        model.fit(pd.DataFrame({"ds": ds, "y": y}), algorithm="LBFGS")
    except Exception as exc:  # Stan, pandas or numerical failures: all mean "fall back"
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        return series_id, None, f"Prophet failed: {type(exc).__name__}: {first_line}"
    if not all(np.all(np.isfinite(v)) for v in model.params.values()):
        return series_id, None, "Prophet returned non-finite parameters"
    # The Stan fit object points at deleted temp files, and the history is not needed to
    # sample the future: dropping both keeps the model small and picklable.
    model.stan_fit = None
    model.history = None
    return series_id, model, ""


def _first_crossing(paths: np.ndarray, threshold: float, offsets: np.ndarray) -> np.ndarray:
    """Seconds until each column of ``paths`` first reaches ``threshold`` (inf: never)."""
    above = paths >= threshold
    first = above.argmax(axis=0)
    return np.where(above.any(axis=0), offsets[first], np.inf)


_erfc = np.vectorize(math.erfc, otypes=["float64"])


def _at(origin: np.datetime64, seconds: float) -> np.datetime64:
    if not math.isfinite(seconds):
        return np.datetime64("NaT", "ns")
    return origin + np.timedelta64(round(seconds * _NS), "ns")


class _TrendFallback(BaseEstimator, Forecaster):
    """Least-squares line over the last ``lookback`` of each series.

    The default fallback: it fits anything with at least one point (one point or a
    constant series is a flat line). ``p_H`` treats the slope as normal with its standard
    error, so it rises with H when the line heads for the threshold.
    """

    name = "trend"

    def __init__(
        self, lookback: timedelta = timedelta(hours=6), max_horizon: timedelta = timedelta(days=4)
    ) -> None:
        self.lookback = lookback
        self.max_horizon = max_horizon

    def fit(self, frame: pd.DataFrame) -> Self:
        frame = check_long_frame(frame)
        frame["ts"] = _naive_utc(frame["ts"])
        rows = []
        for series_id, group in frame.groupby("series_id", sort=True):
            ts = group["ts"].to_numpy("datetime64[ns]")
            y = group["value"].to_numpy("float64")
            keep = ts >= ts[-1] - np.timedelta64(self.lookback)
            seconds = (ts[keep] - ts[-1]).astype("int64") / _NS
            level, slope, slope_se = _line(seconds, y[keep])
            rows.append((series_id, ts[-1], level, slope, slope_se))
        self.lines_ = pd.DataFrame(
            rows, columns=["series_id", "origin", "level", "slope", "slope_se"]
        )
        return self

    def predict(self, threshold: float = 1.0) -> pd.DataFrame:
        check_is_fitted(self, "lines_")
        lines = self.lines_
        origin = lines["origin"].to_numpy("datetime64[ns]")
        level = lines["level"].to_numpy("float64")
        slope = lines["slope"].to_numpy("float64")
        se = lines["slope_se"].to_numpy("float64")

        def eta_for(rate: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                seconds = np.where(level >= threshold, 0.0, (threshold - level) / rate)
            ok = np.isfinite(seconds) & (seconds >= 0)
            ok &= seconds <= self.max_horizon.total_seconds()
            ns = np.rint(np.where(ok, seconds * _NS, 0)).astype("int64").astype("timedelta64[ns]")
            return np.where(ok, origin + ns, np.datetime64("NaT", "ns"))

        p_within = {}
        for key, horizon in HORIZONS.items():
            needed = (threshold - level) / horizon.total_seconds()  # slope that gets there
            with np.errstate(divide="ignore", invalid="ignore"):
                spread = 0.5 * _erfc((needed - slope) / (se * math.sqrt(2.0)))
            # Without a usable standard error (two points, a perfect line) the line decides.
            hedged = np.where(se > 0, spread, (slope >= needed).astype("float64"))
            p_within[key] = np.where(level >= threshold, 1.0, hedged)
        return probabilities_frame(
            lines["series_id"].to_numpy(),
            origin,
            eta_for(slope),
            eta_for(slope + _Z80 * se),
            eta_for(slope - _Z80 * se),
            p_within,
            self.name,
        )

    def predict_path(self, horizon: timedelta, step: timedelta) -> pd.DataFrame:
        """The line itself (no band beyond the slope's standard error), for charts."""
        check_is_fitted(self, "lines_")
        lines = self.lines_
        offsets = np.arange(1, max(1, int(horizon / step)) + 1) * step.total_seconds()
        level = lines["level"].to_numpy("float64")[:, None]
        slope = lines["slope"].to_numpy("float64")[:, None]
        se = np.nan_to_num(lines["slope_se"].to_numpy("float64"))[:, None]
        origin = lines["origin"].to_numpy("datetime64[ns]")[:, None]
        steps = (offsets * _NS).astype("int64").astype("timedelta64[ns]")[None, :]
        return pd.DataFrame(
            {
                "series_id": np.repeat(lines["series_id"].to_numpy(), len(offsets)),
                "ts": (origin + steps).ravel(),
                "yhat": (level + slope * offsets).ravel(),
                "yhat_lo": (level + (slope - _Z80 * se) * offsets).ravel(),
                "yhat_hi": (level + (slope + _Z80 * se) * offsets).ravel(),
            }
        )


def _line(seconds: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """OLS ``y ~ a + b t`` with t = 0 at the last sample: (level at t=0, slope, slope SE)."""
    if len(y) < 2 or np.ptp(seconds) == 0:
        return float(y[-1]), 0.0, math.nan
    t_mean = seconds.mean()
    y_mean = y.mean()
    sxx = float(((seconds - t_mean) ** 2).sum())
    slope = float(((seconds - t_mean) * (y - y_mean)).sum() / sxx)
    level = float(y_mean - slope * t_mean)
    resid = y - (level + slope * seconds)
    se = math.sqrt(float((resid**2).sum()) / (len(y) - 2) / sxx) if len(y) > 2 else math.nan
    return level, slope, se


_PATH_COLUMNS = ("series_id", "ts", "yhat", "yhat_lo", "yhat_hi")


def _concat_paths(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(
            {
                "series_id": pd.Series(dtype="object"),
                "ts": pd.Series(dtype="datetime64[ns]"),
                **{c: pd.Series(dtype="float64") for c in _PATH_COLUMNS[2:]},
            }
        )
    return pd.concat(parts, ignore_index=True)


class ProphetForecaster(BaseEstimator, Forecaster):
    """Prophet per series, answering ETA, its 80 % interval and P(exhaust within H).

    Rows of series that fell back carry the fallback's name in ``model``; the reasons
    are in ``fallback_reasons_``.
    """

    name = "prophet"

    def __init__(
        self,
        *,
        daily_seasonality: bool = True,
        weekly_seasonality: bool = False,
        changepoint_prior_scale: float = 0.05,
        changepoint_range: float = 0.9,
        n_changepoints: int = 25,
        uncertainty_samples: int = 200,
        interval_width: float = 0.8,
        max_horizon: timedelta | str = timedelta(days=4),
        step: timedelta | str = timedelta(minutes=10),
        min_points: int = 24,
        n_jobs: int | None = 1,
        random_state: int = 0,
        fallback: BaseEstimator | None = None,
    ) -> None:
        self.daily_seasonality = daily_seasonality
        self.weekly_seasonality = weekly_seasonality
        self.changepoint_prior_scale = changepoint_prior_scale
        self.changepoint_range = changepoint_range
        self.n_changepoints = n_changepoints
        self.uncertainty_samples = uncertainty_samples
        self.interval_width = interval_width
        self.max_horizon = max_horizon
        self.step = step
        self.min_points = min_points
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.fallback = fallback

    def _prophet_params(self) -> dict[str, Any]:
        return {
            "growth": "linear",
            "daily_seasonality": self.daily_seasonality,
            "weekly_seasonality": self.weekly_seasonality,
            "yearly_seasonality": False,
            "changepoint_prior_scale": self.changepoint_prior_scale,
            "changepoint_range": self.changepoint_range,
            "n_changepoints": self.n_changepoints,
            "uncertainty_samples": self.uncertainty_samples,
            "interval_width": self.interval_width,
        }

    def _validate(self) -> tuple[timedelta, timedelta]:
        max_horizon = _duration(self.max_horizon, "max_horizon")
        step = _duration(self.step, "step")
        if step > max_horizon:
            raise InputError(f"step {step} is longer than max_horizon {max_horizon}")
        if self.uncertainty_samples < 1:
            raise InputError("uncertainty_samples must be at least 1")
        if not 0.0 < self.interval_width < 1.0:
            raise InputError("interval_width must be between 0 and 1")
        return max_horizon, step

    def fit(self, frame: pd.DataFrame) -> Self:
        """Fit one Prophet per series of the long fill-ratio frame; returns ``self``."""
        max_horizon, step = self._validate()
        frame = check_long_frame(frame)
        frame["ts"] = _naive_utc(frame["ts"])
        params = self._prophet_params()
        groups = [
            (sid, g["ts"].to_numpy("datetime64[ns]"), g["value"].to_numpy("float64"))
            for sid, g in frame.groupby("series_id", sort=True)
        ]
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_one)(sid, ds, y, params, self.min_points) for sid, ds, y in groups
        )
        self.models_: dict[Hashable, Prophet] = {}
        self.origins_: dict[Hashable, np.datetime64] = {}
        self.fallback_reasons_: dict[Hashable, str] = {}
        fallback = self._fallback_estimator(max_horizon)
        for (sid, ds, _), (_, model, reason) in zip(groups, results, strict=True):
            if model is None:
                self.fallback_reasons_[sid] = reason
                log.info("prophet: series %s falls back to %s: %s", sid, fallback.name, reason)
            else:
                self.models_[sid] = model
                self.origins_[sid] = ds[-1]
        self.fallback_: Any = None
        if self.fallback_reasons_:
            failed = frame[frame["series_id"].isin(list(self.fallback_reasons_))]
            try:
                self.fallback_ = fallback.fit(failed)
            except Exception as exc:  # the batch must survive a broken fallback too
                log.warning(
                    "prophet: fallback %s failed (%s: %s); using a least-squares trend",
                    fallback.name,
                    type(exc).__name__,
                    exc,
                )
                self.fallback_ = _TrendFallback(max_horizon=max_horizon).fit(failed)
        self.max_horizon_ = max_horizon
        self.step_ = step
        return self

    def _fallback_estimator(self, max_horizon: timedelta) -> Any:
        if self.fallback is None:
            return _TrendFallback(max_horizon=max_horizon)
        return clone(self.fallback)

    def _grid(self, horizon: timedelta, step: timedelta) -> np.ndarray:
        """Seconds after the origin at which paths are sampled (first point: one step)."""
        count = max(1, math.ceil(horizon / step))
        return np.arange(1, count + 1, dtype="float64") * step.total_seconds()

    def _sample(self, model: Prophet, origin: np.datetime64, offsets: np.ndarray) -> np.ndarray:
        """Posterior predictive paths, shape (len(offsets), uncertainty_samples)."""
        ds = origin + (offsets * _NS).astype("int64").astype("timedelta64[ns]")
        # Prophet draws from numpy's global generator: seed it for repeatable forecasts
        # and put the caller's state back afterwards.
        state = np.random.get_state()
        np.random.seed(self.random_state)
        try:
            samples = model.predictive_samples(pd.DataFrame({"ds": ds}))["yhat"]
        finally:
            np.random.set_state(state)
        return np.asarray(samples, dtype="float64")

    def predict(self, threshold: float = 1.0) -> pd.DataFrame:
        """One row per fitted series with ``FORECAST_COLUMNS``, sorted by series id."""
        check_is_fitted(self, "models_")
        horizon = max(self.max_horizon_, _LONGEST_HORIZON)
        offsets = self._grid(horizon, self.step_)
        limit = self.max_horizon_.total_seconds()
        lo_q = (1.0 - self.interval_width) / 2.0
        ids: list[Hashable] = []
        origins: list[np.datetime64] = []
        etas: list[np.datetime64] = []
        los: list[np.datetime64] = []
        his: list[np.datetime64] = []
        p_within: dict[str, list[float]] = {key: [] for key in HORIZONS}
        for sid, model in self.models_.items():
            origin = self.origins_[sid]
            paths = self._sample(model, origin, offsets)
            crossing = _first_crossing(paths, threshold, offsets)
            median = _first_crossing(np.median(paths, axis=1)[:, None], threshold, offsets)[0]
            lo, hi = np.quantile(crossing, [lo_q, 1.0 - lo_q], method="inverted_cdf")
            lo = min(lo, median)
            if math.isfinite(hi):  # an open upper end stays open
                hi = max(hi, median)
            ids.append(sid)
            origins.append(origin)
            for bucket, seconds in ((etas, median), (los, lo), (his, hi)):
                bucket.append(_at(origin, seconds if seconds <= limit else math.inf))
            for key, h in HORIZONS.items():
                p_within[key].append(float(np.mean(crossing <= h.total_seconds())))
        ours = probabilities_frame(
            pd.Series(ids, dtype=None if ids else "object").to_numpy(),  # keep int ids int
            np.array(origins, dtype="datetime64[ns]"),
            np.array(etas, dtype="datetime64[ns]"),
            np.array(los, dtype="datetime64[ns]"),
            np.array(his, dtype="datetime64[ns]"),
            {key: np.array(v, dtype="float64") for key, v in p_within.items()},
            self.name,
        )
        if self.fallback_ is None:
            return ours
        theirs: pd.DataFrame = self.fallback_.predict(threshold=threshold)
        if not len(ours):
            return theirs.reset_index(drop=True)
        both = pd.concat([ours, theirs], ignore_index=True)
        return both.sort_values("series_id", kind="stable").reset_index(drop=True)

    def predict_path(
        self, horizon: timedelta | str | None = None, step: timedelta | str | None = None
    ) -> pd.DataFrame:
        """Median path and interval per series for charts: ``series_id, ts, yhat, yhat_lo,
        yhat_hi``. Fallen-back series appear when the fallback has ``predict_path``."""
        check_is_fitted(self, "models_")
        horizon_td = self.max_horizon_ if horizon is None else _duration(horizon, "horizon")
        step_td = self.step_ if step is None else _duration(step, "step")
        offsets = self._grid(horizon_td, step_td)
        lo_q = (1.0 - self.interval_width) / 2.0
        parts = []
        for sid, model in self.models_.items():
            origin = self.origins_[sid]
            paths = self._sample(model, origin, offsets)
            lo, mid, hi = np.quantile(paths, [lo_q, 0.5, 1.0 - lo_q], axis=1)
            parts.append(
                pd.DataFrame(
                    {
                        "series_id": sid,
                        "ts": origin + (offsets * _NS).astype("int64").astype("timedelta64[ns]"),
                        "yhat": mid,
                        "yhat_lo": lo,
                        "yhat_hi": hi,
                    }
                )
            )
        if self.fallback_ is not None and hasattr(self.fallback_, "predict_path"):
            parts.append(self.fallback_.predict_path(horizon_td, step_td))
        paths_frame = _concat_paths(parts)
        return paths_frame.sort_values(["series_id", "ts"], kind="stable").reset_index(drop=True)
