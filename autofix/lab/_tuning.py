"""Tuning rules on a replay: per-rule summaries, threshold sweeps, a suggested change."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from autofix.config import format_duration
from autofix.errors import InputError
from autofix.lab._replay import (
    WEEK,
    MetricWhen,
    _canonical,
    _grid,
    _naive,
    _prepare,
    load_rules,
    metric_match,
    replayable,
)
from autofix.pipeline import (
    AnomalyWhen,
    BaselineWhen,
    ExhaustionWhen,
    Pipeline,
    Rule,
    ThresholdWhen,
)
from autofix.policy import select
from autofix.store import MetricStore

# -- rules as data --------------------------------------------------------------------------


def threshold_field(rule: Rule) -> str:
    """The field of ``rule.when`` that plays the alert threshold (what a sweep varies)."""
    when = rule.when
    if isinstance(when, ExhaustionWhen):
        return "probability"
    if isinstance(when, AnomalyWhen):
        return "score"
    if isinstance(when, BaselineWhen):
        return "performance_below"
    if isinstance(when, ThresholdWhen):
        return "above" if when.above is not None else "below"
    raise InputError(f"rule {rule.name}: a {when.type} condition has no threshold to tune")


def with_threshold(rule: Rule, value: float) -> Rule:
    """A copy of ``rule`` whose threshold field is ``value`` (validated)."""
    data = rule.when.model_dump(by_alias=True)
    data[threshold_field(rule)] = float(value)
    when = type(rule.when).model_validate(data)
    return rule.model_copy(update={"when": when})


def rules_table(pipeline: Pipeline) -> pd.DataFrame:
    """One row per replayable rule: its condition, threshold, candidate fixes and mode."""
    rows = []
    for rule in pipeline.rules:
        if not isinstance(rule.when, MetricWhen):
            continue  # decided when an alert arrives, not from metric history
        name = threshold_field(rule)
        metric, match = metric_match(rule)
        rows.append(
            {
                "rule": rule.name,
                "kind": rule.when.type,
                "metric": metric,
                "match": ", ".join(f"{k}={v}" for k, v in match.items()),
                "threshold": f"{name} {getattr(rule.when, name):g}",
                "actions": ", ".join(f"{a.action}@{a.target or '(label)'}" for a in rule.actions),
                "mode": rule.mode or "(default)",
                "scored_after": format_duration(rule.score_after),
            }
        )
    return pd.DataFrame(rows)


# -- summaries and the threshold sweep ----------------------------------------------------


def _events(
    rule: Rule, truth: pd.DataFrame | None, start: datetime, end: datetime
) -> list[tuple[tuple[Any, ...], pd.Timestamp, pd.Timestamp | None]]:
    """Labelled events the rule should catch: (identity, when, window end or None)."""
    if truth is None or truth.empty:
        return []
    rows = select(truth.assign(series_id=range(len(truth))), *metric_match(rule))
    begin, finish = pd.Timestamp(start), pd.Timestamp(end)
    out: list[tuple[tuple[Any, ...], pd.Timestamp, pd.Timestamp | None]] = []
    for row in rows.to_dict("records"):
        key = (row["host"], row["metric"], _canonical(row["labels"]))
        if row["direction"] == "none":
            out += [(key, a, b) for a, b in row["slowdown_windows"] if begin <= a < finish]
        elif isinstance(rule.when, ExhaustionWhen):
            when = row["exhaustion_time"]
            if pd.notna(when) and begin < when <= finish:
                out.append((key, when, None))
    return out


def _episodes(decisions: pd.DataFrame, rule: Rule, step: timedelta) -> int:
    """Runs of decisions on one subject, no gap longer than ``repeat`` + ``step``: the
    first of a run is the fix; the repeats would meet the gates, or a pre-check finding
    the problem gone, had the first one been applied."""
    count = 0
    for _, group in decisions.groupby("subject", sort=False):
        gaps = group["ts"].sort_values().diff().dropna()
        count += 1 + int((gaps > pd.Timedelta(rule.repeat + step)).sum())
    return count


def _rule_stats(
    decisions: pd.DataFrame,
    rule: Rule,
    truth: pd.DataFrame | None,
    start: datetime,
    end: datetime,
    step: timedelta,
) -> dict[str, Any]:
    mine = decisions[decisions["rule"] == rule.name]
    judged = mine["false_fix"].dropna()
    false = int(judged.sum())
    weeks = (end - start) / WEEK
    leads, delays = [], []
    events = _events(rule, truth, start, end)
    detected = 0
    for key, when, until in events:
        hits = mine[
            (mine["host"] == key[0]) & (mine["metric"] == key[1]) & (mine["labels"] == key[2])
        ]
        if until is None:  # an exhaustion: caught by a real decision ahead of it
            ahead = hits["truth"].fillna(False).astype(bool) & (hits["ts"] < when)
            caught = hits.loc[ahead, "ts"]
            if len(caught):
                detected += 1
                leads.append((when - caught.min()).total_seconds() / 60)
        else:  # a slowdown window: caught by a decision inside it
            inside = hits.loc[(hits["ts"] >= when) & (hits["ts"] < until), "ts"]
            if len(inside):
                detected += 1
                delays.append((inside.min() - when).total_seconds() / 60)
    via_truth = int(mine["truth"].notna().sum())
    basis = "truth" if via_truth == len(judged) else "shadow" if via_truth == 0 else "mixed"
    fixes = _episodes(mine, rule, step)
    return {
        "decisions": len(mine),
        "fixes": fixes,
        "fixes_per_week": fixes / weeks if weeks > 0 else math.nan,
        "judged": len(judged),
        "false_fixes": false,
        "false_fix_rate": false / len(judged) if len(judged) else 0.0,
        "events": len(events),
        "detected": detected,
        "recall": detected / len(events) if events else math.nan,
        "lead_time_median_min": float(np.median(leads)) if leads else math.nan,
        "delay_median_min": float(np.median(delays)) if delays else math.nan,
        "basis": basis if len(judged) else "-",
    }


def replay_summary(
    decisions: pd.DataFrame,
    rules: Pipeline | Sequence[Rule],
    *,
    start: datetime | str,
    end: datetime | str,
    step: timedelta = timedelta(minutes=5),
    truth: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per rule: decisions, fixes (runs of repeated decisions on one subject, see
    ``replay_rules``) and fixes per week, false fixes among the judged decisions and
    their rate (what shadow mode measures), and, where the labels know the events,
    recall and median lead time (exhaustions) or delay (slowdowns).

    ``basis`` says what judged the decisions: ``truth`` (labels), ``shadow``
    (``score_outcome``) or ``mixed``. ``step`` is the replay's.
    """
    chosen = replayable(rules.rules if isinstance(rules, Pipeline) else rules)
    begin, finish = _naive(start), _naive(end)
    rows = [
        {"rule": r.name, **_rule_stats(decisions, r, truth, begin, finish, step)} for r in chosen
    ]
    return pd.DataFrame(rows).set_index("rule")


def threshold_sweep(
    rule: Rule | str,
    history: MetricStore | pd.DataFrame,
    thresholds: Iterable[float],
    *,
    pipeline: Pipeline | str | Path,
    start: datetime | str,
    end: datetime | str,
    step: timedelta = timedelta(minutes=15),
    predictions: pd.DataFrame | None = None,
    scores: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    default_mode: str = "approve",
) -> pd.DataFrame:
    """Replay one rule at each threshold (``threshold_field``): one row per threshold with
    ``replay_summary``'s columns. Predictions and scores are computed once and shared."""
    pipeline = pipeline if isinstance(pipeline, Pipeline) else load_rules(pipeline)
    if isinstance(rule, str):
        found = pipeline.rule(rule)
        if found is None:
            raise InputError(f"no rule named {rule!r} in the pipeline")
        rule = found
    begin, finish = _naive(start), _naive(end)
    replayer = _prepare(history, [rule], begin, finish, predictions, scores, truth)
    grid = _grid(begin, finish, step)
    rows = []
    for value in thresholds:
        variant = with_threshold(rule, value)
        decisions = replayer.run(pipeline, [variant], grid, default_mode)
        stats = _rule_stats(decisions, variant, truth, begin, finish, step)
        rows.append({"threshold": float(value), **stats})
    return pd.DataFrame(rows)


def best_threshold(sweep: pd.DataFrame, max_false_fix: float = 0.01) -> pd.Series | None:
    """The sweep row with the best recall among those with false_fix_rate < ``max_false_fix``.

    A threshold that decides nothing, or catches none of the labelled events, does not
    count. Ties go to the lower false-fix rate, then the longer lead time, then the
    higher (more conservative) threshold. None when no threshold qualifies.
    """
    useful = (sweep["decisions"] > 0) & ((sweep["detected"] > 0) | (sweep["events"] == 0))
    ok = sweep[(sweep["false_fix_rate"] < max_false_fix) & useful]
    if ok.empty:
        return None
    ranked = ok.assign(
        _recall=ok["recall"].fillna(-1.0),
        _lead=ok["lead_time_median_min"].fillna(-math.inf),
    ).sort_values(
        ["_recall", "false_fix_rate", "_lead", "threshold"],
        ascending=[False, True, False, False],
    )
    return ranked.drop(columns=["_recall", "_lead"]).iloc[0]


def _flow(rule: Rule, value: float | None = None) -> str:
    data = rule.when.model_dump(by_alias=True, exclude_unset=True)
    name = threshold_field(rule)
    data[name] = getattr(rule.when, name) if value is None else float(value)
    ordered = {"type": data.pop("type"), **data}
    clean = {k: format_duration(v) if isinstance(v, timedelta) else v for k, v in ordered.items()}
    text: str = yaml.safe_dump(clean, default_flow_style=True, sort_keys=False, width=1000)
    return text.strip()


def _stats_line(row: Mapping[str, Any] | pd.Series) -> str:
    lead = row.get("lead_time_median_min", math.nan)
    parts = [
        f"recall {row['recall']:.2f}",
        f"false-fix rate {row['false_fix_rate']:.1%}",
        f"{row['fixes_per_week']:.1f} fixes/week",
    ]
    if isinstance(lead, float) and math.isfinite(lead):
        parts.append(f"median lead time {lead / 60:.1f} h")
    return ", ".join(parts)


def suggest_rule_change(
    rule: Rule,
    best: pd.Series | None,
    sweep: pd.DataFrame | None = None,
    *,
    source: str = "pipelines/news-delivery.yaml",
    max_false_fix: float = 0.01,
) -> str:
    """A YAML diff for the rule: its condition at the ``best_threshold`` row, with the
    replay's evidence (the current threshold's row too, when the sweep has it). When no
    threshold qualifies (``best`` is None), a rule that fixes on its own (``mode: auto``)
    is moved to ``approve``, so a person confirms each fix until the rate is under the KPI.
    """
    name = threshold_field(rule)
    current = float(getattr(rule.when, name))
    header = f"# {source}: rule {rule.name}"
    now = None
    if sweep is not None:
        same = sweep[np.isclose(sweep["threshold"], current)]
        now = same.iloc[0] if len(same) else None
    seen = f"#   at {name} {current:g}: {_stats_line(now)}" if now is not None else None
    if best is None:
        lines = [
            header,
            f"# no {name} in the sweep keeps the false-fix rate below {max_false_fix:.0%} "
            "and still catches a labelled event",
            *([seen] if seen else []),
        ]
        if rule.mode in (None, "auto"):
            lines += [f"   - name: {rule.name}", f"-    mode: {rule.mode}", "+    mode: approve"]
        else:
            lines.append(f"# keep {name}: {current:g} and mode: {rule.mode}")
        return "\n".join(lines)
    value = float(best["threshold"])
    evidence = [*([seen] if seen else []), f"#   at {name} {value:g}: {_stats_line(best)}"]
    if math.isclose(value, current):
        return "\n".join(
            [header, f"# keep {name}: {current:g} (the best the sweep found)", *evidence]
        )
    return "\n".join(
        [
            header,
            f"   - name: {rule.name}",
            f"-    when: {_flow(rule)}",
            f"+    when: {_flow(rule, value)}",
            *evidence,
        ]
    )


__all__ = [
    "best_threshold",
    "replay_summary",
    "rules_table",
    "suggest_rule_change",
    "threshold_field",
    "threshold_sweep",
    "with_threshold",
]
