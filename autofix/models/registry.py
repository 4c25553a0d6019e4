"""Forecasters by name, as the CLI, the backtest and MLflow refer to them."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from autofix.errors import InputError

_CALIBRATION = Path(__file__).with_name("calibration.json")


def default_calibration() -> dict[str, Any]:
    """The shipped calibration of the default forecaster (``{}`` when there is none).

    Fitted on the tuning seeds' backtest by ``benchmarks/forecast.py --calibrate``
    (``autofix.backtest.calibration``): the conformal interval bounds and the isotonic
    maps of P(exhaust within H), with their own maps for series near full.
    """
    if not _CALIBRATION.is_file():
        return {}
    raw = json.loads(_CALIBRATION.read_text(encoding="utf-8"))
    return {
        "interval_log_range": tuple(raw["interval_log_range"]),
        "interval_bins": [tuple(b) for b in raw.get("interval_bins", [])] or None,
        "calibration": {k: (list(v[0]), list(v[1])) for k, v in raw["calibration"].items()},
        "level_bands": [
            (float(edge), {k: (list(v[0]), list(v[1])) for k, v in maps.items()})
            for edge, maps in raw.get("level_bands", [])
        ]
        or None,
    }


def _default() -> Any:
    from autofix.models.envelope import EnvelopeTrendForecaster

    return EnvelopeTrendForecaster(**default_calibration())


def _raw() -> Any:
    from autofix.models.envelope import EnvelopeTrendForecaster

    return EnvelopeTrendForecaster()


def _predict_linear() -> Any:
    from autofix.models.linear import PredictLinear

    return PredictLinear()


def _node_mixin() -> Any:
    from autofix.models.linear import NodeMixinRule

    return NodeMixinRule()


def _prophet() -> Any:
    # Imported lazily: Prophet and cmdstanpy take seconds to import.
    from autofix.models.prophet import ProphetForecaster

    return ProphetForecaster()


def _statsforecast(model: str) -> Any:
    # Imported lazily: statsforecast compiles with numba on first use.
    from autofix.models.anchors import StatsForecastForecaster

    return StatsForecastForecaster(model=model)


FORECASTERS: dict[str, Callable[[], Any]] = {
    "default": _default,
    "uncalibrated": _raw,
    "predict_linear": _predict_linear,
    "node_mixin": _node_mixin,
    "prophet": _prophet,
    "autoets": partial(_statsforecast, "AutoETS"),
    "autotheta": partial(_statsforecast, "AutoTheta"),
    "mstl": partial(_statsforecast, "MSTL"),
}


#: The anomaly scorers' names (``autofix.models.anomaly.SCORERS``, which imports
#: scikit-learn): here so the CLI can list them without that import.
SCORER_NAMES = ("default", "onset", "zscore")


def make_forecaster(name: str) -> Any:
    """A new, unfitted forecaster; InputError naming the choices for an unknown name."""
    try:
        return FORECASTERS[name]()
    except KeyError:
        raise InputError(f"unknown model {name!r} (known: {', '.join(FORECASTERS)})") from None
