"""Calibration: conformal bounds, reliability numbers counted by hand, the shipped file."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from autofix.backtest.calibration import conformal_bands, conformal_range, reliability
from autofix.backtest.forecast import calibration_error
from autofix.models.registry import default_calibration, make_forecaster

HOUR = 3600.0


def table(pred: list[float], true: list[float]) -> pd.DataFrame:
    n = len(pred)
    out = pd.DataFrame({"remaining_pred_s": pred, "remaining_true_s": true, "y_4d": [True] * n})
    for h in ("1h", "4h", "24h"):
        out[f"p_{h}"] = 0.0
        out[f"y_{h}"] = False
    out["p_4d"] = 1.0
    return out


def test_conformal_bounds_cover_the_residuals() -> None:
    rng = np.random.default_rng(0)
    pred = rng.uniform(2, 90, 400) * HOUR
    ratio = np.exp(rng.normal(0.1, 0.3, 400))  # the model is a bit early, ±30 %
    lo, hi = conformal_range(table(list(pred), list(pred * ratio)))[0]
    assert lo < 0.1 < hi
    covered = np.mean((np.log(ratio) >= lo) & (np.log(ratio) <= hi))
    assert 0.78 <= covered <= 0.84


def test_a_missed_eta_widens_both_bounds() -> None:
    pred = [10 * HOUR] * 8 + [math.nan] * 2  # two origins where the model saw nothing
    (lo, hi), n = conformal_range(table(pred, [10 * HOUR] * 10))
    assert n == 10
    assert lo == -math.inf
    assert hi == math.inf


def test_conformal_bands_cover_each_band() -> None:
    # Near ETAs miss by a factor of ~2 both ways, far ones by ~5 %: one pair of bounds
    # would over-cover the far band and under-cover the near one.
    rng = np.random.default_rng(1)
    near = rng.uniform(1, 10, 600) * HOUR
    far = rng.uniform(50, 90, 600) * HOUR
    spread = np.r_[rng.normal(0, 0.7, 600), rng.normal(0, 0.05, 600)]
    pred = np.r_[near, far]
    bands = conformal_bands(table(list(pred), list(pred * np.exp(spread))))
    assert [b[0] for b in bands] == [12.0, None]  # the empty 24 h and 48 h bands merged
    (_, lo_near, hi_near), (_, lo_far, hi_far) = bands
    for lo, hi, part in ((lo_near, hi_near, spread[:600]), (lo_far, hi_far, spread[600:])):
        assert 0.77 <= np.mean((part >= lo) & (part <= hi)) <= 0.85
    assert hi_near - lo_near > 5 * (hi_far - lo_far)
    (lo, hi), _ = conformal_range(table(list(pred), list(pred * np.exp(spread))))
    assert np.mean((spread[600:] >= lo) & (spread[600:] <= hi)) > 0.95  # the global pair


def test_a_thin_band_is_merged_and_a_missed_eta_sits_in_the_last() -> None:
    pred = [5 * HOUR] * 150 + [30 * HOUR] * 120 + [math.nan] * 20
    bands = conformal_bands(table(pred, [6 * HOUR] * 290), min_band=100)
    assert [b[0] for b in bands] == [12.0, None]  # 12-24 h joins 24-48 h; 48 h-∞ joins them
    assert bands[0][1] == bands[0][2] == pytest.approx(math.log(6 / 5), abs=1e-6)
    assert bands[1][1] == -math.inf  # 1 in 7 saw nothing: missed on both sides
    assert bands[1][2] == math.inf


def test_calibration_error_and_brier_by_hand() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    # bin 0: mean p 0.05, frequency 0.5; bin 9: 0.95 vs 1.0 -> (0.45 + 0.05) / 2
    assert calibration_error(p, y) == pytest.approx(0.25)
    frame = table([HOUR] * 4, [HOUR] * 4)
    frame["p_24h"], frame["y_24h"] = p, y.astype(bool)
    stats = reliability(frame)["24h"]
    assert stats["ece"] == pytest.approx(0.25)
    assert stats["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert [b["n"] for b in stats["bins"]] == [2, 2]


def test_the_default_forecaster_ships_calibrated() -> None:
    params = default_calibration()
    lo, hi = params["interval_log_range"]
    assert lo < 0 < hi
    assert set(params["calibration"]) == {"1h", "4h", "24h", "4d"}
    for xs, ys in params["calibration"].values():
        assert list(xs) == sorted(xs)
        assert list(ys) == sorted(ys)
    model = make_forecaster("default")
    assert model.get_params()["interval_log_range"] == (lo, hi)
    assert make_forecaster("uncalibrated").get_params()["calibration"] is None
