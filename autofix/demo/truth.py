"""Ground truth: what really happened during a demo run, independent of autofix's view.

``Recorder.run`` plays a ``Schedule`` on a ``Stack``: each event starts after the
previous one is over (a fault: cleared; a benign event: finished) plus the schedule's
gap. A fault still there the human response time after its impact — at once for most
faults, when the resource runs out for a predictable one — is fixed by the on-call
operator (``Injector.operator_fix``), as it would be without autofix; the operator waits
for a fix the remediator is applying right now (``busy``). Every event's times land
in an ``EventRecord``; ``read_probes`` reads what the prober saw; ``fixes_from_store``
reads autofix's audit log into ``FixRecord`` — and a different remediator (a Monit-like
baseline) records its own actions as ``FixRecord`` the same way. ``autofix.demo.kpis``
turns the three into the five KPIs.

All times are Unix seconds (``time.time()``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from autofix.demo.faults import Event, Schedule
from autofix.demo.stack import Stack

log = logging.getLogger(__name__)

#: How often the recorder checks whether a fault has cleared.
POLL = 0.25
#: How long the operator's fix may take to show before the recorder moves on.
OPERATOR_GRACE = 20.0
#: How long the operator waits, at most, for a fix the remediator is applying right now.
OPERATOR_PATIENCE = 20.0
#: A predictable fault that never runs out is noticed by a human after this long anyway.
MAX_UNNOTICED = 60.0

Phase = Literal["pending", "running", "cleared", "over", "stopped"]
FixedBy = Literal["autofix", "operator", "itself", "nobody"]


@dataclass
class EventRecord:
    """One event as it happened."""

    event: Event
    phase: Phase = "pending"
    started_at: float | None = None
    ended_at: float | None = None  # a fault: cleared; a benign event: over
    operator_at: float | None = None  # the on-call human stepped in
    exhausted: bool = False  # the resource ran out (a predictable fault not prevented)

    @property
    def name(self) -> str:
        return self.event.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.event.kind,
            "title": self.event.title,
            "targets": list(self.event.targets),
            "predictable": self.event.predictable,
            "phase": self.phase,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "operator_at": self.operator_at,
            "exhausted": self.exhausted,
        }


@dataclass(frozen=True)
class Probe:
    """One prober request: what a user of ``worker`` saw at ``t``."""

    t: float
    worker: str
    status: int  # 0: no answer
    ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class FixRecord:
    """One applied or attempted fix, by autofix or by another remediator."""

    id: int
    action: str
    target: str
    state: str  # autofix's states: succeeded, failed, rolled_back, refused, noop, …
    requested_at: float
    finished_at: float | None
    requested_by: str
    detail: str = ""
    #: autofix's own judgement of the fix (``autofix.outcomes``) and why, the latest one.
    outcome: str | None = None
    outcome_reason: str = ""
    #: When the condition the fix answered was first seen (Unix s), if a decision says.
    detected_at: float | None = None

    #: States in which the fix changed something on the system (it was applied).
    APPLIED = frozenset({"succeeded", "failed", "rolled_back", "interrupted"})

    @property
    def applied(self) -> bool:
        return self.state in self.APPLIED

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "target": self.target,
            "state": self.state,
            "requested_at": self.requested_at,
            "finished_at": self.finished_at,
            "requested_by": self.requested_by,
            "detail": self.detail,
            "outcome": self.outcome,
            "outcome_reason": self.outcome_reason,
            "detected_at": self.detected_at,
        }


def epoch(value: Any) -> float:
    """A store timestamp (naive UTC) as Unix seconds."""
    if isinstance(value, datetime):
        moment = value
    else:
        import pandas as pd

        moment = pd.Timestamp(value).to_pydatetime()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def fixes_from_store(store: Any, since: float = 0.0) -> list[FixRecord]:
    """autofix's fixes requested since ``since`` (Unix s), with their current state."""
    frame = store.query(
        """WITH cur AS (
               SELECT fix_id, arg_max(state, seq) AS state, max(ts) AS last_ts,
                      arg_max(coalesce(error, reason), seq)
                          FILTER (WHERE coalesce(error, reason) IS NOT NULL) AS why
               FROM fix_events GROUP BY fix_id),
           judged AS (
               SELECT fix_id, arg_max(outcome, judged_at) AS outcome,
                      arg_max(reason, judged_at) AS outcome_reason
               FROM fix_outcomes GROUP BY fix_id)
           SELECT f.fix_id, f.action, f.target, f.requested_by, f.requested_at,
                  coalesce(c.state, 'planned') AS state, c.last_ts, c.why,
                  j.outcome, j.outcome_reason, d.detected_at
           FROM fixes f LEFT JOIN cur c USING (fix_id) LEFT JOIN judged j USING (fix_id)
           LEFT JOIN decisions d ON d.decision_id = f.decision_id
           WHERE f.requested_at >= ? ORDER BY f.fix_id""",
        [datetime.fromtimestamp(since, UTC).replace(tzinfo=None)],
    )
    out = []
    for row in frame.to_dict("records"):
        state = str(row["state"])
        done = state not in {"running", "planned", "pending_approval", "approved"}
        out.append(
            FixRecord(
                int(row["fix_id"]),
                str(row["action"]),
                str(row["target"]),
                state,
                epoch(row["requested_at"]),
                epoch(row["last_ts"]) if done and row["last_ts"] is not None else None,
                str(row["requested_by"]),
                _text(row["why"]),
                _text(row["outcome"]) or None,
                _text(row["outcome_reason"]),
                None if _text(row["detected_at"]) == "" else epoch(row["detected_at"]),
            )
        )
    return out


def _text(value: Any) -> str:
    """A nullable store text ('' for NULL or NaN)."""
    return "" if value is None or value != value else str(value)


def _parse(line: str) -> Probe | None:
    try:
        doc = json.loads(line)
        return Probe(float(doc["t"]), str(doc["w"]), int(doc["s"]), float(doc["ms"]), doc.get("e"))
    except (ValueError, KeyError, TypeError):
        return None


def read_probes(path: Path) -> list[Probe]:
    """The prober's JSON lines (a half-written last line is skipped)."""
    return ProbeLog(path).read()


class ProbeLog:
    """The prober's file, read as it grows (each call parses only the new lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.probes: list[Probe] = []
        self._offset = 0
        self._lock = threading.Lock()

    def read(self) -> list[Probe]:
        with self._lock:
            if self.path.exists():
                with open(self.path, "rb") as handle:
                    handle.seek(self._offset)
                    while True:
                        line = handle.readline()
                        if not line.endswith(b"\n"):
                            break  # not written completely yet: read it next time
                        self._offset += len(line)
                        probe = _parse(line.decode("utf-8", errors="replace"))
                        if probe is not None:
                            self.probes.append(probe)
            return list(self.probes)


@dataclass
class Recorder:
    """Plays a schedule on a stack and records what happened."""

    stack: Stack
    schedule: Schedule
    #: ``busy(targets)``: the remediator is applying a fix to one of them right now (the
    #: operator, like a human on call, waits for it rather than fixing over it).
    busy: Callable[[tuple[str, ...]], bool] | None = None
    records: list[EventRecord] = field(init=False)
    started_at: float | None = None
    finished_at: float | None = None
    on_change: Callable[[EventRecord], None] | None = None

    def __post_init__(self) -> None:
        self.records = [EventRecord(event) for event in self.schedule.events]

    def run(self, stop: threading.Event) -> None:
        """Play every event (blocking); on ``stop`` the current one is cleaned up, and the
        rest are left ``pending``. Every injector's ``cleanup`` runs before it returns."""
        self.started_at = time.time()
        try:
            if stop.wait(self.schedule.warmup):
                return
            for record in self.records:
                if stop.wait(self.schedule.gap + record.event.delay):
                    return
                self._play(record, stop)
                if stop.is_set():
                    return
        finally:
            for record in self.records:
                try:
                    record.event.injector.cleanup(self.stack)
                except Exception as exc:  # the stack is going down anyway
                    log.info("cleanup of %s: %s", record.name, exc)
            self.finished_at = time.time()

    def _changed(self, record: EventRecord) -> None:
        if self.on_change is not None:
            self.on_change(record)

    def _play(self, record: EventRecord, stop: threading.Event) -> None:
        event, injector = record.event, record.event.injector
        record.started_at, record.phase = time.time(), "running"
        self._changed(record)
        injector.inject(self.stack, stop)
        if event.kind == "benign":
            stop.wait(max(0.0, record.started_at + event.duration - time.time()))
            record.ended_at, record.phase = time.time(), "over"
            self._changed(record)
            return
        # The on-call human is paged by the impact: at once for most faults; for a
        # predictable one when the resource runs out (until then nobody sees a thing).
        impact = None if event.predictable else record.started_at
        latest = record.started_at + MAX_UNNOTICED
        while not stop.is_set():
            if self._check(record):
                return
            if impact is None and (record.exhausted or time.time() >= latest):
                impact = time.time()
            deadline = math.inf if impact is None else impact + self.schedule.manual_response
            if time.time() >= deadline and record.operator_at is None:
                if self._busy(event) and time.time() < deadline + OPERATOR_PATIENCE:
                    stop.wait(POLL)
                    continue
                record.operator_at = time.time()
                self._changed(record)
                try:
                    injector.operator_fix(self.stack)
                except Exception as exc:
                    log.error("operator fix of %s failed: %s", record.name, exc)
            if record.operator_at is not None and time.time() > record.operator_at + OPERATOR_GRACE:
                log.error("%s did not clear even after the operator's fix", record.name)
                record.phase = "stopped"
                return
            stop.wait(POLL)
        record.phase = "stopped"

    def _busy(self, event: Event) -> bool:
        if self.busy is None:
            return False
        try:
            return self.busy(event.targets)
        except Exception as exc:  # cannot tell: the operator does not wait
            log.info("asking whether %s is being fixed: %s", event.name, exc)
            return False

    def _check(self, record: EventRecord) -> bool:
        injector = record.event.injector
        try:
            cleared = injector.cleared(self.stack)
            record.exhausted = record.exhausted or injector.exhausted(self.stack)
        except Exception as exc:  # a check that cannot tell is not a recovery
            log.debug("checking %s: %s", record.name, exc)
            return False
        if cleared:
            record.ended_at, record.phase = time.time(), "cleared"
            self._changed(record)
        return cleared


__all__ = [
    "EventRecord",
    "FixRecord",
    "FixedBy",
    "Probe",
    "ProbeLog",
    "Recorder",
    "epoch",
    "fixes_from_store",
    "read_probes",
]
