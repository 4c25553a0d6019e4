"""Recording and executing: maintenance tasks in the store, run through the executor."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from autofix.actions.base import Runner, run_argv
from autofix.audit import FixRecord
from autofix.config import Settings
from autofix.errors import AutofixError, StoreError
from autofix.executor import Executor, utcnow
from autofix.gates import parse_windows
from autofix.maintenance.needs import ActionProbe, Need, _canonical, _derive, _priority
from autofix.maintenance.planning import PlannedTask, plan
from autofix.pipeline import Pipeline
from autofix.store import MetricStore

log = logging.getLogger("autofix.maintenance")  # one logger for the whole package, as before

TASK_STATES = ("planned", "started", "executed", "failed", "cancelled", "missed")
OPEN_STATES = frozenset({"planned", "started", "failed"})

# A failed fix refused by these gates, or only planned (shadow, dry run), is not retried:
# a human said no, the configuration forbids it, or retrying cannot change the answer.
_FINAL_GATES = frozenset({"approval", "allowlist", "params", "mode", "breaker"})
_DONE_FIX_STATES = frozenset({"succeeded", "noop"})


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


@dataclass(frozen=True)
class _Task:
    """A maintenance task as the tables show it now."""

    task_id: int
    created_at: datetime
    need: Need
    window_start: datetime
    window_end: datetime
    state: str
    state_reason: str | None
    fix_id: int | None
    updated_at: datetime

    def booked(self) -> PlannedTask:
        return PlannedTask(self.need, self.window_start, self.window_end, "window", "")

    def as_dict(self) -> dict[str, Any]:
        return _as_row(self.need, self.state, self.state_reason, self)


def _as_row(
    need: Need, state: str, state_reason: str | None, task: _Task | None = None
) -> dict[str, Any]:
    """A task (or an unscheduled need, without ``task``) as the CLI and the API show it."""
    return {
        "task_id": None if task is None else task.task_id,
        "need": need.kind,
        "target": need.target,
        "action": need.action,
        "params": dict(need.params),
        "urgency": need.urgency,
        "state": state,
        "due_by": _iso(need.due_by),
        "window_start": None if task is None else _iso(task.window_start),
        "window_end": None if task is None else _iso(task.window_end),
        "downtime": need.downtime,
        "estimated_s": need.estimated_s,
        "reason": need.reason,
        "state_reason": state_reason,
        "fix_id": None if task is None else task.fix_id,
        "created_at": None if task is None else _iso(task.created_at),
        "updated_at": None if task is None else _iso(task.updated_at),
    }


_TASKS_SQL = """
    WITH ev AS (
        SELECT task_id, ts, state, reason,
               row_number() OVER (PARTITION BY task_id ORDER BY ts DESC, rowid DESC) AS rn,
               last_value(fix_id IGNORE NULLS) OVER (
                   PARTITION BY task_id ORDER BY ts, rowid
                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS fix_id
        FROM maintenance_events)
    SELECT t.task_id, t.created_at, t.window_start, t.window_end, ev.state, ev.reason,
           ev.fix_id, ev.ts, t.need, t.target, t.action, t.params, t.urgency, t.due_by,
           t.reason, t.estimated_s, t.downtime
    FROM maintenance_tasks t JOIN ev ON ev.task_id = t.task_id AND ev.rn = 1
    WHERE {where}
    ORDER BY t.task_id
"""


@dataclass(frozen=True)
class PlanReport:
    """What one planning pass did (``record_plan``)."""

    planned: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    unscheduled: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """Every task and need it touched: new, kept, unscheduled, cancelled, missed."""
        return [*self.planned, *self.kept, *self.unscheduled, *self.cancelled, *self.missed]


class Maintenance:
    """Derive, plan, record and execute preventive maintenance for one pipeline.

    Windows are the pipeline's ``maintenance.windows``, else AUTOFIX_FIX_MAINTENANCE_WINDOWS;
    tasks are planned up to AUTOFIX_MAINTENANCE_HORIZON ahead. Fixes run through
    ``executor`` (built from the same store, pipeline and settings when not given).
    """

    def __init__(
        self,
        store: MetricStore,
        pipeline: Pipeline,
        settings: Settings,
        executor: Executor | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        runner: Runner = run_argv,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.settings = settings
        self.clock = clock
        self.runner = runner
        self.executor = executor or Executor(store, pipeline, settings, clock=clock, runner=runner)
        spec = pipeline.maintenance.windows
        self.windows = parse_windows(spec if spec is not None else settings.fix_maintenance_windows)

    # -- public verbs ------------------------------------------------------------------

    def derive(self, now: datetime | None = None) -> list[Need]:
        """The current needs (nothing is recorded)."""
        return self._derive(now or self.clock())[0]

    def plan_and_record(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Derive, plan and record; the tasks planned by this pass (see ``record_plan``)."""
        return self.record_plan(now).planned

    def record_plan(self, now: datetime | None = None) -> PlanReport:
        """Derive needs, plan them and record new tasks with a ``planned`` event.

        Open tasks whose window ended become ``missed``; open tasks whose need went away
        before their window opened become ``cancelled`` (not when the source of that need
        could not be read this time), and so do those whose window now opens after the
        need's deadline (it grew more pressing: it is planned again). Otherwise a need
        with an identical open task is kept as is.
        """
        now = now or self.clock()
        report = PlanReport(missed=self._sweep(now))
        needs, unknown = self._derive(now)
        current = {need.key: need for need in needs}
        booked = []
        for task in self._load(open_only=True):
            need, fresh = task.need, current.get(task.need.key)
            why = None
            if fresh is None and not {(need.kind, need.target), (need.kind, "*")} & unknown:
                why = "the need went away before its window"
            elif fresh is not None and task.window_start >= fresh.due_by:
                # Grown more pressing (a disk now fills sooner): the booked slot is too late.
                why = f"superseded: now {fresh.urgency}, due by {_iso(fresh.due_by)}"
            if why is not None and task.state != "started" and now < task.window_start:
                self._event(task.task_id, "cancelled", None, why)
                report.cancelled.append(self._get(task.task_id).as_dict())
                continue
            booked.append(task.booked())
            if need.key in current:
                report.kept.append(task.as_dict())
        horizon = self.settings.maintenance_horizon
        for placed in plan(needs, self.windows, now, horizon, booked=booked):
            if placed.window_start is None or placed.window_end is None:
                if placed.need.action is not None:
                    log.warning(
                        "maintenance: %s on %s unscheduled: %s",
                        placed.need.kind,
                        placed.need.target,
                        placed.reason,
                    )
                report.unscheduled.append(_as_row(placed.need, "unscheduled", placed.reason))
                continue
            task_id = self._insert(placed)
            report.planned.append(self._get(task_id).as_dict())
        return report

    def execute_due(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Run the tasks whose window is open now; mark the ones whose window ended missed.

        Each run goes through ``executor.run`` (gates, plan, apply, verify, rollback) as
        ``requested_by="maintenance"`` with ``decision_id="maintenance:<task_id>"``. A
        fix waiting for approval keeps the task ``started``; its outcome is picked up by
        a later call. Returns every task whose state changed.
        """
        now = now or self.clock()
        changed = self._sweep(now)
        tasks = sorted(self._load(open_only=True), key=lambda t: _priority(t.need))
        for task in tasks:
            if not task.window_start <= now < task.window_end:
                continue
            if task.state == "started" and task.fix_id is not None:
                continue  # its fix waits for approval
            if task.state == "failed" and not self._retryable(task):
                continue
            changed.append(self._execute(task))
        return changed

    def tasks(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every task with its current state (optionally only one state), oldest first."""
        return [task.as_dict() for task in self._load(state=state)]

    # -- internals ---------------------------------------------------------------------

    def _derive(self, now: datetime) -> tuple[list[Need], set[tuple[str, str]]]:
        probe = ActionProbe(
            runner=self.runner,
            clock=lambda: now,
            quarantine_dir=self.settings.quarantine_dir,
            timeout=self.settings.fix_timeout.total_seconds(),
        )
        return _derive(
            self.pipeline,
            self.store,
            now,
            self.runner,
            probe,
            self.settings.hostname,
            self.settings.maintenance_horizon,
            self.settings.maintenance_upgradable_cache,
        )

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self.store._write_lock:
                return self.store._run(sql, list(params))
        except duckdb.Error as exc:
            raise StoreError(f"{self.store.path}: maintenance: {exc}") from exc

    def _insert(self, placed: PlannedTask) -> int:
        need = placed.need
        try:
            with self.store.transaction():
                rows = self.store._run(
                    """INSERT INTO maintenance_tasks (task_id, created_at, need, target, action,
                           params, urgency, reason, estimated_s, downtime, due_by,
                           window_start, window_end)
                       VALUES (nextval('maintenance_id_seq'), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       RETURNING task_id""",
                    [
                        self.clock(),
                        need.kind,
                        need.target,
                        need.action,
                        _canonical(need.params),
                        need.urgency,
                        need.reason,
                        need.estimated_s,
                        need.downtime,
                        need.due_by,
                        placed.window_start,
                        placed.window_end,
                    ],
                )
                task_id = int(rows[0][0])
                self.store._run(
                    "INSERT INTO maintenance_events VALUES (?, ?, 'planned', NULL, ?)",
                    [task_id, self.clock(), placed.reason],
                )
        except duckdb.Error as exc:
            raise StoreError(f"{self.store.path}: maintenance: {exc}") from exc
        return task_id

    def _event(
        self,
        task_id: int,
        state: str,
        fix_id: int | None,
        reason: str | None,
        ts: datetime | None = None,
    ) -> None:
        if state not in TASK_STATES:
            raise ValueError(f"unknown maintenance state {state!r}")
        self._exec(
            "INSERT INTO maintenance_events VALUES (?, ?, ?, ?, ?)",
            [task_id, ts or self.clock(), state, fix_id, reason],
        )

    def _load(self, *, open_only: bool = False, state: str | None = None) -> list[_Task]:
        if open_only:
            where, params = "ev.state IN ('planned', 'started', 'failed')", []
        elif state is not None:
            where, params = "ev.state = ?", [state]
        else:
            where, params = "true", []
        rows = self._exec(_TASKS_SQL.format(where=where), params)
        return [_task(row) for row in rows]

    def _get(self, task_id: int) -> _Task:
        rows = self._exec(_TASKS_SQL.format(where="t.task_id = ?"), [task_id])
        return _task(rows[0])

    def _sweep(self, now: datetime) -> list[dict[str, Any]]:
        """Pick up fixes that waited for approval, then mark ended windows missed."""
        changed = []
        for task in self._load(open_only=True):
            if task.state == "started" and task.fix_id is not None:
                record = self.executor.get(task.fix_id)
                if record.state != "pending_approval":
                    changed.append(self._resolve(task, record, record.updated_at))
                    task = self._get(task.task_id)
            if task.state in OPEN_STATES and now >= task.window_end:
                why = f"window ended {_iso(task.window_end)} without execution"
                if task.state == "failed" and task.state_reason:
                    why += f"; last failure: {task.state_reason}"
                self._event(task.task_id, "missed", task.fix_id, why)
                changed.append(self._get(task.task_id).as_dict())
        return changed

    def _retryable(self, task: _Task) -> bool:
        if task.fix_id is None:
            return True
        record = self.executor.get(task.fix_id)
        return record.state != "planned" and record.gate not in _FINAL_GATES

    def _execute(self, task: _Task) -> dict[str, Any]:
        need = task.need
        assert need.action is not None  # unactionable needs are never recorded
        self._event(task.task_id, "started", None, f"{need.action} on {need.target}")
        try:
            record = self.executor.run(
                need.action,
                need.target,
                dict(need.params),
                requested_by="maintenance",
                decision_id=f"maintenance:{task.task_id}",
                inputs={
                    "maintenance_task": task.task_id,
                    "need": need.kind,
                    "urgency": need.urgency,
                    "reason": need.reason,
                    "due_by": _iso(need.due_by),
                    "window": [_iso(task.window_start), _iso(task.window_end)],
                },
            )
        except AutofixError as exc:
            self._event(task.task_id, "failed", None, str(exc))
            return self._get(task.task_id).as_dict()
        return self._resolve(task, record)

    def _resolve(
        self, task: _Task, record: FixRecord, ts: datetime | None = None
    ) -> dict[str, Any]:
        if record.state in _DONE_FIX_STATES:
            why = record.reason or record.output or record.state
            if record.state == "noop":
                why = f"nothing left to do: {why}"
            self._event(task.task_id, "executed", record.id, why, ts)
        elif record.state == "pending_approval":
            self._event(task.task_id, "started", record.id, record.reason or "waiting for approval")
        else:
            why = record.error or record.reason or f"fix {record.state}"
            self._event(task.task_id, "failed", record.id, f"fix {record.state}: {why}", ts)
        return self._get(task.task_id).as_dict()


def _task(row: Sequence[Any]) -> _Task:
    """A row of ``_TASKS_SQL``: the task's own columns, then the need's in field order."""
    task_id, created_at, start, end, state, why, fix_id, updated_at = row[:8]
    kind, target, action, params, *rest = row[8:]
    need = Need(kind, target, action, json.loads(params), *rest)
    fix = None if fix_id is None else int(fix_id)
    return _Task(int(task_id), created_at, need, start, end, state, why, fix, updated_at)
