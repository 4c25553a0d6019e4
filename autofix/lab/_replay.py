"""Replaying a pipeline's rules over history with the service's own policy.

At every step ``now`` the replay builds the frames ``Service.observe`` builds from the
store at that moment — the rules' metrics over ``lookback(rules)``, the newest prediction
of each series, the latency series' anomaly scores of the last 24 h — and calls
``autofix.policy.decide`` with the decisions made so far (``repeat``). Each decision is
then scored twice: by ``score_outcome`` on the samples after it (what shadow mode would
have recorded) and, where the history is labelled, against the ground truth.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from autofix.collect.base import format_labels
from autofix.errors import InputError
from autofix.jobs import LATENCY_SUFFIX, SCORE_LOOKBACK
from autofix.lab._data import load_series
from autofix.models.anomaly import RobustScorer
from autofix.models.registry import make_forecaster
from autofix.pipeline import (
    AnomalyWhen,
    BaselineWhen,
    ExhaustionWhen,
    Pipeline,
    Rule,
    ThresholdWhen,
    load_pipeline,
)
from autofix.policy import (
    PREDICTION_MAX_AGE,
    Observations,
    decide,
    lookback,
    score_outcome,
    select,
)
from autofix.predict import predict_store
from autofix.store import PREDICTION_COLUMNS, MetricStore

_SAMPLE_COLUMNS = ["series_id", "host", "metric", "labels", "capacity", "ts", "value"]
_IDENTITY = ["host", "metric", "labels"]
_PREDICTION_COLUMNS = [*_IDENTITY, "capacity", "made_at", *PREDICTION_COLUMNS]
DECISION_COLUMNS = [
    "ts",
    "rule",
    "kind",
    "subject",
    "series_id",
    "host",
    "metric",
    "labels",
    "target",
    "mode",
    "detected_at",
    "score_at",
    "reason",
    "candidates",
    "real",
    "outcome",
    "truth",
    "false_fix",
]
WEEK = timedelta(days=7)

#: Conditions over metric history. Others (an Alertmanager alert) are decided when the
#: alert arrives, which metric history does not record: the replay leaves them out.
MetricWhen = ThresholdWhen | ExhaustionWhen | AnomalyWhen | BaselineWhen


def replayable(rules: Sequence[Rule]) -> list[Rule]:
    """The rules whose condition reads metric history (the ones a replay can decide)."""
    return [r for r in rules if isinstance(r.when, MetricWhen)]


def metric_match(rule: Rule) -> tuple[str, dict[str, str]]:
    """The metric and label match a replayable rule selects series by."""
    when = rule.when
    if not isinstance(when, MetricWhen):
        raise InputError(f"rule {rule.name}: a {when.type} condition reads no metric history")
    return when.metric, dict(when.match)


def _naive(moment: datetime | str | pd.Timestamp) -> datetime:
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def load_rules(path: str | Path = "pipelines/news-delivery.yaml") -> Pipeline:
    """A pipelines file, validated (errors name the file and the field)."""
    return load_pipeline(Path(path))


# -- inputs over time -------------------------------------------------------------------------


def predict_history(
    store: MetricStore,
    *,
    start: datetime | str,
    end: datetime | str,
    every: timedelta = timedelta(hours=1),
    model: str | Any = "default",
    lookback: timedelta = timedelta(days=7),
) -> pd.DataFrame:
    """What the predict job would have written at each ``every`` from ``start`` to ``end``.

    Each pass is ``autofix.predict.predict_store`` at that moment (only samples up to it)
    with ``model``: a registry name, or an estimator such as the champion's (refitted at
    every pass, as the service does). The service predicts every minute; hourly passes
    are the same model seen less often (a prediction stays valid for
    ``PREDICTION_MAX_AGE``, 1 h). Columns as ``MetricStore.latest_predictions`` has them.
    """
    estimator = make_forecaster(model) if isinstance(model, str) else model
    name = model if isinstance(model, str) else str(getattr(model, "name", "model"))
    identity = store.query("SELECT series_id, host, metric, labels, capacity FROM series")
    parts = []
    for now in pd.date_range(_naive(start), _naive(end), freq=every):
        run = predict_store(
            store,
            estimator,
            model_name=name,
            model_version="replay",
            now=now.to_pydatetime(),
            lookback=lookback,
            write=False,
        )
        if not run.forecasts.empty:
            parts.append(run.forecasts.assign(made_at=now))
    if not parts:
        return pd.DataFrame(columns=_PREDICTION_COLUMNS)
    frame = pd.concat(parts, ignore_index=True).merge(identity, on="series_id", how="left")
    return frame[_PREDICTION_COLUMNS].sort_values(["made_at", "series_id"], ignore_index=True)


class _Timeline:
    """Rows of a frame sorted by one time column, sliced by time in O(log n)."""

    def __init__(self, frame: pd.DataFrame, column: str) -> None:
        self.frame = frame.sort_values(column, kind="stable").reset_index(drop=True)
        self.ts = self.frame[column].to_numpy("datetime64[ns]")

    def between(self, lo: datetime, hi: datetime) -> pd.DataFrame:
        """Rows with lo < t <= hi, as the service's queries read a window."""
        a = int(np.searchsorted(self.ts, np.datetime64(lo, "ns"), side="right"))
        b = int(np.searchsorted(self.ts, np.datetime64(hi, "ns"), side="right"))
        return self.frame.iloc[a:b]


class _View:
    """What one rule can see: the rows its metric and label match select."""

    def __init__(self, replayer: _Replayer, rule: Rule) -> None:
        self.kind = type(rule.when)
        self.metric, self.match = metric_match(rule)
        self.samples = _Timeline(select(replayer.samples, self.metric, self.match), "ts")
        self.predictions: _Timeline | None = None
        if replayer.predictions is not None:
            chosen = select(replayer.predictions, self.metric, self.match)
            self.predictions = _Timeline(chosen, "made_at")
        self._last: tuple[tuple[int, int], pd.DataFrame] | None = None

    @property
    def empty(self) -> bool:
        if self.kind is ExhaustionWhen:
            return self.predictions is None or not len(self.predictions.ts)
        return not len(self.samples.ts)

    def samples_at(self, now: datetime, span: timedelta) -> pd.DataFrame:
        window = self.samples.between(now - span, now)
        window = window.sort_values(["series_id", "ts"], kind="stable")
        # The service reads series.capacity: the newest one in force at ``now``.
        return window.assign(capacity=window.groupby("series_id")["capacity"].transform("last"))

    def predictions_at(self, now: datetime) -> pd.DataFrame:
        if self.predictions is None:
            raise InputError("exhaustion rules need predictions: pass predictions= or a store")
        timeline = self.predictions
        # Older predictions are ignored by the policy anyway (PREDICTION_MAX_AGE).
        a = int(np.searchsorted(timeline.ts, np.datetime64(now - PREDICTION_MAX_AGE, "ns")))
        b = int(np.searchsorted(timeline.ts, np.datetime64(now, "ns"), side="right"))
        if self._last is not None and self._last[0] == (a, b):
            return self._last[1]
        rows = timeline.frame.iloc[a:b].drop_duplicates("series_id", keep="last")
        rows = rows.sort_values(["p_24h", "eta"], ascending=[False, True], na_position="last")
        self._last = ((a, b), rows)
        return rows


class _Replayer:
    """History, predictions and scores indexed by time, and the replay loop over them.

    ``decide`` sees one rule at a time with the rows that rule selects: every condition
    reads only ``select(frame, metric, match)``, so the decisions are the ones ``decide``
    makes over the whole frames, for a fraction of the work.
    """

    def __init__(
        self,
        history: pd.DataFrame,
        predictions: pd.DataFrame | None,
        scores: pd.DataFrame | None,
        truth: pd.DataFrame | None,
    ) -> None:
        samples = history[_SAMPLE_COLUMNS].sort_values(["ts", "series_id"], kind="stable")
        self.samples = samples.reset_index(drop=True)
        ts = self.samples["ts"]
        self.end = pd.Timestamp(ts.max()) if len(ts) else None
        self.by_series = {
            _int(sid): group.reset_index(drop=True)
            for sid, group in self.samples.groupby("series_id", sort=False)
        }
        identity = self.samples.drop_duplicates("series_id").set_index("series_id")[_IDENTITY]
        self.predictions = predictions
        self.live_scores = scores is None
        self.scores: _Timeline | None = None
        if scores is not None:
            if not set(_IDENTITY) <= set(scores.columns):
                scores = scores.merge(identity, left_on="series_id", right_index=True)
            self.scores = _Timeline(scores, "ts")
        latency = self.samples[self.samples["metric"].str.endswith(LATENCY_SUFFIX)]
        self.latency = _Timeline(latency, "ts")
        self.truth = _truth_by_identity(truth)
        self._views: dict[tuple[str, str, tuple[tuple[str, str], ...]], _View] = {}
        self._score_cache: dict[datetime, pd.DataFrame] = {}
        self._stored: dict[int, list[pd.DataFrame]] = {}
        self._stored_until: dict[int, np.datetime64] = {}

    def view(self, rule: Rule) -> _View:
        metric, match = metric_match(rule)
        key = (rule.when.type, metric, tuple(sorted(match.items())))
        if key not in self._views:
            self._views[key] = _View(self, rule)
        return self._views[key]

    # -- the frames Service.observe builds, one rule at a time -----------------------------

    def observe_rule(self, rule: Rule, now: datetime, span: timedelta) -> Observations:
        view = self.view(rule)
        empty = pd.DataFrame()
        if view.kind is ExhaustionWhen:
            return Observations(empty, view.predictions_at(now), empty)
        if view.kind is AnomalyWhen:
            return Observations(empty, empty, select(self._scores_at(now), view.metric, view.match))
        return Observations(view.samples_at(now, span), empty, empty)

    def observe(self, now: datetime, rules: Sequence[Rule], span: timedelta) -> Observations:
        """All rules' rows at ``now`` in one bundle (for inspecting a step)."""
        parts = [self.observe_rule(r, now, span) for r in rules]

        def joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
            frames = [f for f in frames if not f.empty]
            return pd.concat(frames).drop_duplicates() if frames else pd.DataFrame()

        return Observations(
            joined([p.samples for p in parts]),
            joined([p.predictions for p in parts]),
            joined([p.scores for p in parts]),
        )

    def _scores_at(self, now: datetime) -> pd.DataFrame:
        if self.scores is not None:
            return self.scores.between(now - SCORE_LOOKBACK, now)
        cached = self._score_cache.get(now)
        if cached is not None:
            return cached
        window = self.latency.between(now - SCORE_LOOKBACK, now)
        window = window.sort_values(["series_id", "ts"], kind="stable")
        scored = window[["series_id", "host", "metric", "labels", "ts", "value", "capacity"]]
        if len(window):
            values = RobustScorer().fit_score(window[["series_id", "ts", "value"]])
            scored = scored.assign(score=values)
            self._store_new(scored)
        else:
            scored = scored.assign(score=pd.Series(dtype="float64"))
        self._score_cache[now] = scored
        return scored

    def _store_new(self, scored: pd.DataFrame) -> None:
        """Keep each point's first score, as the service's anomaly_scores table does."""
        for sid, group in scored.groupby("series_id", sort=False):
            key = _int(sid)
            until = self._stored_until.get(key)
            ts = group["ts"].to_numpy("datetime64[ns]")
            new = group if until is None else group[ts > until]
            if len(new):
                self._stored.setdefault(key, []).append(new)
                self._stored_until[key] = ts[-1]

    # -- the loop ----------------------------------------------------------------------------

    def run(
        self,
        pipeline: Pipeline,
        rules: Sequence[Rule],
        grid: pd.DatetimeIndex,
        default_mode: str,
    ) -> pd.DataFrame:
        recent: dict[str, datetime] = {}
        made = []
        active = [r for r in replayable(rules) if r.mode != "off"]
        # The service reads one window, long enough for every rule of its pipeline.
        span = lookback(pipeline.rules)
        live = [r for r in active if not self.view(r).empty]
        for stamp in grid:
            now = stamp.to_pydatetime()
            for rule in live:
                obs = self.observe_rule(rule, now, span)
                for rd in decide([rule], pipeline, obs, now, recent, default_mode):
                    recent[rd.key] = now
                    made.append((now, rd))
        by_name = {r.name: r for r in rules}
        rows = []
        for now, rd in made:
            rule = by_name[rd.rule]
            real, outcome = self._outcome(rule, rd.series_id, now, rd.score_at)
            truth = self._truth(rule, rd.inputs, now)
            rows.append(
                {
                    "ts": pd.Timestamp(now),
                    "rule": rd.rule,
                    "kind": rd.kind,
                    "subject": rd.subject,
                    "series_id": rd.series_id,
                    "host": rd.inputs.get("host"),
                    "metric": rd.inputs.get("metric"),
                    "labels": _canonical(rd.inputs.get("labels", {})),
                    "target": rd.target,
                    "mode": rd.mode,
                    "detected_at": pd.Timestamp(rd.detected_at),
                    "score_at": pd.Timestamp(rd.score_at),
                    "reason": rd.reason,
                    "candidates": [f"{c.action}@{c.target}" for c in rd.decision.candidates],
                    "real": real,
                    "outcome": outcome,
                    "truth": truth,
                    "false_fix": _false_fix(truth, real),
                }
            )
        frame = pd.DataFrame(rows, columns=DECISION_COLUMNS)
        for column in ("real", "truth", "false_fix"):
            frame[column] = frame[column].astype("boolean")
        return frame

    # -- outcomes ----------------------------------------------------------------------------

    def _outcome(
        self, rule: Rule, series_id: int | None, decided_at: datetime, score_at: datetime
    ) -> tuple[bool | None, str]:
        if series_id is None:
            return None, "no series"
        if self.end is None or score_at > self.end:
            return None, "horizon not over when the history ends"
        after = self._after(rule, series_id, decided_at, score_at)
        verdict = score_outcome(rule, decided_at, after)
        if verdict is None:
            # Service.score_decisions: a silent series is not evidence of a needless fix.
            return True, "no samples after the decision: counted as real"
        return verdict

    def _after(self, rule: Rule, series_id: int, start: datetime, end: datetime) -> pd.DataFrame:
        if isinstance(rule.when, AnomalyWhen):
            if self.live_scores:
                parts = self._stored.get(series_id, [])
                scores = pd.concat(parts) if parts else pd.DataFrame(columns=["ts", "score"])
            else:
                assert self.scores is not None
                scores = self.scores.frame[self.scores.frame["series_id"] == series_id]
            ts = scores["ts"]
            columns = ["ts", "value", "score", "metric", "capacity"]
            return scores.loc[(ts > start) & (ts <= end), columns]
        group = self.by_series.get(series_id)
        if group is None:
            return pd.DataFrame(columns=["ts", "value", "metric", "capacity"])
        ts = group["ts"]
        after = group[(ts > start) & (ts <= end)][["ts", "value", "metric", "capacity"]]
        if len(after):
            after = after.assign(capacity=after["capacity"].iloc[-1])
        if isinstance(rule.when, BaselineWhen):
            split = start - rule.when.window
            past = group.loc[(ts < split) & (ts >= split - rule.when.baseline), "value"]
            after.attrs["baseline_median"] = float(past.median()) if len(past) else math.nan
        return after

    def _truth(self, rule: Rule, inputs: Mapping[str, Any], now: datetime) -> bool | None:
        key = (inputs.get("host"), inputs.get("metric"), _canonical(inputs.get("labels", {})))
        row = self.truth.get(key)
        if row is None:
            return None
        stamp = pd.Timestamp(now)
        if row["direction"] == "none":
            return any(a <= stamp < b for a, b in row["slowdown_windows"])
        if isinstance(rule.when, ExhaustionWhen):
            # Real when it runs out within the horizon, or already has (still a problem).
            when = row["exhaustion_time"]
            return bool(pd.notna(when) and when <= stamp + rule.score_after)
        return None


def _canonical(labels: Any) -> str:
    """Labels as the store keeps them: canonical JSON (sorted keys, no spaces)."""
    if isinstance(labels, str):
        try:
            labels = json.loads(labels or "{}")
        except ValueError:
            return str(labels)
    return format_labels({str(k): str(v) for k, v in dict(labels).items()})


def _int(value: Any) -> int:
    """A group key as the int it is (pandas types keys as any hashable)."""
    return int(value)


def _truth_by_identity(truth: pd.DataFrame | None) -> dict[tuple[Any, ...], dict[str, Any]]:
    if truth is None or truth.empty:
        return {}
    records = cast(list[dict[str, Any]], truth.to_dict("records"))
    return {(row["host"], row["metric"], _canonical(row["labels"])): row for row in records}


def _false_fix(truth: bool | None, real: bool | None) -> bool | None:
    """Ground truth when the labels say, else the shadow-mode verdict."""
    if truth is not None:
        return not truth
    return None if real is None else not real


def _history(
    history: MetricStore | pd.DataFrame, rules: Sequence[Rule]
) -> tuple[pd.DataFrame, MetricStore | None]:
    if isinstance(history, MetricStore):
        metrics = sorted({metric_match(r)[0] for r in rules})
        return load_series(history, metric=metrics), history
    missing = [c for c in _SAMPLE_COLUMNS if c not in history.columns]
    if missing:
        raise InputError(f"history lacks column {missing[0]!r} (use lab.load_series)")
    return history, None


def _prepare(
    history: MetricStore | pd.DataFrame,
    rules: Sequence[Rule],
    start: datetime,
    end: datetime,
    predictions: pd.DataFrame | None,
    scores: pd.DataFrame | None,
    truth: pd.DataFrame | None,
) -> _Replayer:
    frame, store = _history(history, rules)
    if predictions is None and any(isinstance(r.when, ExhaustionWhen) for r in rules):
        if store is None:
            raise InputError(
                "exhaustion rules need predictions: pass a store as history, or "
                "predictions=lab.predict_history(store, start=..., end=...)"
            )
        predictions = predict_history(store, start=start - PREDICTION_MAX_AGE, end=end)
    # Only the series some rule selects can matter to ``decide`` (it selects the same
    # way); dropping the rest up front keeps each step's frames small.
    frame = _selected(frame, rules)
    if predictions is not None:
        predictions = _selected(predictions, rules)
    return _Replayer(frame, predictions, scores, truth)


def _selected(frame: pd.DataFrame, rules: Sequence[Rule]) -> pd.DataFrame:
    """The rows of ``frame`` that some rule selects (``decide`` selects the same way)."""
    keep = [select(frame, *metric_match(r)).index.to_numpy() for r in rules]
    return frame.loc[frame.index.isin(np.concatenate([[], *keep]))]


def _grid(start: datetime, end: datetime, step: timedelta) -> pd.DatetimeIndex:
    if step <= timedelta(0):
        raise InputError(f"step must be positive, not {step}")
    if end < start:
        raise InputError(f"end {end} is before start {start}")
    return pd.date_range(start, end, freq=step)


def replay_rules(
    pipeline: Pipeline | str | Path,
    history: MetricStore | pd.DataFrame,
    *,
    start: datetime | str,
    end: datetime | str,
    step: timedelta = timedelta(minutes=5),
    predictions: pd.DataFrame | None = None,
    scores: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    rules: Sequence[Rule] | None = None,
    default_mode: str = "approve",
) -> pd.DataFrame:
    """Every decision the policy would have made from ``start`` to ``end`` (``DECISION_COLUMNS``).

    ``history`` is a store (read with ``load_series``) or its frame. ``predictions``
    default to ``predict_history`` over the store (hourly, default forecaster);
    ``scores`` (``series_id, ts, score``) default to what the remediate job computes:
    the robust scorer refitted on each ``_duration_seconds`` series' last 24 h at every
    step. Each decision carries ``real`` (``score_outcome`` on what followed, as shadow
    mode records it; NA when its horizon runs past the history), ``truth`` (the labels:
    an exhaustion within the rule's horizon, or a moment inside a slowdown window; NA
    where they say nothing) and ``false_fix`` (not truth, else not real).
    """
    pipeline = pipeline if isinstance(pipeline, Pipeline) else load_rules(pipeline)
    chosen = replayable(pipeline.rules if rules is None else rules)
    begin, finish = _naive(start), _naive(end)
    replayer = _prepare(history, chosen, begin, finish, predictions, scores, truth)
    return replayer.run(pipeline, chosen, _grid(begin, finish, step), default_mode)


def observe(
    pipeline: Pipeline | str | Path,
    history: MetricStore | pd.DataFrame,
    now: datetime | str,
    *,
    rules: Sequence[Rule] | None = None,
    predictions: pd.DataFrame | None = None,
    scores: pd.DataFrame | None = None,
) -> Observations:
    """What the replay shows ``decide`` at ``now``, all rules' rows in one bundle (to see
    why a step decided what it did)."""
    pipeline = pipeline if isinstance(pipeline, Pipeline) else load_rules(pipeline)
    chosen = replayable(pipeline.rules if rules is None else rules)
    moment = _naive(now)
    replayer = _prepare(history, chosen, moment, moment, predictions, scores, None)
    return replayer.observe(moment, chosen, lookback(pipeline.rules))


__all__ = [
    "DECISION_COLUMNS",
    "load_rules",
    "observe",
    "predict_history",
    "replay_rules",
]
