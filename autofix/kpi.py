"""KPIs from the audit log: success rate, MTTR, preventive execution, false-fix rate.

Everything is computed in SQL over the store's tables as they stood at ``now`` (events,
labels and outcomes recorded later are ignored), over the ``window`` before ``now``:

- success rate: succeeded / applied fixes requested in the window. Applied means it
  reached ``running`` and finished (succeeded, failed, rolled_back, interrupted); a fix
  rolled back by hand after it verified counts as rolled back.
- MTTR and recovery p50/p95: per decision, from ``detected_at`` to the first of its fixes
  that verified (fixes without a decision, e.g. an operator's ``fix run``, have none).
- preventive execution: maintenance tasks executed by their ``window_end``, and fixes of
  exhaustion forecasts that landed before the capacity was reached, over the tasks due
  (window ended in the window, or executed; not cancelled unexecuted) and the
  exhaustion fixes applied.
- false-fix rate: every applied fix has an outcome (``autofix.outcomes``: effective,
  ineffective or unneeded, the latest judgement wins) unless an operator labelled it
  (the latest label wins over any outcome); shadow and dry-run decisions made in the
  window are scored (the latest score wins). Pooled: (false labels + ineffective and
  unneeded outcomes + not real) / (labelled + judged + scored).

A store without some of the tables (an older schema, a Parquet snapshot of the metrics
only) reads as having no rows in them, so those KPIs are "no data", not an error.

>>> from autofix.store import MetricStore
>>> kpis = compute_kpis(MetricStore(":memory:"), datetime(2026, 3, 1))
>>> kpis.auto_fix_success_rate is None, kpis.status["false_fix_rate"]
(True, 'no_data')
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import duckdb
import pandas as pd

from autofix.audit import STATES
from autofix.errors import InputError, StoreError
from autofix.store import MetricStore

MODES = ("off", "shadow", "approve", "auto", "dry_run")
Status = Literal["meets_goal", "meets_target", "misses", "no_data"]


@dataclass(frozen=True)
class Target:
    """A KPI's seed target and our goal; ``better`` says which way is good."""

    label: str
    seed: float
    goal: float
    better: Literal["higher", "lower"]
    unit: Literal["ratio", "seconds"] = "ratio"
    strict: bool = False  # "< 1 %" rather than "≤ 1 %"

    def status(self, value: float | None) -> Status:
        if value is None or math.isnan(value):
            return "no_data"
        if self._meets(value, self.goal):
            return "meets_goal"
        return "meets_target" if self._meets(value, self.seed) else "misses"

    def _meets(self, value: float, bound: float) -> bool:
        if self.better == "higher":
            return value >= bound
        return value < bound if self.strict else value <= bound

    def describe(self, which: Literal["seed", "goal"]) -> str:
        """``≥ 85 %``, ``< 0.1 %``, ``≤ 300 s``."""
        sign = "≥" if self.better == "higher" else ("<" if self.strict else "≤")
        value = self.seed if which == "seed" else self.goal
        return f"{sign} {format_value(value, self.unit)}"


# DESIGN.md "KPIs": the seed's targets and our goals.
TARGETS: Mapping[str, Target] = {
    "auto_fix_success_rate": Target("auto-fix success rate", 0.85, 0.95, "higher"),
    "mttr_reduction": Target("MTTR reduction", 0.70, 0.90, "higher"),
    "preventive_execution_rate": Target("preventive execution rate", 0.95, 0.99, "higher"),
    "false_fix_rate": Target("false-fix rate", 0.01, 0.001, "lower", strict=True),
    "recovery_p95_seconds": Target("recovery time p95", 300.0, 60.0, "lower", "seconds"),
}
# The two single-source false-fix rates are held to the combined rate's target.
_TARGET_OF = {
    **{name: name for name in TARGETS},
    "false_fix_rate_labels": "false_fix_rate",
    "false_fix_rate_outcomes": "false_fix_rate",
    "false_fix_rate_shadow": "false_fix_rate",
}


@dataclass(frozen=True)
class Kpis:
    """The KPIs at ``now`` over ``window``; None means no data. ``as_dict`` is the JSON."""

    now: datetime
    window: timedelta
    manual_mttr: timedelta
    auto_fix_success_rate: float | None = None
    applied_fixes: int = 0
    succeeded_fixes: int = 0
    mttr_seconds: float | None = None
    recovery_p50_seconds: float | None = None
    recovery_p95_seconds: float | None = None
    recovered_incidents: int = 0
    mttr_reduction: float | None = None
    preventive_execution_rate: float | None = None
    maintenance_due: int = 0
    maintenance_on_time: int = 0
    false_fix_rate: float | None = None
    false_fix_rate_labels: float | None = None
    false_fix_rate_outcomes: float | None = None
    false_fix_rate_shadow: float | None = None
    labelled_fixes: int = 0
    false_labels: int = 0
    judged_fixes: int = 0
    judged_unlabelled: int = 0
    false_outcomes: int = 0
    effective_fixes: int = 0
    ineffective_fixes: int = 0
    unneeded_fixes: int = 0
    exhaustion_fixes: int = 0
    preventive_fixes: int = 0
    scored_decisions: int = 0
    not_real_decisions: int = 0
    escalations: int = 0
    pending_approvals: int = 0
    fixes_by_state: Mapping[str, int] = field(default_factory=dict)
    decisions_by_mode: Mapping[str, int] = field(default_factory=dict)

    @property
    def status(self) -> dict[str, Status]:
        """Each KPI that has a target: meets_goal, meets_target, misses or no_data."""
        return {name: TARGETS[of].status(getattr(self, name)) for name, of in _TARGET_OF.items()}

    def numbers(self) -> dict[str, float | None]:
        """The scalar KPIs and counts (what ``snapshot_kpis`` stores)."""
        return {
            name: None if (value := getattr(self, name)) is None else float(value)
            for name in _NUMERIC
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "window_seconds": self.window.total_seconds(),
            "manual_mttr_seconds": self.manual_mttr.total_seconds(),
            **{name: getattr(self, name) for name in _NUMERIC},
            "fixes_by_state": dict(self.fixes_by_state),
            "decisions_by_mode": dict(self.decisions_by_mode),
            "status": self.status,
            "targets": {
                name: {"seed": t.seed, "goal": t.goal, "better": t.better, "strict": t.strict}
                for name, t in TARGETS.items()
            },
        }


_NUMERIC = tuple(
    f.name
    for f in fields(Kpis)
    if f.name not in {"now", "window", "manual_mttr", "fixes_by_state", "decisions_by_mode"}
)


@dataclass(frozen=True)
class KpiRow:
    """One line of the KPI table (CLI and report): value, targets, status and its basis."""

    name: str
    label: str
    value: float | None
    shown: str
    seed: str
    goal: str
    status: Status | None
    basis: str


def _short(number: float, digits: int) -> str:
    return f"{number:.{digits}f}".rstrip("0").rstrip(".")


def format_value(value: float | None, unit: str) -> str:
    """``87.5 %``, ``0.05 %``, ``42 s``, ``4.5 min``; ``no data`` for None."""
    if value is None or math.isnan(value):
        return "no data"
    if unit == "seconds":
        if abs(value) < 600:
            return f"{value:.0f} s"
        if abs(value) < 7200:
            return f"{_short(value / 60, 1)} min"
        return f"{_short(value / 3600, 1)} h"
    return f"{_short(value * 100, 2)} %"


def kpi_rows(kpis: Kpis) -> list[KpiRow]:
    """The KPI table, in the order people read it."""
    k = kpis
    manual = format_value(k.manual_mttr.total_seconds(), "seconds")
    rows: list[tuple[str, str, str, str]] = [
        (
            "auto_fix_success_rate",
            "auto-fix success rate",
            "ratio",
            f"{k.succeeded_fixes} of {k.applied_fixes} applied fixes succeeded",
        ),
        (
            "mttr_reduction",
            "MTTR reduction",
            "ratio",
            f"MTTR {format_value(k.mttr_seconds, 'seconds')} vs {manual} by hand"
            if k.mttr_seconds is not None
            else "no recovered incidents",
        ),
        ("mttr_seconds", "MTTR", "seconds", f"{k.recovered_incidents} recovered incidents"),
        ("recovery_p50_seconds", "recovery time p50", "seconds", "detection to verified fix"),
        ("recovery_p95_seconds", "recovery time p95", "seconds", "detection to verified fix"),
        (
            "preventive_execution_rate",
            "preventive execution rate",
            "ratio",
            f"{k.maintenance_on_time} of {k.maintenance_due} due tasks on time, "
            f"{k.preventive_fixes} of {k.exhaustion_fixes} exhaustion fixes before full",
        ),
        (
            "false_fix_rate",
            "false-fix rate",
            "ratio",
            f"{k.false_labels + k.false_outcomes + k.not_real_decisions} of "
            f"{k.labelled_fixes + k.judged_unlabelled + k.scored_decisions} judged fixes "
            "and scored decisions",
        ),
        (
            "false_fix_rate_outcomes",
            "false-fix rate (automatic outcomes)",
            "ratio",
            f"{k.ineffective_fixes} ineffective + {k.unneeded_fixes} unneeded of "
            f"{k.judged_fixes} judged applied fixes",
        ),
        (
            "false_fix_rate_labels",
            "false-fix rate (operator labels)",
            "ratio",
            f"{k.false_labels} of {k.labelled_fixes} labelled applied fixes",
        ),
        (
            "false_fix_rate_shadow",
            "false-fix rate (shadow, dry run)",
            "ratio",
            f"{k.not_real_decisions} of {k.scored_decisions} scored decisions",
        ),
    ]
    status = k.status
    out = []
    for name, label, unit, basis in rows:
        value = getattr(k, name)
        target = TARGETS.get(_TARGET_OF.get(name, ""))
        out.append(
            KpiRow(
                name,
                label,
                value,
                format_value(value, unit),
                target.describe("seed") if target else "",
                target.describe("goal") if target else "",
                status.get(name),
                basis,
            )
        )
    return out


# -- reading the audit tables --------------------------------------------------------

_AUDIT_TABLES = (
    "fixes",
    "fix_events",
    "fix_labels",
    "fix_outcomes",
    "escalations",
    "approvals",
    "decisions",
    "decision_outcomes",
    "maintenance_tasks",
    "maintenance_events",
    "kpi_snapshots",
    "predictions",
)


@functools.cache
def _stand_ins() -> dict[str, str]:
    # Empty relations typed like the current schema, for stores that lack a table.
    with MetricStore(":memory:") as blank:
        columns = blank.query(
            """SELECT table_name, column_name, data_type FROM information_schema.columns
               ORDER BY table_name, ordinal_position"""
        )
    selects: dict[str, list[str]] = {}
    for table, column, kind in columns.itertuples(index=False):
        selects.setdefault(str(table), []).append(f'NULL::{kind} AS "{column}"')
    # rowid too: queries break ties between equal timestamps by insertion order.
    return {
        t: f"SELECT {', '.join(cols)}, NULL::BIGINT AS rowid WHERE false"
        for t, cols in selects.items()
    }


def audit_query(store: MetricStore, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    """``store.query`` where a missing audit table reads as empty (snapshots, old schemas)."""
    present = set(store.query("SELECT table_name FROM information_schema.tables")["table_name"])
    missing = [t for t in _AUDIT_TABLES if t not in present]
    if missing:
        ctes = ", ".join(f"{t} AS ({_stand_ins()[t]})" for t in missing)
        head, _, rest = sql.lstrip().partition(" ")
        sql = f"WITH {ctes}, {rest}" if head.upper() == "WITH" else f"WITH {ctes} {sql}"
    return store.query(sql, list(params))


# $1 is the window start, $2 is now. A fix is "applied" when it reached `running` and
# finished; its state is its latest event at or before now; the latest label (and the
# latest score of a decision) wins, ties going to the one recorded last.
_FIXES = """
    cur AS (
        SELECT fix_id, arg_max(state, seq) AS state,
               bool_or(state = 'running') AS reached_running,
               min(ts) FILTER (WHERE state = 'succeeded') AS succeeded_at
        FROM fix_events WHERE ts <= $2 GROUP BY fix_id),
    lab AS (
        SELECT fix_id, arg_max(false_fix, (ts, rowid)) AS false_fix
        FROM fix_labels WHERE ts <= $2 GROUP BY fix_id),
    out AS (
        SELECT fix_id, arg_max(outcome, (judged_at, rowid)) AS outcome,
               arg_max(preventive, (judged_at, rowid)) AS preventive
        FROM fix_outcomes WHERE judged_at <= $2 GROUP BY fix_id),
    fx AS (
        SELECT f.fix_id, f.action, f.target, f.decision_id, f.requested_at, c.state,
               c.reached_running
                   AND c.state IN ('succeeded', 'failed', 'rolled_back', 'interrupted')
                   AS applied,
               c.succeeded_at, lab.false_fix, d.detected_at, d.kind,
               out.outcome, out.preventive,
               -- What counts for the false-fix rate: a label wins over an outcome.
               coalesce(lab.false_fix, out.outcome IN ('ineffective', 'unneeded')) AS judged_false
        FROM fixes f JOIN cur c USING (fix_id)
        LEFT JOIN lab USING (fix_id)
        LEFT JOIN out USING (fix_id)
        LEFT JOIN decisions d ON d.decision_id = f.decision_id
        WHERE f.requested_at >= $1 AND f.requested_at <= $2),
    -- One recovery per decision: detection to the first fix of it that verified.
    rec AS (
        SELECT decision_id, min(requested_at) AS requested_at,
               greatest(date_diff('microsecond', any_value(detected_at), min(succeeded_at)), 0)
                   / 1e6 AS seconds
        FROM fx WHERE state = 'succeeded' AND detected_at IS NOT NULL
        GROUP BY decision_id),
    -- Shadow and dry-run decisions scored after their horizon (the latest score wins).
    scored AS (
        SELECT d.decision_id, d.ts, o.real
        FROM decisions d JOIN (
            SELECT decision_id, arg_max(real, (scored_at, rowid)) AS real
            FROM decision_outcomes WHERE scored_at <= $2 GROUP BY decision_id) o
          USING (decision_id)
        WHERE d.mode IN ('shadow', 'dry_run') AND d.ts >= $1 AND d.ts <= $2)
"""


def _naive(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _number(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def compute_kpis(
    store: MetricStore,
    now: datetime,
    window: timedelta = timedelta(days=30),
    manual_mttr: timedelta = timedelta(minutes=30),
) -> Kpis:
    """The KPIs over ``window`` before ``now`` (the module docstring has the rules).

    ``manual_mttr`` is the mean time to recover by hand that MTTR reduction compares to.
    """
    if window <= timedelta(0):
        raise InputError(f"KPI window must be positive, not {window}")
    if manual_mttr <= timedelta(0):
        raise InputError(f"manual MTTR must be positive, not {manual_mttr}")
    now = _naive(now)
    params = [now - window, now]
    fixes = audit_query(
        store,
        f"""WITH {_FIXES}
            SELECT
                (SELECT count(*) FILTER (WHERE applied) FROM fx) AS applied,
                (SELECT count(*) FILTER (WHERE applied AND state = 'succeeded') FROM fx)
                    AS succeeded,
                (SELECT count(*) FILTER (WHERE applied AND false_fix IS NOT NULL) FROM fx)
                    AS labelled,
                (SELECT count(*) FILTER (WHERE applied AND false_fix) FROM fx) AS false_labels,
                (SELECT count(*) FILTER (WHERE applied AND outcome IS NOT NULL) FROM fx)
                    AS judged,
                (SELECT count(*) FILTER (WHERE applied AND outcome = 'effective') FROM fx)
                    AS effective,
                (SELECT count(*) FILTER (WHERE applied AND outcome = 'ineffective') FROM fx)
                    AS ineffective,
                (SELECT count(*) FILTER (WHERE applied AND outcome = 'unneeded') FROM fx)
                    AS unneeded,
                (SELECT count(*) FILTER (
                    WHERE applied AND false_fix IS NULL AND outcome IS NOT NULL) FROM fx)
                    AS judged_unlabelled,
                (SELECT count(*) FILTER (
                    WHERE applied AND false_fix IS NULL AND judged_false) FROM fx)
                    AS false_outcomes,
                (SELECT count(*) FILTER (
                    WHERE applied AND kind = 'exhaustion' AND preventive IS NOT NULL) FROM fx)
                    AS exhaustion_fixes,
                (SELECT count(*) FILTER (WHERE applied AND kind = 'exhaustion' AND preventive)
                    FROM fx) AS preventive_fixes,
                (SELECT count(*) FROM rec) AS recovered,
                (SELECT avg(seconds) FROM rec) AS mttr,
                (SELECT quantile_cont(seconds, 0.5) FROM rec) AS p50,
                (SELECT quantile_cont(seconds, 0.95) FROM rec) AS p95,
                (SELECT count(*) FROM scored) AS scored,
                (SELECT count(*) FILTER (WHERE NOT real) FROM scored) AS not_real,
                (SELECT count(*) FROM escalations WHERE ts >= $1 AND ts <= $2) AS escalations""",
        params,
    ).iloc[0]
    states = audit_query(
        store, f"WITH {_FIXES} SELECT state, count(*) AS n FROM fx GROUP BY state", params
    )
    modes = audit_query(
        store,
        "SELECT mode, count(*) AS n FROM decisions WHERE ts >= $1 AND ts <= $2 GROUP BY mode",
        params,
    )
    maintenance = audit_query(
        store,
        """WITH ev AS (
               SELECT task_id, min(ts) FILTER (WHERE state = 'executed') AS executed_at,
                      bool_or(state = 'cancelled') AS cancelled
               FROM maintenance_events WHERE ts <= $2 GROUP BY task_id),
           due AS (
               SELECT t.window_end, ev.executed_at
               FROM maintenance_tasks t LEFT JOIN ev USING (task_id)
               WHERE t.window_end >= $1
                 AND (t.window_end <= $2 OR ev.executed_at IS NOT NULL)
                 AND NOT (coalesce(ev.cancelled, false) AND ev.executed_at IS NULL))
           SELECT count(*) AS due,
                  count(*) FILTER (WHERE executed_at <= window_end) AS on_time
           FROM due""",
        params,
    ).iloc[0]

    applied, succeeded = int(fixes["applied"]), int(fixes["succeeded"])
    labelled, false_labels = int(fixes["labelled"]), int(fixes["false_labels"])
    judged_unlabelled, false_outcomes = (
        int(fixes["judged_unlabelled"]),
        int(fixes["false_outcomes"]),
    )
    judged = int(fixes["judged"])
    ineffective, unneeded = int(fixes["ineffective"]), int(fixes["unneeded"])
    exhaustion, preventive = int(fixes["exhaustion_fixes"]), int(fixes["preventive_fixes"])
    due, on_time = int(maintenance["due"]), int(maintenance["on_time"])
    scored, not_real = int(fixes["scored"]), int(fixes["not_real"])
    mttr = _number(fixes["mttr"])
    by_state = dict.fromkeys(STATES, 0)
    by_state.update({str(s): int(n) for s, n in states.itertuples(index=False)})
    by_mode = dict.fromkeys(MODES, 0)
    by_mode.update({str(m): int(n) for m, n in modes.itertuples(index=False)})
    return Kpis(
        now=now,
        window=window,
        manual_mttr=manual_mttr,
        auto_fix_success_rate=_ratio(succeeded, applied),
        applied_fixes=applied,
        succeeded_fixes=succeeded,
        mttr_seconds=mttr,
        recovery_p50_seconds=_number(fixes["p50"]),
        recovery_p95_seconds=_number(fixes["p95"]),
        recovered_incidents=int(fixes["recovered"]),
        mttr_reduction=None if mttr is None else 1 - mttr / manual_mttr.total_seconds(),
        preventive_execution_rate=_ratio(on_time + preventive, due + exhaustion),
        maintenance_due=due,
        maintenance_on_time=on_time,
        false_fix_rate=_ratio(
            false_labels + false_outcomes + not_real, labelled + judged_unlabelled + scored
        ),
        false_fix_rate_labels=_ratio(false_labels, labelled),
        false_fix_rate_outcomes=_ratio(ineffective + unneeded, judged),
        false_fix_rate_shadow=_ratio(not_real, scored),
        labelled_fixes=labelled,
        false_labels=false_labels,
        judged_fixes=judged,
        effective_fixes=int(fixes["effective"]),
        ineffective_fixes=ineffective,
        unneeded_fixes=unneeded,
        exhaustion_fixes=exhaustion,
        preventive_fixes=preventive,
        judged_unlabelled=judged_unlabelled,
        false_outcomes=false_outcomes,
        scored_decisions=scored,
        not_real_decisions=not_real,
        escalations=int(fixes["escalations"]),
        pending_approvals=by_state["pending_approval"],
        fixes_by_state=by_state,
        decisions_by_mode=by_mode,
    )


def daily_kpis(store: MetricStore, since: datetime, now: datetime) -> pd.DataFrame:
    """One row per UTC day from ``since`` to ``now``: success rate, MTTR, false-fix rate.

    Fixes count on the day they were requested, shadow decisions on the day they were
    made; days without data are rows of NaN (a gap in a chart, not a zero).
    """
    since, now = _naive(since), _naive(now)
    return audit_query(
        store,
        f"""WITH {_FIXES},
            days AS (
                SELECT day FROM range(date_trunc('day', $1::TIMESTAMP),
                                      date_trunc('day', $2::TIMESTAMP) + INTERVAL 1 DAY,
                                      INTERVAL 1 DAY) t(day)),
            f AS (
                SELECT date_trunc('day', requested_at) AS day,
                       count(*) FILTER (WHERE applied) AS applied_fixes,
                       count(*) FILTER (WHERE applied AND state = 'succeeded')
                           AS succeeded_fixes,
                       count(*) FILTER (WHERE applied AND false_fix IS NOT NULL)
                           AS labelled_fixes,
                       count(*) FILTER (WHERE applied AND false_fix) AS false_labels,
                       count(*) FILTER (WHERE applied AND (false_fix IS NOT NULL
                                                           OR outcome IS NOT NULL))
                           AS judged_fixes,
                       count(*) FILTER (WHERE applied AND judged_false) AS false_fixes
                FROM fx GROUP BY ALL),
            r AS (
                SELECT date_trunc('day', requested_at) AS day, avg(seconds) AS mttr_seconds,
                       count(*) AS recovered_incidents
                FROM rec GROUP BY ALL),
            s AS (
                SELECT date_trunc('day', ts) AS day, count(*) AS scored_decisions,
                       count(*) FILTER (WHERE NOT real) AS not_real_decisions
                FROM scored GROUP BY ALL),
            joined AS (
                SELECT days.day,
                       coalesce(f.applied_fixes, 0) AS applied_fixes,
                       coalesce(f.succeeded_fixes, 0) AS succeeded_fixes,
                       r.mttr_seconds,
                       coalesce(r.recovered_incidents, 0) AS recovered_incidents,
                       coalesce(f.labelled_fixes, 0) AS labelled_fixes,
                       coalesce(f.false_labels, 0) AS false_labels,
                       coalesce(f.judged_fixes, 0) AS judged_fixes,
                       coalesce(f.false_fixes, 0) AS false_fixes,
                       coalesce(s.scored_decisions, 0) AS scored_decisions,
                       coalesce(s.not_real_decisions, 0) AS not_real_decisions
                FROM days LEFT JOIN f USING (day) LEFT JOIN r USING (day)
                LEFT JOIN s USING (day))
            SELECT day, applied_fixes, succeeded_fixes,
                   succeeded_fixes / nullif(applied_fixes, 0) AS auto_fix_success_rate,
                   mttr_seconds, recovered_incidents, labelled_fixes, false_labels,
                   scored_decisions, not_real_decisions,
                   (false_fixes + not_real_decisions)
                       / nullif(judged_fixes + scored_decisions, 0) AS false_fix_rate,
                   false_labels / nullif(labelled_fixes, 0) AS false_fix_rate_labels,
                   not_real_decisions / nullif(scored_decisions, 0) AS false_fix_rate_shadow
            FROM joined ORDER BY day""",
        [since, now],
    )


# -- snapshots -----------------------------------------------------------------------


def snapshot_kpis(store: MetricStore, kpis: Kpis, now: datetime) -> int:
    """Append the scalar KPIs (None as NULL) to ``kpi_snapshots`` at ``now``; rows written."""
    if store.read_only:
        raise StoreError(f"{store.path}: opened read-only; KPI snapshots go through the writer")
    numbers = kpis.numbers()
    try:
        with store._write_lock:
            store._run(
                "INSERT INTO kpi_snapshots SELECT ?, unnest(?::VARCHAR[]), unnest(?::DOUBLE[])",
                [_naive(now), list(numbers), list(numbers.values())],
            )
    except duckdb.Error as exc:
        raise StoreError(f"{store.path}: KPI snapshot: {exc}") from exc
    return len(numbers)


def kpi_history(store: MetricStore, since: datetime) -> pd.DataFrame:
    """Snapshots since ``since``, wide: a ``ts`` column and one column per KPI."""
    long = audit_query(
        store,
        "SELECT ts, name, value FROM kpi_snapshots WHERE ts >= ? ORDER BY ts, name",
        [_naive(since)],
    )
    if long.empty:
        return pd.DataFrame({"ts": pd.Series([], dtype="datetime64[us]")})
    latest = long.drop_duplicates(["ts", "name"], keep="last")
    wide = latest.pivot(index="ts", columns="name", values="value")
    wide.columns.name = None
    return wide.reset_index()


__all__ = [
    "MODES",
    "TARGETS",
    "KpiRow",
    "Kpis",
    "Target",
    "audit_query",
    "compute_kpis",
    "daily_kpis",
    "format_value",
    "kpi_history",
    "kpi_rows",
    "snapshot_kpis",
]
