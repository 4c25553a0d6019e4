"""statsforecast anchors behind the forecaster contract, with the fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autofix.errors import InputError
from autofix.models.anchors import StatsForecastForecaster
from autofix.models.base import FORECAST_COLUMNS


def fill(n: int, sid: str, slope: float) -> pd.DataFrame:
    ts = pd.date_range("2026-01-01", periods=n, freq="5min")
    rng = np.random.default_rng(0)
    values = 0.5 + slope * np.arange(n) + rng.normal(0, 0.002, n)
    return pd.DataFrame({"series_id": sid, "ts": ts, "value": values})


def test_theta_forecasts_a_fill_and_a_short_series_falls_back() -> None:
    frame = pd.concat(
        [fill(6 * 288, "filling", 0.4 / (6 * 288)), fill(30, "short", 0.001)], ignore_index=True
    )
    out = StatsForecastForecaster(model="AutoTheta").fit(frame).predict()
    assert list(out.columns) == list(FORECAST_COLUMNS)
    filling = out[out["series_id"] == "filling"].iloc[0]
    assert filling["model"] == "statsforecast_autotheta"
    assert filling["p_4d"] > 0.9  # 90 % full and 6.7 %/day: full in about 1.5 days
    assert filling["p_1h"] < 0.1
    assert filling["eta_lo"] <= filling["eta"] <= filling["eta_hi"]
    short = out[out["series_id"] == "short"].iloc[0]
    assert short["model"] == "statsforecast_autotheta+fallback"


def test_unknown_model_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown statsforecast model"):
        StatsForecastForecaster(model="ARIMA").fit(fill(100, "a", 0.0))
