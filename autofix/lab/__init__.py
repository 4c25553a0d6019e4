"""The notebook API: the service's store, models and policy, for data scientists.

Everything here calls the classes the service runs — ``MetricStore``, the forecaster
registry, ``backtest``, ``Tracker``, ``autofix.policy.decide`` — so what a notebook
finds is what ``autofix serve`` would do. The notebooks in ``notebooks/`` use it.

- the store, read-only, while ``autofix serve`` writes it (``open_store``, falling back
  to the Parquet snapshot), and its series as DataFrames (``load_series``, ``find_gaps``,
  ``capacity_changes``);
- labelled histories: ``scenario_suite(size)`` (``small`` for tests, ``full``) and
  ``recorded_suite()`` (a real PostgreSQL's latency);
- models: ``run_backtest``, ``log_run`` / ``compare_with_champion`` / ``list_models``
  (MLflow under a models directory you choose), ``score_history`` / ``event_sweep``;
- rules: ``replay_rules`` over history, ``replay_summary``, ``threshold_sweep``,
  ``best_threshold``, ``suggest_rule_change``.

    >>> from autofix import lab
    >>> suite = lab.scenario_suite("small")                      # doctest: +SKIP
    >>> metrics, forecasts = lab.run_backtest(series=suite)      # doctest: +SKIP
"""

from autofix.lab._data import (
    SERIES_COLUMNS,
    SIZES,
    Size,
    Suite,
    capacity_changes,
    find_gaps,
    load_series,
    open_store,
    recorded_suite,
    scenario_suite,
    settings,
    truth_frame,
    use_project_dir,
    with_fill,
)
from autofix.lab._models import (
    KEY_METRICS,
    Comparison,
    LoggedRun,
    anomaly_cases,
    compare_with_champion,
    default_threshold,
    event_sweep,
    list_models,
    log_run,
    run_backtest,
    score_history,
)
from autofix.lab._replay import (
    DECISION_COLUMNS,
    load_rules,
    observe,
    predict_history,
    replay_rules,
)
from autofix.lab._tuning import (
    best_threshold,
    replay_summary,
    rules_table,
    suggest_rule_change,
    threshold_field,
    threshold_sweep,
    with_threshold,
)

__all__ = [
    "DECISION_COLUMNS",
    "KEY_METRICS",
    "SERIES_COLUMNS",
    "SIZES",
    "Comparison",
    "LoggedRun",
    "Size",
    "Suite",
    "anomaly_cases",
    "best_threshold",
    "capacity_changes",
    "compare_with_champion",
    "default_threshold",
    "event_sweep",
    "find_gaps",
    "list_models",
    "load_rules",
    "load_series",
    "log_run",
    "observe",
    "open_store",
    "predict_history",
    "recorded_suite",
    "replay_rules",
    "replay_summary",
    "rules_table",
    "run_backtest",
    "scenario_suite",
    "score_history",
    "settings",
    "suggest_rule_change",
    "threshold_field",
    "threshold_sweep",
    "truth_frame",
    "use_project_dir",
    "with_fill",
    "with_threshold",
]
