"""The policy: predictions + latest samples + rules → decisions. Pure: nothing here executes.

``decide`` reads an ``Observations`` bundle (recent samples, the newest predictions and
anomaly scores, all as DataFrames) and the rules of a pipelines file, and returns one
``RuleDecision`` per (rule, subject) whose condition holds: the ordered candidate fixes,
the mode, the moment the condition was first seen (``detected_at``, for MTTR) and when
the decision can be scored (``score_at``, for shadow-mode false-fix accounting).
``score_outcome`` is the other half: given the samples after a decision, was the problem
real? Both are plain functions over frames, so the notebooks replay rules over history
with exactly the code the service runs.

Untrusted text stays data: a series' ``target`` label only selects a target the
pipelines file declares; rule parameters are never filled from labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from autofix.collect.base import parse_labels
from autofix.models.base import direction_for, to_fill_ratio
from autofix.pipeline import (
    ActionSpec,
    AlertWhen,
    AnomalyWhen,
    BaselineWhen,
    ExhaustionWhen,
    GateOverrides,
    Pipeline,
    Rule,
    ThresholdWhen,
)

#: Samples older than this are never "the latest": a silent series decides nothing.
STALE_AFTER = timedelta(minutes=5)
#: A series is stale once its newest sample is older than this many of its own intervals.
STALE_INTERVALS = 2.5
#: Predictions older than this are ignored (the predict job runs every minute).
PREDICTION_MAX_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class Candidate:
    """One action a decision proposes, in the order it should be tried."""

    action: str
    target: str
    params: Mapping[str, Any] = field(default_factory=dict)
    gates: GateOverrides | None = None


@dataclass(frozen=True)
class Decision:
    """What the policy decided: ordered candidates and why (the inputs go to the audit)."""

    candidates: Sequence[Candidate]
    reason: str = ""
    id: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observations:
    """What the policy sees.

    ``samples``: series_id, host, metric, labels (canonical JSON), capacity, ts, value —
    the recent window (``lookback(rules)``). ``predictions``: the newest forecast per
    series as ``MetricStore.latest_predictions`` returns it. ``scores``: series_id, ts,
    score — recent anomaly scores (with host, metric, labels).
    """

    samples: pd.DataFrame
    predictions: pd.DataFrame
    scores: pd.DataFrame


@dataclass(frozen=True)
class RuleDecision:
    """A decision with what the store records about it."""

    rule: str
    kind: str
    subject: str
    series_id: int | None
    target: str | None
    mode: str
    detected_at: datetime
    score_at: datetime
    reason: str
    inputs: Mapping[str, Any]
    decision: Decision
    #: The declared target the condition is about (the series' ``target`` label), if any.
    about: str | None = None
    #: The condition is a symptom (health, probe errors, latency) that a troubled
    #: dependency can explain; resource conditions (disk, memory) are not.
    symptom: bool = False

    @property
    def key(self) -> str:
        """Identity used to avoid deciding the same thing twice within ``repeat``."""
        return f"{self.rule}|{self.subject}"


def lookback(rules: Sequence[Rule]) -> timedelta:
    """How much recent history ``decide`` needs for these rules."""
    need = STALE_AFTER
    for rule in rules:
        when = rule.when
        if isinstance(when, ThresholdWhen | AnomalyWhen):
            need = max(need, when.hold + STALE_AFTER)
        elif isinstance(when, BaselineWhen):
            need = max(need, when.window + when.baseline)
    return need


def decision_key(rule: str, subject: str) -> str:
    return f"{rule}|{subject}"


def decide(
    rules: Sequence[Rule],
    pipeline: Pipeline,
    obs: Observations,
    now: datetime,
    recent: Mapping[str, datetime] | None = None,
    default_mode: str = "approve",
    *,
    holding: set[str] | None = None,
) -> list[RuleDecision]:
    """Every (rule, subject) whose condition holds at ``now`` and was not decided lately.

    ``recent`` maps ``RuleDecision.key`` to the time of its last decision; a subject
    decided less than ``rule.repeat`` ago is skipped. ``default_mode`` is the mode when
    neither the rule nor the gates say (AUTOFIX_FIX_MODE). ``holding``, when given,
    collects the key of every (rule, subject) whose condition holds, decided or not.
    """
    recent = recent or {}
    out: list[RuleDecision] = []
    fresh = fresh_series(obs.samples, now)
    for rule in rules:
        if rule.mode == "off":
            continue
        members = (
            {t.name for t in rule.target.members(pipeline.targets)}
            if rule.target is not None
            else None
        )
        for hit in _evaluate(rule, obs, now, fresh):
            if members is not None and hit.labels.get("target") not in members:
                continue
            subject = f"series:{hit.series_id}"
            if holding is not None:
                holding.add(decision_key(rule.name, subject))
            last = recent.get(decision_key(rule.name, subject))
            if last is not None and now - last < rule.repeat:
                continue
            out.append(_decision(rule, pipeline, hit, now, default_mode))
    return out


# -- conditions ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    series_id: int
    host: str
    metric: str
    labels: dict[str, str]
    detected_at: datetime
    reason: str
    value: float


def is_symptom(rule: Rule) -> bool:
    """Whether the rule's condition is a symptom a troubled dependency can explain.

    Latency (anomaly and baseline rules, ``*_duration_seconds``), probe results
    (``probe_*``), health checks (``autofix_health_*``) and alerts are symptoms; resource
    levels (disk, memory, connections in use) are not.
    """
    when = rule.when
    if isinstance(when, AlertWhen | AnomalyWhen | BaselineWhen):
        return True
    metric = when.metric
    return metric.startswith(("probe_", "autofix_health_")) or metric.endswith("_duration_seconds")


def is_resource_trouble(rule: Rule) -> bool:
    """Whether the rule, holding, says its target is itself in trouble: it acts (not
    ``off`` or ``shadow``) on a resource condition, not a symptom (a role's connections
    used up, a cache filling), so it explains its dependents' symptoms."""
    return rule.mode not in {"off", "shadow"} and not is_symptom(rule)


def fresh_series(samples: pd.DataFrame, now: datetime) -> set[int]:
    """Series whose newest sample is still "the latest" at ``now``.

    Staleness follows each series' own sampling interval (the median of its recent
    intervals): stale after ``STALE_INTERVALS`` of them, and never fresher than
    ``STALE_AFTER`` allows. A series that a sibling has replaced — same host, metric and
    ``target``, other labels (a restarted worker's new ``pid``) — is stale at once: its
    sibling has newer samples and it has none.
    """
    if samples.empty or "series_id" not in samples:
        return set()
    ordered = samples[["series_id", "host", "metric", "labels", "ts"]].sort_values(
        ["series_id", "ts"]
    )
    ordered["gap"] = ordered.groupby("series_id")["ts"].diff().dt.total_seconds()
    gaps = ordered[ordered["gap"] > 0].groupby("series_id").tail(10)
    cadence = gaps.groupby("series_id")["gap"].median()
    info = ordered.groupby("series_id").tail(1).set_index("series_id")
    info["cadence"] = cadence.reindex(info.index)
    info["target"] = [parse_labels(text).get("target", "") for text in info["labels"]]
    info["newest"] = info.groupby(["host", "metric", "target"])["ts"].transform("max")
    limit = (STALE_INTERVALS * info["cadence"]).clip(lower=1.0)
    limit = limit.fillna(STALE_AFTER.total_seconds()).clip(upper=STALE_AFTER.total_seconds())
    age = (pd.Timestamp(now) - info["ts"]).dt.total_seconds()
    behind = (info["newest"] - info["ts"]).dt.total_seconds()
    replaced = behind > (0.5 * info["cadence"]).fillna(0.0)
    keep = (age <= limit) & ~replaced
    return {int(series_id) for series_id in info.index[keep.to_numpy()]}


def _evaluate(
    rule: Rule, obs: Observations, now: datetime, fresh: set[int] | None = None
) -> list[_Hit]:
    when = rule.when
    if isinstance(when, ThresholdWhen):
        if fresh is None:
            fresh = fresh_series(obs.samples, now)
        return _threshold(when, obs.samples, now, fresh)
    if isinstance(when, ExhaustionWhen):
        hits = _exhaustion(when, obs.predictions, now)
        if "metric" in obs.samples and (obs.samples["metric"] == when.metric).any():
            # The forecast of a series that stopped reporting (a dead worker's pid) is old
            # news even when the prediction itself is recent.
            if fresh is None:
                fresh = fresh_series(obs.samples, now)
            hits = [h for h in hits if h.series_id in fresh]
        return hits
    if isinstance(when, AnomalyWhen):
        return _anomaly(when, obs.scores, now)
    if isinstance(when, AlertWhen):
        return []  # decided by decide_alerts, when Alertmanager posts one
    return _baseline(when, obs.samples, now)


def select(frame: pd.DataFrame, metric: str, match: Mapping[str, str]) -> pd.DataFrame:
    """Rows of ``frame`` for ``metric`` whose labels include every ``match`` pair."""
    if frame.empty or "metric" not in frame:
        return frame.iloc[0:0]
    rows = frame[frame["metric"] == metric]
    if not match or rows.empty:
        return rows
    unique = rows["labels"].drop_duplicates()
    keep = {
        text for text in unique if all(parse_labels(text).get(k) == v for k, v in match.items())
    }
    return rows[rows["labels"].isin(keep)]


def _run_start(ts: np.ndarray, ok: np.ndarray) -> int | None:
    """Index where the trailing run of True starts, or None when the last is False."""
    if not len(ok) or not ok[-1]:
        return None
    false = np.flatnonzero(~ok)
    return int(false[-1] + 1) if len(false) else 0


def _held(
    group: pd.DataFrame, ok: np.ndarray, hold: timedelta, now: datetime, fresh: bool = True
) -> datetime | None:
    """When the trailing run of ``ok`` started, if it is fresh and has lasted ``hold``."""
    ts = group["ts"].to_numpy("datetime64[ns]")
    if not fresh or not len(ts) or pd.Timestamp(ts[-1]).to_pydatetime() < now - STALE_AFTER:
        return None
    start = _run_start(ts, ok)
    if start is None:
        return None
    began = pd.Timestamp(ts[start]).to_pydatetime()
    if now - began < hold:
        return None
    return began


def _threshold(
    when: ThresholdWhen, samples: pd.DataFrame, now: datetime, fresh: set[int]
) -> list[_Hit]:
    hits = []
    for series_id, group in select(samples, when.metric, when.match).groupby("series_id"):
        if series_id not in fresh:  # a silent or replaced series decides nothing
            continue
        group = group.sort_values("ts")
        values = group["value"].to_numpy("float64")
        if when.of_capacity:
            capacity = group["capacity"].to_numpy("float64")
            if not np.isfinite(capacity).any():
                continue
            values = values / capacity
        ok = values > when.above if when.above is not None else values < when.below
        ok = np.asarray(ok & np.isfinite(values), dtype=bool)
        began = _held(group, ok, when.hold, now)
        if began is None:
            continue
        bound = f"> {when.above:g}" if when.above is not None else f"< {when.below:g}"
        what = "share of capacity" if when.of_capacity else "value"
        last = float(values[-1])
        hits.append(
            _hit(
                series_id,
                group,
                began,
                f"{when.metric} {what} {last:.4g} {bound} since {began:%H:%M:%S}",
                last,
            )
        )
    return hits


def _exhaustion(when: ExhaustionWhen, predictions: pd.DataFrame, now: datetime) -> list[_Hit]:
    hits = []
    column = f"p_{when.within}"
    rows = select(predictions, when.metric, when.match)
    for row in rows.to_dict("records"):
        made_at = pd.Timestamp(row["made_at"]).to_pydatetime()
        origin = pd.Timestamp(row["origin"]).to_pydatetime()
        probability = float(row[column])
        # Old predictions, and forecasts of series that stopped reporting (their origin,
        # the last sample, is old), decide nothing.
        if now - made_at > PREDICTION_MAX_AGE or now - origin > PREDICTION_MAX_AGE:
            continue
        if not probability >= when.probability:  # NaN never fires
            continue
        eta = "" if pd.isna(row["eta"]) else f", ETA {pd.Timestamp(row['eta']):%Y-%m-%d %H:%M}"
        hits.append(
            _Hit(
                int(row["series_id"]),
                str(row["host"]),
                str(row["metric"]),
                parse_labels(row["labels"]),
                made_at,
                f"P(exhaust within {when.within}) = {probability:.2f} ≥ {when.probability:g}"
                f"{eta} ({row['model']} v{row['model_version']})",
                probability,
            )
        )
    return hits


def _anomaly(when: AnomalyWhen, scores: pd.DataFrame, now: datetime) -> list[_Hit]:
    hits = []
    for series_id, group in select(scores, when.metric, when.match).groupby("series_id"):
        group = group.sort_values("ts")
        score = group["score"].to_numpy("float64")
        began = _held(group, score >= when.score, when.hold, now)
        if began is None:
            continue
        hits.append(
            _hit(
                series_id,
                group,
                began,
                f"{when.metric} anomaly score {score[-1]:.2f} ≥ {when.score:g} "
                f"since {began:%H:%M:%S}",
                float(score[-1]),
            )
        )
    return hits


def _baseline(when: BaselineWhen, samples: pd.DataFrame, now: datetime) -> list[_Hit]:
    hits = []
    split = now - when.window
    for series_id, group in select(samples, when.metric, when.match).groupby("series_id"):
        ts = group["ts"]
        recent = group.loc[ts >= split, "value"]
        past = group.loc[(ts < split) & (ts >= split - when.baseline), "value"]
        if len(recent) < when.min_samples or len(past) < when.min_samples:
            continue
        recent_median = float(recent.median())
        if recent_median <= 0:
            continue
        performance = float(past.median()) / recent_median
        if performance >= when.performance_below:
            continue
        hits.append(
            _hit(
                series_id,
                group,
                split,
                f"{when.metric} performance {performance:.2f} of its baseline "
                f"< {when.performance_below:g} (median {recent_median:.4g} vs "
                f"{float(past.median()):.4g})",
                performance,
            )
        )
    return hits


def _hit(series_id: Any, group: pd.DataFrame, began: datetime, reason: str, value: float) -> _Hit:
    first = group.iloc[-1]
    return _Hit(
        int(series_id),
        str(first["host"]),
        str(first["metric"]),
        parse_labels(first["labels"]),
        began,
        reason,
        value,
    )


# -- decisions ---------------------------------------------------------------------------


def _candidates(
    specs: Sequence[ActionSpec], pipeline: Pipeline, labelled: str | None, gates: GateOverrides
) -> tuple[list[Candidate], list[str]]:
    """Resolve each spec's target: its own, else the subject's declared target."""
    out, skipped = [], []
    for spec in specs:
        target = spec.target or labelled
        if target is None or pipeline.target(target) is None:
            why = "no target label" if target is None else f"{_quote(target)} is not declared"
            skipped.append(f"{spec.action}: {why}")
            continue
        out.append(Candidate(spec.action, target, dict(spec.params), gates))
    return out, skipped


def rule_gates(rule_mode: str | None, gates: GateOverrides | None) -> GateOverrides:
    """The rule's gate overrides with its mode folded in."""
    merged = gates.model_dump() if gates is not None else {}
    if rule_mode is not None:
        merged["mode"] = rule_mode
    return GateOverrides.model_validate(merged)


def _decision(
    rule: Rule, pipeline: Pipeline, hit: _Hit, now: datetime, default_mode: str
) -> RuleDecision:
    labelled = hit.labels.get("target")
    gates = rule_gates(rule.mode, rule.gates)
    candidates, skipped = _candidates(rule.actions, pipeline, labelled, gates)
    mode = rule.mode or default_mode
    subject = f"series:{hit.series_id}"
    when = f"{now:%Y%m%dT%H%M%S.%f}"
    decision_id = f"{rule.name}:{hit.series_id}:{when}"
    reason = hit.reason
    if skipped:
        reason += "; skipped " + "; ".join(skipped)
    if not candidates:
        reason += "; no fix to try: manual intervention needed"
    inputs = {
        "rule": rule.name,
        "series_id": hit.series_id,
        "host": hit.host,
        "metric": hit.metric,
        "labels": hit.labels,
        "value": hit.value,
        "detected_at": hit.detected_at.isoformat(),
    }
    # A label naming no declared target is untrusted text: it is quoted in the reason
    # above, never recorded as the decision's (or an escalation's) target.
    declared = labelled if labelled is not None and pipeline.target(labelled) else None
    target = candidates[0].target if candidates else declared
    return RuleDecision(
        rule=rule.name,
        kind=rule.when.type,
        subject=subject,
        series_id=hit.series_id,
        target=target,
        mode=mode,
        detected_at=hit.detected_at,
        score_at=now + rule.score_after,
        reason=reason,
        inputs=inputs,
        decision=Decision(
            candidates, reason=f"{rule.name}: {reason}", id=decision_id, inputs=inputs
        ),
        about=declared,
        symptom=is_symptom(rule),
    )


# -- Alertmanager alerts -----------------------------------------------------------------

#: The alert label that picks the target of a rule action that names none.
TARGET_LABEL = "target"


@dataclass(frozen=True)
class Alert:
    """One alert of an Alertmanager notification. Every field is untrusted text."""

    status: str  # "firing" or "resolved"
    labels: Mapping[str, str]
    starts_at: datetime | None = None
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True)
class AlertVerdict:
    """What one alert did under one rule: a decision, or why not.

    ``outcome``: ``decided``; ``ignored`` (resolved, no rule, rule off); ``repeat`` (the
    rule decided on this subject less than ``repeat`` ago); ``refused`` (the ``target``
    label names no declared target: nothing is recorded, nothing runs).
    """

    alert: Alert
    rule: str | None
    outcome: Literal["decided", "ignored", "refused", "repeat"]
    reason: str
    decision: RuleDecision | None = None


def _quote(text: str, limit: int = 64) -> str:
    """Untrusted text shown in a reason: repr (no control characters), cut short."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def judge_alerts(
    rules: Sequence[Rule],
    pipeline: Pipeline,
    alerts: Sequence[Alert],
    now: datetime,
    recent: Mapping[str, datetime] | None = None,
    default_mode: str = "approve",
) -> list[AlertVerdict]:
    """A verdict per (firing alert, matching ``type: alert`` rule), or one saying why none.

    A rule matches when ``alertname`` and every ``match`` pair equal the alert's labels.
    The ``target`` label only selects a target the pipelines file declares; when present
    and undeclared, the alert is refused outright. Parameters come from the rule only.
    """
    recent = dict(recent or {})
    alert_rules = [r for r in rules if isinstance(r.when, AlertWhen)]
    out: list[AlertVerdict] = []
    for alert in alerts:
        if alert.status != "firing":
            out.append(AlertVerdict(alert, None, "ignored", "resolved: decides nothing"))
            continue
        matched = [r for r in alert_rules if _alert_matches(r, alert.labels)]
        if not matched:
            why = f"no rule for alert {_quote(alert.name)}"
            out.append(AlertVerdict(alert, None, "ignored", why))
            continue
        labelled = alert.labels.get(TARGET_LABEL)
        if labelled is not None and pipeline.target(labelled) is None:
            why = f"target label {_quote(labelled)} is not a declared target: nothing done"
            out.extend(AlertVerdict(alert, r.name, "refused", why) for r in matched)
            continue
        for rule in matched:
            if rule.mode == "off":
                out.append(AlertVerdict(alert, rule.name, "ignored", "the rule is off"))
                continue
            rd = _alert_decision(rule, pipeline, alert, labelled, now, default_mode)
            last = recent.get(rd.key)
            # ``last >= now``: decided at this very moment already (a repeat of 0, a batch).
            if last is not None and (now - last < rule.repeat or last >= now):
                why = (
                    f"{rule.name} decided on {rd.subject} at {last:%H:%M:%S}; repeat {rule.repeat}"
                )
                out.append(AlertVerdict(alert, rule.name, "repeat", why))
                continue
            recent[rd.key] = now
            out.append(AlertVerdict(alert, rule.name, "decided", rd.reason, rd))
    return out


def decide_alerts(
    rules: Sequence[Rule],
    pipeline: Pipeline,
    alerts: Sequence[Alert],
    now: datetime,
    recent: Mapping[str, datetime] | None = None,
    default_mode: str = "approve",
) -> list[RuleDecision]:
    """The decisions of ``judge_alerts`` (resolved alerts decide nothing)."""
    verdicts = judge_alerts(rules, pipeline, alerts, now, recent, default_mode)
    return [v.decision for v in verdicts if v.decision is not None]


def _alert_matches(rule: Rule, labels: Mapping[str, str]) -> bool:
    when = rule.when
    assert isinstance(when, AlertWhen)
    if labels.get("alertname") != when.alertname:
        return False
    return all(labels.get(k) == v for k, v in when.match.items())


def _alert_decision(
    rule: Rule,
    pipeline: Pipeline,
    alert: Alert,
    labelled: str | None,
    now: datetime,
    default_mode: str,
) -> RuleDecision:
    when = rule.when
    assert isinstance(when, AlertWhen)
    gates = rule_gates(rule.mode, rule.gates)
    candidates, skipped = _candidates(rule.actions, pipeline, labelled, gates)
    started = alert.starts_at
    detected = min(started, now) if started is not None else now
    reason = f"alert {when.alertname} firing since {detected:%Y-%m-%d %H:%M:%S}"
    if labelled is not None:
        reason += f" on {labelled}"
    if skipped:
        reason += "; skipped " + "; ".join(skipped)
    if not candidates:
        reason += "; no fix to try: manual intervention needed"
    subject = f"alert:{when.alertname}:{labelled or '-'}"
    inputs = {
        "rule": rule.name,
        "alertname": when.alertname,
        "target": labelled,
        "labels": dict(alert.labels),
        "fingerprint": alert.fingerprint,
        "detected_at": detected.isoformat(),
    }
    decision_id = f"{rule.name}:{subject}:{now:%Y%m%dT%H%M%S.%f}"
    return RuleDecision(
        rule=rule.name,
        kind="alert",
        subject=subject,
        series_id=None,
        target=candidates[0].target if candidates else labelled,
        mode=rule.mode or default_mode,
        detected_at=detected,
        score_at=now + rule.score_after,
        reason=reason,
        inputs=inputs,
        decision=Decision(
            candidates, reason=f"{rule.name}: {reason}", id=decision_id, inputs=inputs
        ),
        about=labelled,
        symptom=True,
    )


# -- scoring shadow decisions ------------------------------------------------------------


def score_outcome(
    rule: Rule, decided_at: datetime, after: pd.DataFrame, *, threshold: float = 1.0
) -> tuple[bool, str] | None:
    """Was the problem behind a not-executed decision real? None when it cannot be told.

    ``after`` holds the subject series' samples (ts, value, capacity, metric) from the
    decision to ``decided_at + rule.score_after``. A forecast was real when the series
    reached its capacity threshold within the horizon; any other condition was real
    when it still held for most of the horizon (a problem that went away on its own
    needed no fix).
    """
    if after.empty:
        return None
    after = after.sort_values("ts")
    values = after["value"].to_numpy("float64")
    when = rule.when
    if isinstance(when, ExhaustionWhen):
        capacity = after["capacity"].to_numpy("float64")
        metric = str(after["metric"].iloc[0])
        fill = to_fill_ratio(values, capacity, direction_for(metric))
        peak = float(np.nanmax(fill)) if np.isfinite(fill).any() else float("nan")
        if not np.isfinite(peak):
            return None
        real = peak >= threshold
        return real, f"peak fill {peak:.3f} {'≥' if real else '<'} {threshold:g} within horizon"
    if isinstance(when, ThresholdWhen):
        if when.of_capacity:
            values = values / after["capacity"].to_numpy("float64")
        ok = values > when.above if when.above is not None else values < when.below
        share = float(np.mean(ok))
        real = share >= 0.5
        return real, f"condition held in {share:.0%} of the horizon's samples"
    if isinstance(when, BaselineWhen):
        # Still slow at the end of the horizon compared to the same baseline?
        baseline = float(after.attrs.get("baseline_median", np.nan))
        if not np.isfinite(baseline):
            return None
        recent = float(np.median(values[-max(1, len(values) // 4) :]))
        performance = baseline / recent if recent > 0 else np.inf
        real = performance < when.performance_below
        return real, f"performance {performance:.2f} at the end of the horizon"
    if isinstance(when, AlertWhen):
        return None  # an alert decision has no series to score
    scores = after["score"].to_numpy("float64") if "score" in after else None
    if scores is None:
        return None
    share = float(np.mean(scores >= when.score))
    return share >= 0.5, f"score above {when.score:g} in {share:.0%} of the horizon"


__all__ = [
    "TARGET_LABEL",
    "Alert",
    "AlertVerdict",
    "Candidate",
    "Decision",
    "Observations",
    "RuleDecision",
    "decide",
    "decide_alerts",
    "decision_key",
    "fresh_series",
    "is_resource_trouble",
    "is_symptom",
    "judge_alerts",
    "lookback",
    "rule_gates",
    "score_outcome",
    "select",
]
