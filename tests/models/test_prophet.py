"""The Prophet adapter: forecasts on synthetic fill ratios, fallback, contract, quietness."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import pytest
from joblib import parallel_config
from sklearn.base import BaseEstimator, clone

from autofix.errors import InputError
from autofix.models.base import FORECAST_COLUMNS, HORIZONS, Forecaster
from autofix.models.prophet import ProphetForecaster

STEP = pd.Timedelta("15min")
END = pd.Timestamp("2024-03-04 00:00")
TIME_TO_FULL = pd.Timedelta(hours=30)  # the linear series reaches 1.0 this long after END


def _times(days: float = 3) -> pd.DatetimeIndex:
    count = int(pd.Timedelta(days=days) / STEP)
    return pd.date_range(end=END, periods=count, freq=STEP)


def _linear(series_id: str = "linear") -> pd.DataFrame:
    ts = _times()
    rng = np.random.default_rng(1)
    hours = (ts - END) / pd.Timedelta(hours=1)
    slope = 0.4 / 72  # +0.4 over the three days
    value = 1.0 - slope * TIME_TO_FULL / pd.Timedelta(hours=1) + slope * hours
    return pd.DataFrame(
        {"series_id": series_id, "ts": ts, "value": value + rng.normal(0, 0.002, len(ts))}
    )


def _flat(series_id: str = "flat") -> pd.DataFrame:
    ts = _times()
    rng = np.random.default_rng(2)
    return pd.DataFrame(
        {"series_id": series_id, "ts": ts, "value": 0.4 + rng.normal(0, 0.003, len(ts))}
    )


def _constant(series_id: str = "constant") -> pd.DataFrame:
    return pd.DataFrame({"series_id": series_id, "ts": _times(), "value": 0.5})


def _short(series_id: str = "short") -> pd.DataFrame:
    ts = _times()[-4:]
    return pd.DataFrame({"series_id": series_id, "ts": ts, "value": [0.90, 0.92, 0.94, 0.96]})


def _model(**params: object) -> ProphetForecaster:
    defaults: dict[str, object] = {"uncertainty_samples": 100, "step": timedelta(minutes=15)}
    return ProphetForecaster(**{**defaults, **params})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fitted() -> ProphetForecaster:
    frame = pd.concat([_linear(), _flat(), _constant(), _short()], ignore_index=True)
    return _model().fit(frame)


@pytest.fixture(scope="module")
def forecast(fitted: ProphetForecaster) -> pd.DataFrame:
    return fitted.predict().set_index("series_id")


def test_linear_fill_gets_an_eta_near_the_truth(forecast: pd.DataFrame) -> None:
    row = forecast.loc["linear"]
    truth = END + TIME_TO_FULL
    assert row["origin"] == END
    assert abs(row["eta"] - truth) <= pd.Timedelta(hours=3)
    assert row["eta_lo"] <= row["eta"] <= row["eta_hi"]
    assert row["p_4d"] >= 0.9
    assert row["p_1h"] <= 0.05
    assert row["p_1h"] <= row["p_4h"] <= row["p_24h"] <= row["p_4d"]
    assert row["model"] == "prophet"


def test_flat_series_never_exhausts(forecast: pd.DataFrame) -> None:
    row = forecast.loc["flat"]
    assert pd.isna(row["eta"])
    assert pd.isna(row["eta_hi"])
    assert row["p_4d"] <= 0.05
    assert row["model"] == "prophet"


def test_unfittable_series_fall_back(fitted: ProphetForecaster, forecast: pd.DataFrame) -> None:
    assert set(fitted.fallback_reasons_) == {"constant", "short"}
    assert "constant" in fitted.fallback_reasons_["constant"]
    assert "too few points" in fitted.fallback_reasons_["short"]
    assert forecast.loc["constant", "model"] == "trend"
    assert pd.isna(forecast.loc["constant", "eta"])
    assert forecast.loc["constant", "p_4d"] == 0.0
    # Four points climbing 0.02 per 15 min reach 1.0 in about half an hour.
    short = forecast.loc["short"]
    assert short["model"] == "trend"
    lead = short["eta"] - short["origin"]
    assert abs(lead - pd.Timedelta(minutes=30)) < pd.Timedelta(seconds=1)
    assert short["p_1h"] > 0.5


def test_fallback_is_logged_once_per_series(caplog: pytest.LogCaptureFixture) -> None:
    frame = pd.concat([_constant("c1"), _short("s1")], ignore_index=True)
    with caplog.at_level(logging.INFO, logger="autofix.models.prophet"):
        model = _model().fit(frame)
        model.predict()
        model.predict()
    messages = [r.getMessage() for r in caplog.records if r.name == "autofix.models.prophet"]
    assert len(messages) == 2
    assert any("c1" in m and "constant series" in m for m in messages)
    assert any("s1" in m and "too few points" in m for m in messages)
    assert all(r.levelno == logging.INFO for r in caplog.records)


class _Fixed(BaseEstimator, Forecaster):
    """A fallback that always answers "full in one hour"."""

    name = "fixed"

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken

    def fit(self, frame: pd.DataFrame) -> Self:
        if self.broken:
            raise RuntimeError("cannot fit")
        self.last_ = frame.groupby("series_id")["ts"].max()
        return self

    def predict(self, threshold: float = 1.0) -> pd.DataFrame:
        eta = self.last_ + pd.Timedelta(hours=1)
        data: dict[str, object] = {
            "series_id": self.last_.index.to_numpy(),
            "origin": self.last_.to_numpy(),
            "eta": eta.to_numpy(),
            "eta_lo": eta.to_numpy(),
            "eta_hi": eta.to_numpy(),
        }
        data.update({f"p_{key}": 1.0 for key in HORIZONS})
        data["model"] = self.name
        return pd.DataFrame(data, columns=list(FORECAST_COLUMNS))


def test_custom_fallback_is_used() -> None:
    model = _model(fallback=_Fixed()).fit(_constant())
    out = model.predict()
    assert out.loc[0, "model"] == "fixed"
    assert out.loc[0, "p_1h"] == 1.0
    assert model.fallback is not model.fallback_  # the parameter itself stays unfitted


def test_a_broken_fallback_does_not_kill_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="autofix.models.prophet"):
        out = _model(fallback=_Fixed(broken=True)).fit(_constant()).predict()
    assert out.loc[0, "model"] == "trend"
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_columns_and_dtypes(forecast: pd.DataFrame) -> None:
    out = forecast.reset_index()
    assert tuple(out.columns) == FORECAST_COLUMNS
    assert list(out["series_id"]) == ["constant", "flat", "linear", "short"]
    for column in ("origin", "eta", "eta_lo", "eta_hi"):
        assert out[column].dtype == "datetime64[ns]"
    for key in HORIZONS:
        assert out[f"p_{key}"].dtype == "float64"
        assert out[f"p_{key}"].between(0, 1).all()


def test_clone_and_get_params() -> None:
    model = _model(changepoint_prior_scale=0.1, fallback=_Fixed(), max_horizon="2d")
    params = model.get_params()
    assert params["changepoint_prior_scale"] == 0.1
    assert params["uncertainty_samples"] == 100
    assert params["max_horizon"] == "2d"
    assert params["fallback__broken"] is False
    twin = clone(model)
    assert twin.get_params()["changepoint_prior_scale"] == 0.1
    assert twin.fallback is not model.fallback
    assert not hasattr(twin, "models_")


def test_predict_is_repeatable(fitted: ProphetForecaster) -> None:
    pd.testing.assert_frame_equal(fitted.predict(), fitted.predict())


def test_threads_give_the_same_answer(fitted: ProphetForecaster) -> None:
    frame = pd.concat([_linear(), _flat()], ignore_index=True)
    with parallel_config(backend="threading"):
        parallel = _model(n_jobs=2).fit(frame).predict()
    expected = fitted.predict()
    expected = expected[expected["series_id"].isin(["linear", "flat"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(parallel, expected)


def test_predict_path(fitted: ProphetForecaster) -> None:
    path = fitted.predict_path(horizon="6h", step="30m")
    assert list(path.columns) == ["series_id", "ts", "yhat", "yhat_lo", "yhat_hi"]
    assert path.groupby("series_id").size().to_dict() == {
        "constant": 12,
        "flat": 12,
        "linear": 12,
        "short": 12,
    }
    linear = path[path["series_id"] == "linear"]
    assert linear["ts"].iloc[0] == END + pd.Timedelta(minutes=30)
    assert (linear["yhat_lo"] <= linear["yhat"]).all()
    assert (linear["yhat"] <= linear["yhat_hi"]).all()
    assert linear["yhat"].is_monotonic_increasing


def test_threshold_is_honoured(fitted: ProphetForecaster) -> None:
    lower = fitted.predict(threshold=0.9).set_index("series_id")
    default = fitted.predict().set_index("series_id")
    assert lower.loc["linear", "eta"] < default.loc["linear", "eta"]


def test_bad_parameters_are_input_errors() -> None:
    with pytest.raises(InputError, match="step"):
        _model(step="soon").fit(_constant())
    with pytest.raises(InputError, match="interval_width"):
        _model(interval_width=1.5).fit(_constant())


def test_integer_ids_stay_integers() -> None:
    frame = pd.concat([_linear(), _short()], ignore_index=True)
    frame["series_id"] = frame["series_id"].map({"linear": 7, "short": 3})
    out = _model().fit(frame).predict()
    assert out["series_id"].dtype == "int64"
    assert list(out["series_id"]) == [3, 7]
    assert list(out["model"]) == ["trend", "prophet"]


def test_tz_aware_input_is_read_as_utc() -> None:
    frame = _short()
    frame["ts"] = frame["ts"].dt.tz_localize("Europe/Berlin")
    out = _model().fit(frame).predict()
    assert out.loc[0, "origin"] == END - pd.Timedelta(hours=1)


def test_quiet_from_import_to_predict() -> None:
    # A fresh interpreter: Prophet prints "Importing plotly failed" on import and
    # cmdstanpy logs every chain; none of it may reach a user running at INFO.
    script = textwrap.dedent(
        """
        import logging, sys
        logging.basicConfig(level=logging.INFO)
        import autofix.models.prophet
        import autofix.tracking
        assert "prophet" not in sys.modules and "mlflow" not in sys.modules
        from tests.models.test_prophet import _linear, _model
        _model().fit(_linear()).predict()
        assert "prophet" in sys.modules
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == ""
