"""Models in notebooks: backtests, MLflow runs against the champion, anomaly scoring."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from autofix.backtest.anomaly import ScoredSeries
from autofix.backtest.anomaly import threshold_sweep as _event_sweep
from autofix.backtest.forecast import LabelledSeries, backtest
from autofix.lab._data import Suite, settings
from autofix.models.anomaly import make_scorer
from autofix.models.registry import make_forecaster
from autofix.training import REGISTERED_MODEL

#: The backtest metrics a comparison shows first (all of them are returned).
KEY_METRICS = (
    "recall_24h",
    "precision_24h",
    "recall_4h",
    "false_fix_rate",
    "decisions",
    "false_alerts",
    "flaps",
    "false_alerts_sawtooth",
    "false_alerts_burst",
    "lead_time_median_min",
    "lead_time_share_ge_30min",
    "eta_rel_error_median",
    "interval_coverage_80",
)


def run_backtest(
    models: Sequence[str] = ("default", "predict_linear", "node_mixin"),
    series: Suite | Sequence[LabelledSeries] = (),
    *,
    step: timedelta = timedelta(hours=1),
    warmup: timedelta = timedelta(days=2),
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Rolling-origin backtest of registry models (``make_forecaster`` names).

    Returns the metrics (one row per model, ``autofix.backtest.forecast.evaluate``'s
    columns) and each model's forecasts at every origin. ``params`` sets estimator
    parameters per model, e.g. ``{"prophet": {"uncertainty_samples": 100}}``.
    """
    labelled = list(series.series if isinstance(series, Suite) else series)
    params = params or {}

    def factory(name: str) -> Any:
        def build() -> Any:
            return make_forecaster(name).set_params(**params.get(name, {}))

        return build

    results, forecasts = backtest(
        {name: factory(name) for name in models}, labelled, step=step, warmup=warmup
    )
    table = pd.DataFrame.from_dict(results, orient="index")
    table.index.name = "model"
    return table, forecasts


# -- MLflow ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRun:
    """A backtest logged to MLflow as a registered version (never promoted from here)."""

    model: str
    registered_model: str
    version: int
    run_id: str
    models_dir: Path  # the store the run was logged to
    metrics: dict[str, float] = field(default_factory=dict)
    champion_dir: Path | None = None  # the store whose champion it is compared with


@dataclass(frozen=True)
class Comparison:
    """A logged run next to the champion, and what the promotion gate would say."""

    table: pd.DataFrame
    promotable: bool
    reason: str
    champion_version: int | None


def _models_dir(models_dir: str | Path | None) -> Path:
    return Path(models_dir) if models_dir is not None else settings().models_dir


#: Where notebook runs go unless they ask to be registered: a scratch MLflow store, so
#: running a notebook never adds versions to the real ``models/`` registry.
SCRATCH_DIR = Path(tempfile.gettempdir()) / "autofix-notebook-mlflow"


def log_run(
    model: str,
    metrics: Mapping[str, float] | pd.Series,
    *,
    models_dir: str | Path | None = None,
    register: bool = False,
    scratch_dir: str | Path | None = None,
    params: Mapping[str, Any] | None = None,
    plots: Mapping[str, Path] | None = None,
    tags: Mapping[str, str] | None = None,
    registered_model: str = REGISTERED_MODEL,
) -> LoggedRun:
    """Log a backtest of ``model`` as a version of ``registered_model``.

    By default the version goes to a scratch MLflow store (``scratch_dir``, default
    ``SCRATCH_DIR``): a notebook run never adds versions to the real registry.
    ``register=True`` logs it into ``models_dir`` (default ``AUTOFIX_MODELS_DIR``). Either
    way ``compare_with_champion`` compares it with ``models_dir``'s champion, and the
    ``champion`` alias never moves from here (``autofix train`` or
    ``Tracker.promote_if_better`` do that, deliberately).
    """
    from autofix.tracking import Tracker

    real = _models_dir(models_dir)
    directory = real if register else Path(scratch_dir or SCRATCH_DIR)
    estimator = make_forecaster(model).set_params(**(params or {}))
    finite = {str(k): float(v) for k, v in dict(metrics).items() if math.isfinite(float(v))}
    run = Tracker(directory).log_training_run(
        model_name=registered_model,
        estimator=estimator,
        params={k: str(v) for k, v in estimator.get_params().items()},
        metrics=finite,
        plots=plots,
        tags={"autofix.source": "notebook", "model": model, **(tags or {})},
    )
    return LoggedRun(
        model, registered_model, run.version, run.run_id, directory, finite, champion_dir=real
    )


def list_models(models_dir: str | Path | None = None) -> pd.DataFrame:
    """Every registered version read back from MLflow (as ``autofix models list``)."""
    from autofix.tracking import Tracker

    rows = Tracker(_models_dir(models_dir)).list_models()
    columns = ["name", "version", "alias", "created", "false_fix_rate", "recall", "run_id"]
    return pd.DataFrame(rows, columns=columns)


def compare_with_champion(run: LoggedRun, *, metrics: Sequence[str] = KEY_METRICS) -> Comparison:
    """The run's metrics beside the current champion's, read from MLflow, and the verdict
    of the promotion gate (false_fix_rate < 0.01 and recall_24h not below the champion's),
    without moving the alias."""
    from autofix.tracking import ModelVersionInfo, Tracker, _gate

    tracker = Tracker(run.champion_dir or run.models_dir)
    champion = tracker.champion(run.registered_model)
    candidate = ModelVersionInfo(
        run.registered_model, run.version, run.run_id, dict(run.metrics), (), datetime.now(UTC)
    )
    promotable, reason = _gate(candidate, champion, recall_metric="recall_24h", max_ffr=0.01)
    ours = f"v{run.version} ({run.model})"
    theirs = f"champion v{champion.version}" if champion else "champion (none yet)"
    theirs_metrics = champion.metrics if champion else {}
    table = pd.DataFrame(
        {
            ours: [run.metrics.get(m, math.nan) for m in metrics],
            theirs: [theirs_metrics.get(m, math.nan) for m in metrics],
        },
        index=pd.Index(list(metrics), name="metric"),
    )
    return Comparison(table, promotable, reason, champion.version if champion else None)


# -- anomaly scoring ------------------------------------------------------------------------


def score_history(history: pd.DataFrame, scorer: str = "default", **params: Any) -> pd.DataFrame:
    """``history`` plus ``score``: the scorer's causal anomaly score in [0, 1] per sample.

    ``scorer`` is a CLI name (``default``: the robust state scorer; ``onset``: the same
    model read as news; ``zscore``: the rolling z-score baseline). One batch over every
    series; a point's score uses only it and earlier points of its series, so it equals
    what the online scorer gives live.
    """
    out = history.sort_values(["series_id", "ts"], kind="stable").reset_index(drop=True)
    model = make_scorer(scorer, **params)
    out["score"] = model.fit_score(out[["series_id", "ts", "value"]])
    return out


def default_threshold(scorer: str = "default") -> float:
    """The threshold the backtest and the docs use for a scorer."""
    return float(make_scorer(scorer).default_threshold)


def anomaly_cases(
    scored: pd.DataFrame, truth: pd.DataFrame, *, score: str = "score"
) -> list[ScoredSeries]:
    """One ``ScoredSeries`` per scored series that the truth labels (its slowdown windows;
    a series labelled with none counts every alert as false)."""
    keys = ["host", "metric", "labels"]
    windows = {
        tuple(row[k] for k in keys): row["slowdown_windows"] for row in truth.to_dict("records")
    }
    cases = []
    for _, group in scored.groupby("series_id", sort=True):
        first = group.iloc[0]
        key = tuple(first[k] for k in keys)
        if key in windows:
            cases.append(ScoredSeries.of(group["ts"], group[score].to_numpy(), windows[key]))
    return cases


def event_sweep(
    scored: pd.DataFrame,
    truth: pd.DataFrame,
    thresholds: Iterable[float],
    *,
    score: str = "score",
    **options: Any,
) -> pd.DataFrame:
    """Event-level precision / recall / F1 (``autofix.backtest.anomaly``) per threshold,
    pooled over the labelled series; ``options`` go to the evaluation (``deadline`` …)."""
    return _event_sweep(anomaly_cases(scored, truth, score=score), list(thresholds), **options)


__all__ = [
    "KEY_METRICS",
    "Comparison",
    "LoggedRun",
    "anomaly_cases",
    "compare_with_champion",
    "default_threshold",
    "event_sweep",
    "list_models",
    "log_run",
    "run_backtest",
    "score_history",
]
