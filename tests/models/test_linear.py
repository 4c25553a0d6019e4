"""The baselines are faithful: predict_linear is Prometheus' OLS, node-mixin its alert."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from autofix.models.linear import NodeMixinRule, PredictLinear

T0 = pd.Timestamp("2026-01-01")


def series(values: np.ndarray, step: str = "5min", sid: str = "s") -> pd.DataFrame:
    ts = pd.date_range(T0, periods=len(values), freq=step)
    return pd.DataFrame({"series_id": sid, "ts": ts, "value": values})


def test_predict_linear_is_ols_over_the_range_relative_to_eval_time() -> None:
    rng = np.random.default_rng(1)
    values = 0.3 + np.cumsum(rng.normal(0.001, 0.002, 200))
    frame = series(values)
    every = PredictLinear().fit(frame).evaluate_all(threshold=1.0)
    i = 150
    window = frame[
        (frame["ts"] >= frame["ts"][i] - timedelta(hours=6)) & (frame["ts"] <= frame["ts"][i])
    ]
    x = (window["ts"] - frame["ts"][i]).dt.total_seconds().to_numpy()
    slope, intercept = np.polyfit(x, window["value"].to_numpy(), 1)
    expected_eta = frame["ts"][i] + pd.Timedelta(seconds=(1.0 - intercept) / slope)
    assert abs((every["eta"][i] - expected_eta).total_seconds()) < 1.0
    # p_H is exactly "predict_linear(v[6h], H) > threshold".
    for key, hours in (("1h", 1), ("4h", 4), ("24h", 24), ("4d", 96)):
        assert every[f"p_{key}"][i] == float(intercept + slope * hours * 3600 > 1.0)


def test_predict_linear_needs_two_samples_and_a_rising_line() -> None:
    flat = PredictLinear().fit(series(np.full(50, 0.5))).predict()
    assert pd.isna(flat["eta"][0])
    one = PredictLinear().fit(series(np.array([0.5]))).predict()
    assert pd.isna(one["eta"][0])
    assert one["p_24h"][0] == 0.0


def test_node_mixin_needs_the_condition_for_an_hour() -> None:
    # Fill 0.7 rising fast enough to cross 1.0 within 24 h: the warning condition holds.
    values = 0.7 + np.arange(60) * 0.0015
    every = NodeMixinRule().fit(series(values)).evaluate_all()
    held = every["p_24h"].to_numpy()
    first = int(np.flatnonzero(held)[0])
    # Rows are 5 minutes apart: the condition holds from the second row (two samples
    # needed for a line), so firing starts 12 rows (1 h) after it.
    assert first == 1 + 12
    assert every["p_4h"].sum() == 0  # critical needs fill > 0.8 and a 4 h crossing


def test_node_mixin_quiet_below_60_percent_however_steep() -> None:
    values = 0.2 + np.arange(100) * 0.004  # reaches 0.6 only at the very end
    every = NodeMixinRule().fit(series(values)).evaluate_all()
    assert not every.loc[values <= 0.6, "p_24h"].any()
    assert every.loc[values > 0.6, "p_24h"].sum() == 0  # above 0.6 for < 1 h: still pending


def test_node_mixin_critical() -> None:
    values = 0.85 + np.arange(40) * 0.003  # crosses 1.0 in ~4 h at this slope
    every = NodeMixinRule().fit(series(values)).evaluate_all()
    assert every["p_4h"].iloc[-1] == 1.0
    assert every["p_24h"].iloc[-1] == 1.0


def test_flapping_on_sawtooth_is_what_the_baseline_does() -> None:
    # Daily rotation: ramp from 0.5 to 0.9 over a day, then drop. No exhaustion ever.
    day = np.linspace(0.5, 0.9, 288)
    values = np.tile(day, 5)
    every = NodeMixinRule().fit(series(values)).evaluate_all()
    fires = every["p_24h"].to_numpy()
    assert fires.sum() > 0  # the weakness autofix must not have


@pytest.mark.parametrize("model", [PredictLinear(), NodeMixinRule()])
def test_sklearn_contract(model: PredictLinear | NodeMixinRule) -> None:
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "frame_")
