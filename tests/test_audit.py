"""The audit tables: append-only, committed per transition, readable after reopening."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from autofix.audit import AuditLog
from autofix.store import SCHEMA_VERSION, MetricStore

T0 = datetime(2026, 1, 1)


def test_schema_has_the_audit_tables() -> None:
    assert SCHEMA_VERSION >= 2
    with MetricStore(":memory:") as store:
        tables = set(store.query("SELECT table_name FROM information_schema.tables")["table_name"])
    assert {"fixes", "fix_events", "approvals", "escalations"} <= tables


def test_transitions_survive_reopening_and_are_never_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    with MetricStore(path) as store:
        audit = AuditLog(store, lambda: T0, output_limit=100)
        fix = audit.create("files.clean_temp", "tmp", None, {"x": 1}, "ann", {"why": "disk"})
        audit.append(fix, "running", "apply", plan=[{"op": "a"}], facts={"n": 0}, actor="ann")
        audit.append(fix, "succeeded", "verify", output="y" * 500, undo={"q": "/q"})
    with MetricStore(path) as store:
        audit = AuditLog(store, lambda: T0 + timedelta(minutes=1))
        record = audit.get(fix)
        assert record is not None
        assert (record.state, record.approved_by, record.undo) == ("succeeded", "ann", {"q": "/q"})
        assert record.output is not None
        assert record.output.startswith("y" * 100)
        assert "400 more chars" in record.output
        assert [e["seq"] for e in record.events] == [1, 2]
        [past] = audit.history(T0 - timedelta(hours=1))
        assert (past.started_at, past.finished_at) == (T0, T0)


def test_unknown_state_is_refused() -> None:
    with MetricStore(":memory:") as store:
        audit = AuditLog(store, lambda: T0)
        with pytest.raises(ValueError, match="unknown fix state"):
            audit.append(1, "exploded", "x")


def test_running_fixes_stay_in_history_however_old() -> None:
    with MetricStore(":memory:") as store:
        audit = AuditLog(store, lambda: T0)
        fix = audit.create("a.b", "t", None, {}, "x", {})
        audit.append(fix, "running", "apply")
        assert [p.state for p in audit.history(T0 + timedelta(days=30))] == ["running"]
        assert audit.list(state="running")[0].id == fix
