"""The fix audit log in DuckDB: a request row per fix plus append-only state transitions.

Tables (store migration 2): ``fixes`` (what was asked, by whom, with which inputs),
``fix_events`` (every transition: state, step, gate, reason, plan, facts, output, error,
undo, duration, actor), ``approvals`` and ``escalations``. Nothing is updated in place;
a fix's state is its latest event. Every append is its own committed statement, so the
``running`` event is durable before an action is applied. Gate state (locks, cooldowns,
budgets, breakers) is derived from these rows by ``history``.

Every transition, approval verdict and escalation is also one INFO log line carrying
the fix's ids (``fix_id``, ``action``, ``target``, ``decision_id``, ``rule``), so the
log of a service tells what it did without a query.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from autofix.errors import InputError, StoreError
from autofix.gates import ApprovalRecord, PastFix, cause_of
from autofix.store import MetricStore, one_line

STATES = (
    "planned",
    "pending_approval",
    "refused",
    "running",
    "succeeded",
    "failed",
    "rolled_back",
    "interrupted",
    "noop",
)
_FINISHED = ("succeeded", "failed", "rolled_back", "interrupted")
_IDS_KEPT = 256  # fixes whose ids are remembered for log lines (else one query each)

log = logging.getLogger(__name__)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass
class FixRecord:
    """A fix as the CLI and API show it; ``as_dict`` has the stable JSON fields first."""

    id: int
    action: str
    target: str
    group: str | None
    params: dict[str, Any]
    requested_by: str
    requested_at: datetime
    inputs: dict[str, Any]
    state: str = "planned"
    plan: list[dict[str, Any]] | None = None
    gate: str | None = None
    reason: str | None = None
    output: str | None = None
    error: str | None = None
    undo: dict[str, Any] | None = None
    facts: dict[str, Any] | None = None
    approved_by: str | None = None
    updated_at: datetime | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self, events: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "action": self.action,
            "target": self.target,
            "state": self.state,
            "plan": self.plan or [],
            "gate": self.gate,
            "output": self.output,
            "error": self.error,
            "reason": self.reason,
            "params": self.params,
            "approved_by": self.approved_by,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }
        if events:
            out["events"] = self.events
        return out


class AuditLog:
    """Append and read the audit tables of one (writable) MetricStore."""

    def __init__(
        self, store: MetricStore, clock: Callable[[], datetime], output_limit: int = 4000
    ) -> None:
        self.store = store
        self.clock = clock
        self.output_limit = output_limit
        self._ids: dict[int, dict[str, Any]] = {}

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # The store's connection and write lock: one writer per process, as for samples.
        try:
            with self.store._write_lock:
                return self.store._run(sql, list(params))
        except duckdb.Error as exc:
            raise StoreError(f"{self.store.path}: audit log: {one_line(exc)}") from exc

    def _clip(self, text: str | None) -> str | None:
        if text is None or len(text) <= self.output_limit:
            return text
        return text[: self.output_limit] + f"\n… ({len(text) - self.output_limit} more chars)"

    def _context(self, fix_id: int) -> dict[str, Any]:
        """The ids a log line about ``fix_id`` carries: action, target, decision and rule."""
        ids = self._ids.get(fix_id)
        if ids is None:
            rows = self._exec(
                """SELECT f.action, f.target, f.decision_id, d.rule FROM fixes f
                   LEFT JOIN decisions d USING (decision_id) WHERE f.fix_id = ?""",
                [fix_id],
            )
            keys = ("action", "target", "decision_id", "rule")
            ids = dict(zip(keys, rows[0], strict=True)) if rows else {}
            if len(self._ids) >= _IDS_KEPT:
                self._ids.clear()  # rarely reached: fixes are few; a lookup is cheap
            self._ids[fix_id] = ids
        return {"fix_id": fix_id, **{k: v for k, v in ids.items() if v is not None}}

    # -- writing -----------------------------------------------------------------------

    def create(
        self,
        action: str,
        target: str,
        group: str | None,
        params: Mapping[str, Any],
        requested_by: str,
        inputs: Mapping[str, Any],
        decision_id: str | None = None,
    ) -> int:
        rows = self._exec(
            """INSERT INTO fixes VALUES (nextval('fix_id_seq'), ?, ?, ?, ?, ?, ?, ?, ?)
               RETURNING fix_id""",
            [
                action,
                target,
                group,
                _dumps(dict(params)),
                decision_id,
                requested_by,
                self.clock(),
                _dumps(dict(inputs)),
            ],
        )
        return int(rows[0][0])

    def append(
        self,
        fix_id: int,
        state: str,
        step: str,
        *,
        gate: str | None = None,
        reason: str | None = None,
        plan: list[dict[str, Any]] | None = None,
        facts: Mapping[str, Any] | None = None,
        output: str | None = None,
        error: str | None = None,
        undo: Mapping[str, Any] | None = None,
        duration_ms: float | None = None,
        actor: str | None = None,
    ) -> None:
        """Append one transition; committed when this returns."""
        if state not in STATES:
            raise ValueError(f"unknown fix state {state!r}")
        self._exec(
            """INSERT INTO fix_events
               SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
               FROM fix_events WHERE fix_id = ?""",
            [
                fix_id,
                self.clock(),
                state,
                step,
                gate,
                self._clip(reason),
                _dumps(plan),
                _dumps(dict(facts) if facts is not None else None),
                self._clip(output),
                self._clip(error),
                _dumps(dict(undo) if undo is not None else None),
                duration_ms,
                actor,
                fix_id,
            ],
        )
        if not log.isEnabledFor(logging.INFO):
            return
        context = {**self._context(fix_id), "state": state, "step": step}
        if gate is not None:
            context["gate"] = gate
        why = error or reason
        if why:
            context["reason"] = why if len(why) <= 500 else why[:500] + "…"
        if actor is not None:
            context["actor"] = actor
        log.info(f"fix {state}", extra=context)

    def record_approval(
        self, fix_id: int, verdict: str, actor: str, expires_at: datetime
    ) -> ApprovalRecord:
        now = self.clock()
        self._exec(
            "INSERT INTO approvals VALUES (?, ?, ?, ?, ?)",
            [fix_id, now, verdict, actor, expires_at],
        )
        if log.isEnabledFor(logging.INFO):
            log.info(f"fix {verdict}", extra={**self._context(fix_id), "actor": actor})
        return ApprovalRecord(verdict, actor, now)  # type: ignore[arg-type]

    def escalate(
        self, fix_id: int | None, action: str, target: str, gate: str | None, reason: str
    ) -> None:
        self._exec(
            "INSERT INTO escalations VALUES (?, ?, ?, ?, ?, ?)",
            [fix_id, self.clock(), action, target, gate, self._clip(reason)],
        )
        if not log.isEnabledFor(logging.INFO):
            return
        context = self._context(fix_id) if fix_id is not None else {}
        context.update(action=action, target=target, reason=reason[:500])
        if gate is not None:
            context["gate"] = gate
        log.info("escalation", extra=context)

    def label(
        self, fix_id: int, false_fix: bool, actor: str, comment: str | None = None
    ) -> FixRecord:
        """Record an operator's verdict on a fix: false (the problem was not real) or correct.

        Only fixes that were applied or planned (dry run, shadow) can be labelled; the
        latest label of a fix is the one the false-fix KPI counts.
        """
        record = self.get(fix_id)
        if record is None:
            raise InputError(f"no fix with id {fix_id}")
        if not any(e["state"] in {"running", "planned"} for e in record.events):
            raise InputError(
                f"fix {fix_id} is {record.state} and was never applied or planned; "
                "only applied or planned fixes can be labelled"
            )
        self._exec(
            "INSERT INTO fix_labels VALUES (?, ?, ?, ?, ?)",
            [fix_id, self.clock(), false_fix, actor, comment],
        )
        return record

    # -- reading -----------------------------------------------------------------------

    def approvals(self, fix_id: int) -> list[ApprovalRecord]:
        rows = self._exec(
            "SELECT verdict, actor, ts FROM approvals WHERE fix_id = ? ORDER BY ts", [fix_id]
        )
        return [ApprovalRecord(v, a, ts) for v, a, ts in rows]

    def escalations(self, fix_id: int | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE fix_id = ?", [fix_id]) if fix_id is not None else ("", [])
        rows = self._exec(
            f"SELECT fix_id, ts, action, target, gate, reason FROM escalations {where} ORDER BY ts",
            params,
        )
        keys = ("fix_id", "ts", "action", "target", "gate", "reason")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def labels(self, fix_id: int) -> list[dict[str, Any]]:
        """The operator labels of a fix, oldest first (the last one counts)."""
        rows = self._exec(
            "SELECT ts, false_fix, actor, comment FROM fix_labels WHERE fix_id = ? "
            "ORDER BY ts, rowid",
            [fix_id],
        )
        keys = ("ts", "false_fix", "actor", "comment")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def history(self, since: datetime) -> list[PastFix]:
        """Fixes requested since ``since``, plus any still running (they hold locks)."""
        rows = self._exec(
            f"""WITH cur AS (
                   SELECT fix_id, arg_max(state, seq) AS state,
                          min(ts) FILTER (WHERE state = 'running') AS started_at,
                          max(ts) FILTER (WHERE state IN {_FINISHED}) AS finished_at
                   FROM fix_events GROUP BY fix_id)
               SELECT f.fix_id, f.action, f.target, f.target_group, cur.state,
                      f.requested_at, cur.started_at, cur.finished_at,
                      json_extract_string(f.inputs, '$.cause'),
                      json_extract_string(f.inputs, '$.rule')
               FROM fixes f JOIN cur USING (fix_id)
               WHERE f.requested_at >= ? OR cur.state = 'running'
               ORDER BY f.fix_id""",
            [since],
        )
        return [
            PastFix(
                int(fid),
                a,
                t,
                g,
                s,
                req,
                start,
                end if start is not None else None,
                cause_of({"cause": cause, "rule": rule}),
            )
            for fid, a, t, g, s, req, start, end, cause, rule in rows
        ]

    def get(self, fix_id: int) -> FixRecord | None:
        rows = self._exec(
            """SELECT fix_id, action, target, target_group, params, requested_by,
                      requested_at, inputs FROM fixes WHERE fix_id = ?""",
            [fix_id],
        )
        if not rows:
            return None
        fid, action, target, group, params, by, at, inputs = rows[0]
        record = FixRecord(int(fid), action, target, group, _loads(params), by, at, _loads(inputs))
        events = self._exec(
            """SELECT seq, ts, state, step, gate, reason, plan, facts, output, error, undo,
                      duration_ms, actor FROM fix_events WHERE fix_id = ? ORDER BY seq""",
            [fix_id],
        )
        for (
            seq,
            ts,
            state,
            step,
            gate,
            reason,
            plan,
            facts,
            output,
            error,
            undo,
            ms,
            actor,
        ) in events:
            record.state, record.updated_at, record.gate = state, ts, gate
            record.reason = reason if reason is not None else record.reason
            record.plan = _loads(plan) if plan is not None else record.plan
            record.facts = _loads(facts) if facts is not None else record.facts
            record.output = output if output is not None else record.output
            record.error = error if error is not None or state == "running" else record.error
            record.undo = _loads(undo) if undo is not None else record.undo
            if state == "running" and actor:
                record.approved_by = actor
            record.events.append(
                {
                    "seq": seq,
                    "ts": ts.isoformat(),
                    "state": state,
                    "step": step,
                    "gate": gate,
                    "reason": reason,
                    "output": output,
                    "error": error,
                    "duration_ms": ms,
                    "actor": actor,
                }
            )
        return record

    def list(
        self, limit: int = 50, state: str | None = None, since: datetime | None = None
    ) -> list[FixRecord]:
        """The newest fixes first (optionally one state, or since a moment)."""
        rows = self._exec(
            """WITH cur AS (SELECT fix_id, arg_max(state, seq) AS state FROM fix_events
                            GROUP BY fix_id)
               SELECT f.fix_id FROM fixes f LEFT JOIN cur USING (fix_id)
               WHERE (? IS NULL OR cur.state = ?) AND (? IS NULL OR f.requested_at >= ?)
               ORDER BY f.fix_id DESC LIMIT ?""",
            [state, state, since, since, limit],
        )
        return [r for (fid,) in rows if (r := self.get(int(fid))) is not None]

    def count_events(self) -> int:
        return int(self._exec("SELECT count(*) FROM fix_events")[0][0])


__all__ = ["STATES", "AuditLog", "FixRecord"]
