"""Forecasters by name, as the CLI, the backtest and MLflow refer to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autofix.errors import InputError


def _default() -> Any:
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


FORECASTERS: dict[str, Callable[[], Any]] = {
    "default": _default,
    "predict_linear": _predict_linear,
    "node_mixin": _node_mixin,
    "prophet": _prophet,
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
