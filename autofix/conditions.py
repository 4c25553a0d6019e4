"""Re-reading the condition that triggered a fix: did it clear?

A fix is verified twice. The action checks that it did what it says (a new pid, the keys
gone); this module checks that the *problem* went away — the condition the rule fired on,
read fresh from the same collector, with the live service still running: memory back
under the limit, the probe answering, latency back near its baseline, the disk no
longer filling. Not an absolute a live system can never meet ("no session key left").

``rule_condition`` builds the check for a rule decision; the executor calls it before
apply (cleared already: the fix is not needed) and after the action's verify (not
cleared: the fix did not work, it is rolled back and escalated).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np

from autofix.actions.base import Check
from autofix.collect.base import Sample, parse_labels
from autofix.errors import AutofixError
from autofix.models.base import direction_for, to_fill_ratio
from autofix.pipeline import (
    AnomalyWhen,
    BaselineWhen,
    ExhaustionWhen,
    Rule,
    ThresholdWhen,
)
from autofix.policy import RuleDecision
from autofix.store import MetricStore

#: Collects one collector (by name: a target's, or ``host``) now and returns its samples.
CollectNow = Callable[[str], Sequence[Sample]]
#: An exhaustion fix must free at least this share of the capacity to count.
FREED_SHARE = 0.01
#: Latency is back when the fresh median is within this factor of its baseline.
LATENCY_BACK = 1.5


def rule_condition(
    rd: RuleDecision,
    rule: Rule,
    store: MetricStore,
    collect: CollectNow,
    collectors: set[str],
    host: str,
) -> Callable[[], Check] | None:
    """A check that the condition of ``rd`` has cleared, or None when it cannot be re-read.

    None for alert rules (no series), for series of other hosts (imported history), and
    for series whose collector this process does not run.
    """
    when = rule.when
    if rd.series_id is None or not isinstance(
        when, ThresholdWhen | ExhaustionWhen | AnomalyWhen | BaselineWhen
    ):
        return None
    meta = store.query(
        "SELECT host, metric, labels, capacity FROM series WHERE series_id = ?", [rd.series_id]
    )
    if meta.empty or str(meta["host"].iloc[0]) != host:
        return None
    labels = parse_labels(str(meta["labels"].iloc[0]))
    name = labels.get("target") or "host"
    if name not in collectors:
        return None
    metric = str(meta["metric"].iloc[0])

    def fresh() -> list[Sample]:
        return [s for s in collect(name) if _same_subject(s, metric, labels, when.match)]

    if isinstance(when, ThresholdWhen):
        return lambda: _threshold_cleared(when, fresh())
    if isinstance(when, ExhaustionWhen):
        then = _fill_at(store, rd.series_id, metric, rd.detected_at)
        if then is None:
            return None
        return lambda: _exhaustion_cleared(metric, then, fresh())
    baseline = _median(store, rd.series_id, rd.detected_at - timedelta(hours=1), rd.detected_at)
    if baseline is None or baseline <= 0:
        return None
    bound = LATENCY_BACK
    if isinstance(when, BaselineWhen):
        bound = 1.0 / when.performance_below
    return lambda: _latency_back(fresh, baseline, bound)


def _same_subject(
    sample: Sample, metric: str, labels: Mapping[str, str], match: Mapping[str, str]
) -> bool:
    """The decision's series, or a sibling that replaced it (the restarted worker's pid)."""
    if sample.metric != metric:
        return False
    if not all(sample.labels.get(k) == v for k, v in match.items()):
        return False
    if "target" in labels:
        ignore = {"pid"}
        return all(sample.labels.get(k) == v for k, v in labels.items() if k not in ignore)
    return dict(sample.labels) == dict(labels)


def _threshold_cleared(when: ThresholdWhen, samples: list[Sample]) -> Check:
    if not samples:
        return Check(True, f"{when.metric}: no series reports the condition any more")
    holding = []
    for s in samples:
        value = s.value
        if when.of_capacity:
            if s.capacity is None or not s.capacity > 0:
                continue
            value = s.value / s.capacity
        if when.above is not None:
            holds = value > when.above
        else:
            assert when.below is not None
            holds = value < when.below
        if holds and math.isfinite(value):
            holding.append(value)
    what = "share of capacity" if when.of_capacity else "value"
    if holding:
        return Check(False, f"{when.metric} {what} {max(holding):.4g} still past the threshold")
    shown = ", ".join(
        f"{(s.value / s.capacity) if when.of_capacity and s.capacity else s.value:.4g}"
        for s in samples[:3]
    )
    return Check(True, f"{when.metric} {what} back within the threshold ({shown})")


def _fill_at(store: MetricStore, series_id: int, metric: str, at: datetime) -> float | None:
    row = store.query(
        """SELECT arg_max(x.value, x.ts) AS value, any_value(s.capacity) AS capacity
           FROM samples x JOIN series s USING (series_id)
           WHERE x.series_id = ? AND x.ts <= ?""",
        [series_id, at],
    )
    if row.empty or row["value"].isna().iloc[0] or row["capacity"].isna().iloc[0]:
        return None
    fill = _fill(metric, float(row["value"].iloc[0]), float(row["capacity"].iloc[0]))
    return fill if math.isfinite(fill) else None


def _fill(metric: str, value: float, capacity: float) -> float:
    return float(to_fill_ratio(np.array([value]), capacity, direction_for(metric))[0])


def _exhaustion_cleared(metric: str, then: float, samples: list[Sample]) -> Check:
    fills = [
        _fill(metric, s.value, s.capacity)
        for s in samples
        if s.capacity is not None and s.capacity > 0
    ]
    if not fills:
        return Check(True, f"{metric}: the filling series is gone (restarted)")
    now = max(fills)
    if now <= then - FREED_SHARE:
        return Check(True, f"{metric} fill {then:.1%} -> {now:.1%}")
    return Check(False, f"{metric} fill {then:.1%} -> {now:.1%}: not freed")


def _median(store: MetricStore, series_id: int, start: datetime, end: datetime) -> float | None:
    row = store.query(
        "SELECT median(value) AS m FROM samples WHERE series_id = ? AND ts >= ? AND ts < ?",
        [series_id, start, end],
    )
    value = row["m"].iloc[0]
    return (
        None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    )


def _latency_back(
    fresh: Callable[[], list[Sample]], baseline: float, bound: float, probes: int = 3
) -> Check:
    values: list[float] = []
    for i in range(probes):
        try:
            values += [s.value for s in fresh() if math.isfinite(s.value)]
        except AutofixError as exc:
            return Check(False, f"cannot probe: {exc}")
        if i + 1 < probes:
            time.sleep(0.1)
    if not values:
        return Check(False, "no fresh latency sample (the probe fails)")
    now = statistics.median(values)
    if now <= bound * baseline:
        return Check(
            True, f"latency {now:.4g}s back within {bound:.2g}x its baseline {baseline:.4g}s"
        )
    return Check(False, f"latency {now:.4g}s still above {bound:.2g}x its baseline {baseline:.4g}s")


__all__ = ["CollectNow", "rule_condition"]
