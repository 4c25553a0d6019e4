"""The five KPIs of a demo run, measured from its ground truth (not from autofix's audit log).

Inputs: the recorder's ``EventRecord`` (which faults happened when, when they cleared,
whether the operator stepped in), the remediator's ``FixRecord`` and the prober's
``Probe``. A fix is *true* when it was requested for one of the fault's targets while
the fault was there (from its start until it cleared) and before the on-call operator
stepped in, or when the condition it answered on that target was first seen then (the
fault's aftermath: Redis' memory left fragmented by a cache bloat); every other applied
fix is *false* — one during a benign event, on a healthy target, on the symptom instead
of the cause, or one requested after the fault had gone (by itself, by the operator, or
by an earlier fix). Each false fix is put down to an event: the one whose window (start
to ``GRACE`` s after its end) it falls in and whose targets it hit; else the fault whose
window it falls in (a symptom fixed during an outage); else the latest event before it
on that target.

- **auto-fix success rate**: faults the remediator fixed / faults. A fault is fixed by
  the remediator when it cleared before the operator stepped in, after a true fix that
  succeeded (its verify passed);
- **MTTR reduction**: 1 − mean time to recover / the manual response time (the on-call
  human's, AUTOFIX_KPI_MANUAL_MTTR on the demo's clock); time to recover runs from the
  fault's start until it cleared, whoever cleared it;
- **preventive execution rate**: predictable faults (disk fill, memory leak) fixed by
  the remediator before the resource ran out / predictable faults;
- **false-fix rate**: false fixes / applied fixes;
- **recovery time p95**: the 95th percentile of the times to recover.

Times are real seconds, as in ``autofix kpi`` (the demo's clock compresses autofix's
intervals and gates, and the human response time, not the time a restart takes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autofix.demo.truth import EventRecord, FixedBy, FixRecord, Probe

#: Seconds after an event in which a false fix is still put down to it (decisions are
#: made on samples a collection cycle old).
GRACE = 3.0


@dataclass(frozen=True)
class EventOutcome:
    """What one event came to."""

    name: str
    kind: str
    title: str
    targets: list[str]
    predictable: bool
    started_at: float | None
    ended_at: float | None
    operator_at: float | None  # the on-call human stepped in
    exhausted: bool  # the resource ran out
    fixed_by: FixedBy | None  # faults only
    recovery_s: float | None  # faults only: start → cleared
    prevented: bool | None  # predictable faults only
    true_fixes: list[int]
    false_fixes: list[int]  # applied during this event, not on a target of its fault
    probes: int
    failed_probes: int  # what users saw go wrong during the event

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "title": self.title,
            "targets": self.targets,
            "predictable": self.predictable,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "operator_at": self.operator_at,
            "exhausted": self.exhausted,
            "fixed_by": self.fixed_by,
            "recovery_s": self.recovery_s,
            "prevented": self.prevented,
            "true_fixes": self.true_fixes,
            "false_fixes": self.false_fixes,
            "probes": self.probes,
            "failed_probes": self.failed_probes,
        }


@dataclass(frozen=True)
class GroundTruth:
    """The five KPIs (None: no data) and how each event went."""

    auto_fix_success_rate: float | None
    mttr_seconds: float | None
    mttr_reduction: float | None
    preventive_execution_rate: float | None
    false_fix_rate: float | None
    recovery_p95_seconds: float | None
    applied_fixes: int
    false_fixes: list[int]
    events: list[EventOutcome] = field(default_factory=list)

    def kpis(self) -> dict[str, float | None]:
        """The five KPIs under ``autofix kpi --json``'s names."""
        return {
            "auto_fix_success_rate": self.auto_fix_success_rate,
            "mttr_reduction": self.mttr_reduction,
            "preventive_execution_rate": self.preventive_execution_rate,
            "false_fix_rate": self.false_fix_rate,
            "recovery_p95_seconds": self.recovery_p95_seconds,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.kpis(),
            "mttr_seconds": self.mttr_seconds,
            "applied_fixes": self.applied_fixes,
            "false_fixes": self.false_fixes,
            "events": [e.as_dict() for e in self.events],
        }


def _true_for(fix: FixRecord, record: EventRecord) -> bool:
    if record.event.kind != "fault" or record.started_at is None or not fix.applied:
        return False
    end = record.ended_at or math.inf
    if record.operator_at is not None:
        end = min(end, record.operator_at)  # the human is on it: another fix is not needed
    if fix.target not in record.event.targets:
        return False
    if record.started_at <= fix.requested_at <= end:
        return True
    # The fault's aftermath: a condition it left behind on its target, first seen while it
    # was there (Redis' memory left fragmented by a cache bloat, purged once that held).
    return fix.detected_at is not None and record.started_at <= fix.detected_at <= end


def _blame(false: list[FixRecord], records: Sequence[EventRecord]) -> dict[FixRecord, int]:
    """Which event (index) each false fix is put down to (see the module docstring)."""

    def window(record: EventRecord, fix: FixRecord) -> bool:
        if record.started_at is None:
            return False
        end = (record.ended_at if record.ended_at is not None else math.inf) + GRACE
        return record.started_at <= fix.requested_at <= end

    out: dict[FixRecord, int] = {}
    for fix in false:
        ranked = [
            [i for i, r in enumerate(records) if window(r, fix) and fix.target in r.event.targets],
            [i for i, r in enumerate(records) if window(r, fix) and r.event.kind == "fault"],
            [
                i
                for i, r in enumerate(records)
                if r.started_at is not None
                and r.started_at <= fix.requested_at
                and fix.target in r.event.targets
            ],
        ]
        found = next((candidates for candidates in ranked if candidates), [])
        if found:
            out[fix] = found[-1]
    return out


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def ground_truth(
    records: Sequence[EventRecord],
    fixes: Sequence[FixRecord],
    probes: Sequence[Probe],
    manual_response: float,
) -> GroundTruth:
    """The KPIs of one run; see the module docstring for the definitions."""
    applied = [f for f in fixes if f.applied]
    true_ids = {f.id for f in applied for r in records if _true_for(f, r)}
    false_ids = sorted(f.id for f in applied if f.id not in true_ids)
    blamed = _blame([f for f in applied if f.id not in true_ids], records)
    outcomes = []
    recoveries: list[float] = []
    faults = fixed = predictable = prevented = 0
    for index, record in enumerate(records):
        start, end = record.started_at, record.ended_at
        mine = [f for f in applied if _true_for(f, record)]
        window_end = (end if end is not None else math.inf) + GRACE
        seen = [p for p in probes if start is not None and start <= p.t <= window_end]
        fixed_by: FixedBy | None = None
        recovery = None
        was_prevented = None
        if record.event.kind == "fault" and start is not None:
            faults += 1
            if end is None:
                fixed_by = "nobody"
            elif record.operator_at is not None and record.operator_at <= end:
                fixed_by = "operator"
            elif any(f.state == "succeeded" for f in mine):
                fixed_by = "autofix"
            else:
                fixed_by = "itself"
            fixed += fixed_by == "autofix"
            if end is not None:
                recovery = end - start
                recoveries.append(recovery)
            if record.event.predictable:
                predictable += 1
                was_prevented = fixed_by == "autofix" and not record.exhausted
                prevented += was_prevented
        outcomes.append(
            EventOutcome(
                record.name,
                record.event.kind,
                record.event.title,
                list(record.event.targets),
                record.event.predictable,
                start,
                end,
                record.operator_at,
                record.exhausted,
                fixed_by,
                recovery,
                was_prevented,
                sorted(f.id for f in mine),
                sorted(f.id for f, i in blamed.items() if i == index),
                len(seen),
                sum(not p.ok for p in seen),
            )
        )
    mttr = float(np.mean(recoveries)) if recoveries else None
    return GroundTruth(
        auto_fix_success_rate=_ratio(fixed, faults),
        mttr_seconds=mttr,
        mttr_reduction=None if mttr is None else 1.0 - mttr / manual_response,
        preventive_execution_rate=_ratio(prevented, predictable),
        false_fix_rate=_ratio(len(false_ids), len(applied)),
        recovery_p95_seconds=float(np.percentile(recoveries, 95)) if recoveries else None,
        applied_fixes=len(applied),
        false_fixes=false_ids,
        events=outcomes,
    )


__all__ = ["GRACE", "EventOutcome", "GroundTruth", "ground_truth"]
