"""Ground-truth KPIs of a demo run: which fixes were true, who fixed what, the five numbers."""

from __future__ import annotations

import pytest

from autofix.demo.faults import Event, LogRotation
from autofix.demo.kpis import ground_truth
from autofix.demo.truth import EventRecord, FixRecord, Probe

T = 1_800_000_000.0


def _record(name: str, kind: str, start: float, end: float, targets: tuple[str, ...],
            *, predictable: bool = False, operator: float | None = None,
            exhausted: bool = False) -> EventRecord:  # fmt: skip
    event = Event(name, kind, 0.0, name, targets, predictable, injector=LogRotation())  # type: ignore[arg-type]
    phase = "cleared" if kind == "fault" else "over"
    return EventRecord(event, phase, T + start, T + end, None if operator is None else T + operator,
                       exhausted)  # fmt: skip


def _fix(fix_id: int, target: str, at: float, state: str = "succeeded") -> FixRecord:
    return FixRecord(fix_id, "service.restart", target, state, T + at, T + at + 5, "rule:x")


def test_attribution_and_the_five_kpis() -> None:
    records = [
        _record("disk-fill", "fault", 0, 10, ("logs",), predictable=True),
        _record("leak", "fault", 20, 35, ("web-1",), predictable=True, exhausted=True),
        _record("hang", "fault", 40, 50, ("web-2",)),
        _record("db", "fault", 60, 95, ("news-db",), operator=90),
        _record("restart", "benign", 100, 104, ("web-1",)),
    ]
    fixes = [
        _fix(1, "logs", 5),  # true: prevented the disk fill
        _fix(2, "web-2", 45),  # true: the hang
        _fix(3, "web-2", 52),  # after the hang cleared: unneeded, false
        _fix(4, "web-1", 70, "failed"),  # a symptom during the db outage: false
        _fix(5, "news-db", 92),  # after the operator stepped in: false
        _fix(6, "web-1", 102),  # the planned restart restarted again: false
        _fix(7, "web-1", 103, "refused"),  # never applied: not counted
    ]
    probes = [Probe(T + 61, "w1", 503, 3.0), Probe(T + 62, "w1", 200, 3.0)]
    truth = ground_truth(records, fixes, probes, manual_response=30.0)
    by = {e.name: e for e in truth.events}
    assert [by[n].fixed_by for n in ("disk-fill", "leak", "hang", "db")] == [
        "autofix", "itself", "autofix", "operator",
    ]  # fmt: skip
    assert by["disk-fill"].prevented is True
    assert by["leak"].prevented is False
    assert by["hang"].true_fixes == [2]
    assert by["hang"].false_fixes == [3]
    assert by["db"].false_fixes == [4, 5]
    assert by["restart"].false_fixes == [6]
    assert by["db"].failed_probes == 1
    assert by["db"].probes == 2
    assert truth.applied_fixes == 6
    assert truth.false_fixes == [3, 4, 5, 6]
    assert truth.auto_fix_success_rate == pytest.approx(2 / 4)
    assert truth.preventive_execution_rate == pytest.approx(1 / 2)
    assert truth.false_fix_rate == pytest.approx(4 / 6)
    recoveries = [10, 15, 10, 35]
    assert truth.mttr_seconds == pytest.approx(sum(recoveries) / 4)
    assert truth.mttr_reduction == pytest.approx(1 - 17.5 / 30)
    assert 15 < truth.recovery_p95_seconds < 35  # type: ignore[operator]


def test_no_faults_and_no_fixes_is_no_data() -> None:
    truth = ground_truth([], [], [], manual_response=30.0)
    assert truth.kpis() == dict.fromkeys(
        ("auto_fix_success_rate", "mttr_reduction", "preventive_execution_rate",
         "false_fix_rate", "recovery_p95_seconds"),
    )  # fmt: skip


def test_a_fix_of_a_faults_aftermath_is_true_a_late_one_of_a_new_condition_is_not() -> None:
    records = [_record("cache-bloat", "fault", 0, 5, ("cache",))]
    purge = FixRecord(
        1, "redis.memory_purge", "cache", "succeeded", T + 9, T + 10, "rule:rss", detected_at=T + 2
    )  # fmt: skip  (fragmentation seen during the bloat)
    again = FixRecord(
        2, "redis.delete_keys", "cache", "failed", T + 20, T + 21, "rule:fill", detected_at=T + 19
    )  # fmt: skip  (a forecast made after it was gone)
    truth = ground_truth(records, [purge, again], [], 30.0)
    assert truth.false_fixes == [2]
    assert truth.events[0].true_fixes == [1]
