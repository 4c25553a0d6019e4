"""Train and register the forecaster; load the model predictions are made with.

Shared by ``autofix train`` and the scheduled ``train`` / ``remediate`` jobs: backtest the
default forecaster on the labelled scenarios, log the run to MLflow, move the champion
alias only when the promotion gate passes.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from autofix._gc import collector_paused
from autofix.models.registry import make_forecaster

log = logging.getLogger(__name__)

#: The registered MLflow model the champion alias lives on.
REGISTERED_MODEL = "exhaustion-forecaster"
#: Time between backtest origins in a training run.
TRAIN_STEP = timedelta(hours=2)


@dataclass(frozen=True)
class TrainResult:
    model: str
    version: int
    run_id: str
    promoted: bool
    reason: str
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "run_id": self.run_id,
            "promoted": self.promoted,
            "reason": self.reason,
            "false_fix_rate": self.metrics.get("false_fix_rate"),
            "recall_24h": self.metrics.get("recall_24h"),
        }


@functools.cache
def _load_training_modules() -> None:
    """Import what a training run uses (pandas, scikit-learn, matplotlib, MLflow: seconds)
    once per process, with the garbage collector paused (see ``autofix._gc``)."""
    with collector_paused():
        import autofix.backtest.forecast
        import autofix.backtest.plots
        import autofix.models.envelope
        import autofix.tracking

        autofix.tracking.load_mlflow()


def train_and_register(models_dir: Path, scenarios: Path, compute: Any = None) -> TrainResult:
    """Backtest the default forecaster on ``scenarios``, log it, promote it if it passes.

    ``compute`` (an ``autofix.compute.Compute``): where the backtest's partitions run
    (default: in this process).
    """
    _load_training_modules()
    from autofix.backtest.forecast import backtest, load_scenarios
    from autofix.backtest.plots import forecast_plots
    from autofix.tracking import Tracker

    series = load_scenarios(scenarios)
    estimator = make_forecaster("default")
    # Decisions every 2 h, as the held-out benchmark makes them: half the fits of hourly
    # origins, so a warm `autofix train` stays interactive.
    results, forecasts = backtest(
        {"default": partial(make_forecaster, "default")}, series, step=TRAIN_STEP, compute=compute
    )
    metrics = results["default"]
    plots = forecast_plots(forecasts["default"], series, models_dir / "plots")
    tracker = Tracker(models_dir)
    run = tracker.log_training_run(
        model_name=REGISTERED_MODEL,
        estimator=estimator,
        params={k: str(v) for k, v in estimator.get_params().items()},
        metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
        plots=plots,
        tags={"scenarios": str(scenarios), "model": "default"},
    )
    decision = tracker.promote_if_better(REGISTERED_MODEL, run.version)
    return TrainResult(
        REGISTERED_MODEL,
        run.version,
        run.run_id,
        decision.promoted,
        decision.reason,
        dict(metrics),
    )


def champion_or_default(models_dir: Path) -> tuple[Any, str, str]:
    """(estimator, model name, version): the MLflow champion, else the untracked default."""
    from autofix.tracking import Tracker

    tracker = Tracker(models_dir)
    if tracker.champion(REGISTERED_MODEL) is None:
        log.warning("no champion model yet (run `autofix train`); using the default model")
        return make_forecaster("default"), "default", "untracked"
    estimator, version = tracker.load_champion(REGISTERED_MODEL)
    return estimator, str(getattr(estimator, "name", "default")), str(version)


__all__ = ["REGISTERED_MODEL", "TrainResult", "champion_or_default", "train_and_register"]
