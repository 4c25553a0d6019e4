"""The service judges its own fixes: effective, ineffective or unneeded.

Every applied fix (it reached ``running`` and finished) gets an outcome in
``fix_outcomes``, without a human:

- **effective** — the condition that triggered it cleared because of it and stayed
  cleared for ``AUTOFIX_FIX_OUTCOME_WINDOW``;
- **ineffective** — the condition persisted (the fix's verify failed) or came back
  within the window;
- **unneeded** — the condition was explained by a dependency that was in trouble at
  the time (a web worker restarted while its database refused connections), or it
  cleared by itself before the fix applied.

Ineffective and unneeded fixes are false fixes. A fix is judged provisionally as soon
as it finishes (so the false-fix rate is never "no data" once fixes ran) and finally
when its window has passed; the latest judgement wins, and an operator's label
(``autofix fix label``) wins over both. A fix that answered a forecast of exhaustion is
*preventive* when it landed before the series reached its capacity.

>>> OUTCOMES
('effective', 'ineffective', 'unneeded')
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from autofix.collect.base import format_labels
from autofix.depends import dependencies
from autofix.models.base import direction_for, to_fill_ratio
from autofix.pipeline import Pipeline
from autofix.policy import is_resource_trouble, is_symptom, score_outcome
from autofix.store import MetricStore

log = logging.getLogger(__name__)

OUTCOMES = ("effective", "ineffective", "unneeded")
FALSE_OUTCOMES = frozenset({"ineffective", "unneeded"})
#: Fixes older than this are not (re)judged.
JUDGE_HORIZON = timedelta(days=2)


@dataclass(frozen=True)
class Judgement:
    """One fix's outcome and why; ``preventive`` only for fixes of exhaustion forecasts."""

    outcome: str
    reason: str
    preventive: bool | None = None


_DUE = """
    WITH cur AS (
        SELECT fix_id, arg_max(state, seq) AS state, bool_or(state = 'running') AS ran,
               min(ts) FILTER (WHERE state = 'running') AS started_at,
               max(ts) FILTER (WHERE state IN ('succeeded', 'failed', 'rolled_back'))
                   AS finished_at,
               arg_max(coalesce(error, reason), seq) AS why
        FROM fix_events GROUP BY fix_id),
    o AS (SELECT fix_id, bool_or(final) AS final, count(*) AS n
          FROM fix_outcomes GROUP BY fix_id)
    SELECT f.fix_id, f.action, f.target, f.inputs, c.state, c.started_at, c.finished_at,
           c.why, d.rule, d.kind, d.series_id, d.ts AS decided_at, d.inputs AS decided,
           coalesce(o.n, 0) AS judged
    FROM fixes f JOIN cur c USING (fix_id)
    LEFT JOIN o USING (fix_id)
    LEFT JOIN decisions d ON d.decision_id = f.decision_id
    WHERE c.ran AND c.state IN ('succeeded', 'failed', 'rolled_back')
      AND NOT coalesce(o.final, false)
      AND c.finished_at >= ? AND c.finished_at <= ?
    ORDER BY f.fix_id
"""


def judge_fixes(
    store: MetricStore,
    pipeline: Pipeline,
    now: datetime,
    *,
    window: timedelta,
    host: str,
    settle: timedelta = timedelta(minutes=1),
) -> int:
    """Judge the fixes that finished: provisionally at once, finally after ``window``.

    Returns how many outcomes were recorded.
    """
    due = store.query(_DUE, [now - JUDGE_HORIZON, now])
    written = 0
    for row in due.to_dict("records"):
        finished = pd.Timestamp(row["finished_at"]).to_pydatetime()
        final = now - finished >= window
        if not final and int(row["judged"]) > 0:
            continue  # provisionally judged already; wait for the window
        record = {str(k): v for k, v in row.items()}
        judgement = judge(
            record, store, pipeline, finished, final, window=window, host=host, settle=settle
        )
        with store._write_lock:
            store.execute(
                "INSERT INTO fix_outcomes VALUES (?, ?, ?, ?, ?, ?)",
                [
                    int(row["fix_id"]),
                    now,
                    judgement.outcome,
                    final,
                    judgement.preventive,
                    judgement.reason,
                ],
            )
        log.info(
            "fix %d (%s on %s) judged %s%s: %s",
            int(row["fix_id"]),
            row["action"],
            row["target"],
            judgement.outcome,
            "" if final else " (provisional)",
            judgement.reason,
        )
        written += 1
    return written


def judge(
    row: dict[str, Any],
    store: MetricStore,
    pipeline: Pipeline,
    finished: datetime,
    final: bool,
    *,
    window: timedelta,
    host: str,
    settle: timedelta = timedelta(minutes=1),
) -> Judgement:
    """The outcome of one finished fix (a row of ``_DUE``)."""
    target = str(row["target"])
    decided = _json(row["decided"])
    rule = pipeline.rule(str(row["rule"])) if isinstance(row["rule"], str) else None
    kind = row["kind"] if isinstance(row["kind"], str) else None
    decided_at = (
        pd.Timestamp(row["decided_at"]).to_pydatetime()
        if not pd.isna(row["decided_at"])
        else pd.Timestamp(row["started_at"]).to_pydatetime()
    )
    started = pd.Timestamp(row["started_at"]).to_pydatetime()
    preventive = None
    if kind == "exhaustion" and not pd.isna(row["series_id"]):
        preventive = _landed_before_full(store, int(row["series_id"]), decided_at, finished)
    cause = decided.get("cause") if isinstance(decided, dict) else None
    # A hang, a crash or a refused port is the target's own fault, whatever else is down.
    own_fault = kind == "health" and cause in {"hang", "down", "refused"}
    symptom = (kind == "health" and not own_fault) or (rule is not None and is_symptom(rule))
    deps: list[str] = []
    if symptom:
        about = decided.get("labels", {}).get("target") if isinstance(decided, dict) else None
        names = {target, *([about] if isinstance(about, str) else [])}
        deps = [d for n in names for d in dependencies(pipeline, n) if d not in names]
        # What explains a symptom is a dependency in trouble when it was decided (or
        # fixed within ``settle`` before: its dependents may still be recovering), as
        # the inhibition reads it; one that went wrong while the fix ran explains nothing
        # about why it was needed.
        troubled = _troubled(store, host, pipeline, deps, decided_at - settle, started)
        if troubled is not None:
            return Judgement("unneeded", f"the symptom was explained by {troubled}", preventive)
    if kind == "health":
        healed = _healthy_between(store, host, target, decided_at, started)
        if healed:
            return Judgement("unneeded", f"{target} was healthy again before the fix applied")
    if row["state"] != "succeeded":
        why = " ".join(str(row["why"] or "verify failed").split())[:200]
        return Judgement("ineffective", f"the condition did not clear: {why}", preventive)
    if not final:
        return Judgement(
            "effective", f"verified; judged again after {window} (provisional)", preventive
        )
    if kind == "health":
        again = _came_back(store, f"recovery:{target}", finished, finished + window, cause)
        if again is not None:
            return Judgement("ineffective", f"the same fault came back at {again:%H:%M:%S}")
        return Judgement("effective", f"{target} stayed healthy for {window}")
    if rule is not None and not pd.isna(row["series_id"]):
        after = _after(store, rule.when.type, int(row["series_id"]), finished, finished + window)
        verdict = score_outcome(rule, finished, after)
        if verdict is not None and verdict[0]:
            # A symptom that came back while a dependency was in trouble is that
            # dependency's (the database ran out of connections after a hung worker's
            # restart), not the fix's failure.
            later = _troubled(store, host, pipeline, deps, finished, finished + window)
            if later is not None:
                return Judgement(
                    "effective",
                    f"verified; the symptom came back only with {later}",
                    preventive,
                )
            return Judgement(
                "ineffective", f"the condition persisted after the fix: {verdict[1]}", preventive
            )
        why = verdict[1] if verdict is not None else "no samples after it"
        return Judgement("effective", f"the condition stayed cleared ({why})", preventive)
    return Judgement("effective", "verified (no triggering condition to watch)", preventive)


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}


def _troubled(
    store: MetricStore,
    host: str,
    pipeline: Pipeline,
    names: list[str],
    start: datetime,
    end: datetime,
) -> str | None:
    """The first of ``names`` whose health check or probe failed in [start, end], that
    had a fix of its own running then, or a resource condition of its own decided then
    (a rule that is not about a symptom: its role's connections used up)."""
    resource = [r.name for r in pipeline.rules if is_resource_trouble(r)]
    for name in names:
        down = store.query(
            """SELECT count(*) AS n FROM samples x JOIN series s USING (series_id)
               WHERE s.metric IN ('autofix_health_up', 'probe_up') AND s.host = ?
                 AND json_extract_string(s.labels, '$.target') = ?
                 AND x.value < 1 AND x.ts >= ? AND x.ts <= ?""",
            [host, name, start, end],
        )
        if int(down["n"].iloc[0]):
            return f"{name} (unhealthy then)"
        fixed = store.query(
            """SELECT count(*) AS n FROM fixes f JOIN fix_events e USING (fix_id)
               WHERE f.target = ? AND e.state = 'running' AND e.ts >= ? AND e.ts <= ?""",
            [name, start, end],
        )
        if int(fixed["n"].iloc[0]):
            return f"{name} (being fixed then)"
        if resource:
            marks = ", ".join("?" * len(resource))
            held = store.query(
                f"""SELECT min(rule) AS rule FROM decisions
                    WHERE target = ? AND rule IN ({marks}) AND mode NOT IN ('off', 'shadow')
                      AND ts >= ? AND ts <= ?""",
                [name, *resource, start, end],
            )
            if held["rule"].notna().any():
                return f"{name} (its condition {held['rule'].iloc[0]} held then)"
    return None


def _healthy_between(
    store: MetricStore, host: str, target: str, start: datetime, end: datetime
) -> bool:
    ok = store.query(
        """SELECT count(*) AS n FROM samples x JOIN series s USING (series_id)
           WHERE s.metric = 'autofix_health_up' AND s.host = ? AND s.labels = ?
             AND x.value >= 1 AND x.ts > ? AND x.ts < ?""",
        [host, format_labels({"target": target}), start, end],
    )
    return bool(int(ok["n"].iloc[0]))


def _came_back(
    store: MetricStore, rule: str, start: datetime, end: datetime, cause: Any
) -> datetime | None:
    rows = store.query(
        """SELECT ts, inputs FROM decisions
           WHERE rule = ? AND ts > ? AND ts <= ? AND mode NOT IN ('inhibited', 'silenced')
           ORDER BY ts""",
        [rule, start, end],
    )
    for row in rows.to_dict("records"):
        if cause is None or _json(row["inputs"]).get("cause") == cause:
            return pd.Timestamp(row["ts"]).to_pydatetime()
    return None


def _after(
    store: MetricStore, kind: str, series_id: int, start: datetime, end: datetime
) -> pd.DataFrame:
    if kind == "anomaly":
        return store.query(
            """SELECT a.ts, a.value, a.score, s.metric, s.capacity FROM anomaly_scores a
               JOIN series s USING (series_id)
               WHERE a.series_id = ? AND a.ts > ? AND a.ts <= ? ORDER BY a.ts""",
            [series_id, start, end],
        )
    return store.query(
        """SELECT x.ts, x.value, s.metric, s.capacity FROM samples x
           JOIN series s USING (series_id)
           WHERE x.series_id = ? AND x.ts > ? AND x.ts <= ? ORDER BY x.ts""",
        [series_id, start, end],
    )


def _landed_before_full(
    store: MetricStore, series_id: int, start: datetime, end: datetime
) -> bool | None:
    """Whether the series stayed below its capacity from the decision to the fix's end
    (from the last sample before the decision on)."""
    rows = _after(store, "exhaustion", series_id, start - timedelta(hours=1), end)
    before = rows[rows["ts"] <= start]
    rows = rows[rows["ts"] >= (before["ts"].max() if not before.empty else start)]
    if rows.empty:
        return None
    fill = to_fill_ratio(
        rows["value"].to_numpy("float64"),
        rows["capacity"].to_numpy("float64"),
        direction_for(str(rows["metric"].iloc[0])),
    )
    finite = fill[np.isfinite(fill)]
    if not len(finite):
        return None
    return bool(finite.max() < 1.0)


__all__ = ["FALSE_OUTCOMES", "OUTCOMES", "Judgement", "judge", "judge_fixes"]
