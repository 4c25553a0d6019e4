"""statsforecast models as exhaustion forecasters: anchors beside the default and Prophet.

``StatsForecastForecaster(model="AutoETS" | "AutoTheta" | "MSTL")`` resamples each series
to hourly peaks (exhaustion happens at peaks), fits the model with statsforecast and reads
the forecast as the contract wants: ``eta`` where the mean path reaches the threshold,
the 80 % interval where the 80 % band's upper (lower) edge does, and P(exhaust within H)
as the largest per-step normal probability of being above the threshold within H (the
band's width gives the step's standard deviation). MSTL uses a daily season.

A series statsforecast cannot fit (too short, constant, a numerical failure) falls back
to the 6-hour ``predict_linear`` and is logged; one bad series never fails the batch.
"""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy.special import ndtr
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from autofix.errors import InputError
from autofix.models.base import (
    FORECAST_COLUMNS,
    HORIZONS,
    Forecaster,
    check_long_frame,
    empty_forecast,
)
from autofix.models.linear import PredictLinear

log = logging.getLogger(__name__)

MODELS = ("AutoETS", "AutoTheta", "MSTL")
_Z80 = 1.2815515655446004


def _make(model: str, season: int) -> Any:
    from statsforecast.models import MSTL, AutoETS, AutoTheta

    if model == "AutoETS":
        return AutoETS(season_length=1)
    if model == "AutoTheta":
        return AutoTheta(season_length=1)
    return MSTL(season_length=[season])


class StatsForecastForecaster(BaseEstimator, Forecaster):
    """A statsforecast model behind the forecaster contract (see the module docstring)."""

    def __init__(
        self,
        model: str = "AutoETS",
        lookback: timedelta = timedelta(days=7),
        freq: str = "1h",
        horizon: timedelta = timedelta(days=4),
        min_points: int = 48,
    ) -> None:
        self.model = model
        self.lookback = lookback
        self.freq = freq
        self.horizon = horizon
        self.min_points = min_points

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"statsforecast_{self.model.lower()}"

    def fit(self, frame: pd.DataFrame) -> Self:
        if self.model not in MODELS:
            raise InputError(f"unknown statsforecast model {self.model!r}; known: {MODELS}")
        data = check_long_frame(frame)
        self.frame_ = data
        return self

    def predict(self, threshold: float = 1.0) -> pd.DataFrame:
        check_is_fitted(self, "frame_")
        data = self.frame_
        if data.empty:
            return empty_forecast()
        step = pd.Timedelta(self.freq)
        season = max(int(pd.Timedelta("1D") / step), 2)
        steps = int(pd.Timedelta(self.horizon) / step)
        rows = []
        fallback: list[Any] = []
        for sid, group in data.groupby("series_id", sort=True):
            origin = group["ts"].iloc[-1]
            recent = group[group["ts"] > origin - self.lookback]
            hourly = recent.set_index("ts")["value"].resample(step).max().dropna()
            if len(hourly) < self.min_points or hourly.std() == 0:
                fallback.append(sid)
                continue
            try:
                mean, lo, hi = self._forecast(hourly.to_numpy("float64"), season, steps)
            except Exception as exc:  # numerical failures of one series: fall back
                log.info("series %r: statsforecast %s failed (%s)", sid, self.model, exc)
                fallback.append(sid)
                continue
            rows.append(_read_path(sid, origin, mean, lo, hi, step, threshold))
        parts = []
        if rows:
            mine = pd.DataFrame(rows, columns=list(FORECAST_COLUMNS)).assign(model=self.name)
            for column in ("origin", "eta", "eta_lo", "eta_hi"):
                mine[column] = pd.to_datetime(mine[column])
            parts.append(mine)
        if fallback:
            log.warning(
                "statsforecast %s: %d series fell back to predict_linear", self.model, len(fallback)
            )
            linear = PredictLinear().fit(data[data["series_id"].isin(fallback)])
            parts.append(linear.predict(threshold).assign(model=f"{self.name}+fallback"))
        if not parts:
            return empty_forecast()
        out = pd.concat(parts, ignore_index=True)
        return out.sort_values("series_id").reset_index(drop=True)

    def _forecast(
        self, y: np.ndarray, season: int, steps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        model = _make(self.model, season)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            fc = model.forecast(y=y, h=steps, level=[80])
        return (
            np.asarray(fc["mean"], dtype="float64"),
            np.asarray(fc["lo-80"], dtype="float64"),
            np.asarray(fc["hi-80"], dtype="float64"),
        )


def _first_at_or_above(path: np.ndarray, threshold: float) -> int | None:
    hit = np.flatnonzero(path >= threshold)
    return int(hit[0]) if hit.size else None


def _read_path(
    sid: Any,
    origin: pd.Timestamp,
    mean: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    step: pd.Timedelta,
    threshold: float,
) -> dict[str, Any]:
    def when(i: int | None) -> Any:
        return pd.NaT if i is None else origin + step * (i + 1)

    sd = np.maximum((hi - lo) / (2 * _Z80), 1e-9)
    prob_step = ndtr((mean - threshold) / sd)
    row: dict[str, Any] = {
        "series_id": sid,
        "origin": origin,
        "eta": when(_first_at_or_above(mean, threshold)),
        "eta_lo": when(_first_at_or_above(hi, threshold)),
        "eta_hi": when(_first_at_or_above(lo, threshold)),
    }
    for key, horizon in HORIZONS.items():
        n = max(int(pd.Timedelta(horizon) / step), 1)
        row[f"p_{key}"] = float(np.max(prob_step[:n])) if prob_step.size else 0.0
    row["model"] = ""
    return row
