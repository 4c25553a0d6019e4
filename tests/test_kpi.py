"""KPIs from the audit log: fix states made by the real executor, hand-computed numbers."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autofix.config import load_settings
from autofix.errors import InputError, StoreError
from autofix.executor import Candidate, Decision, Executor
from autofix.kpi import (
    TARGETS,
    Kpis,
    compute_kpis,
    daily_kpis,
    format_value,
    kpi_history,
    kpi_rows,
    snapshot_kpis,
)
from autofix.pipeline import Pipeline
from autofix.store import MetricStore
from tests.clirun import run_autofix

T0 = datetime(2026, 3, 2, 12, 0)
FAIL = [sys.executable, "-c", "raise SystemExit(1)"]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    store: MetricStore
    ex: Executor
    clock: Clock
    root: Path

    def target(self, name: str, *sizes: int) -> str:
        """Put stale files of these sizes (0 = empty: clean_temp's verify fails) in a target."""
        directory = self.root / name
        stamp = (self.clock.now - timedelta(days=3)).replace(tzinfo=UTC).timestamp()
        for index, size in enumerate(sizes):
            file = directory / f"old-{index}-{time.monotonic_ns()}.tmp"
            file.write_bytes(b"x" * size)
            os.utime(file, (stamp, stamp))
        return name

    def fix(self, name: str, *sizes: int, **kwargs: Any) -> Any:
        return self.ex.run("files.clean_temp", self.target(name, *sizes), **kwargs)

    def insert(self, table: str, *rows: Sequence[Any]) -> None:
        with self.store._write_lock:
            for row in rows:
                marks = ", ".join("?" * len(row))
                self.store._run(f"INSERT INTO {table} VALUES ({marks})", list(row))

    def decision(
        self,
        decision_id: str,
        detected_at: datetime,
        mode: str = "auto",
        ts: datetime | None = None,
    ) -> str:
        ts = ts or detected_at
        self.insert(
            "decisions",
            (decision_id, ts, detected_at, "disk-full", "forecast", "policy", "s",
             None, None, mode, ts + timedelta(hours=4), "fills in 3h", "{}"),
        )  # fmt: skip
        return decision_id

    def outcome(self, decision_id: str, scored_at: datetime, real: bool) -> None:
        self.insert("decision_outcomes", (decision_id, scored_at, real, "scored"))

    def kpis(self, window: timedelta = timedelta(days=30)) -> Kpis:
        return compute_kpis(self.store, self.clock.now, window)


NAMES = ("t1", "t2", "t3", "t4", "t5", "t6", "t7", "old", "ta", "tb")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    root = tmp_path / "targets"
    targets: list[dict[str, Any]] = []
    for name in NAMES:
        (root / name).mkdir(parents=True)
        targets.append({"name": name, "kind": "logdir", "path": str(root / name)})
    (root / "tp").mkdir()
    targets.append(
        {"name": "tp", "kind": "logdir", "path": str(root / "tp"), "gates": {"mode": "approve"}}
    )
    targets.append({"name": "cmd", "kind": "command", "argv": FAIL, "check_argv": FAIL})
    settings = load_settings(
        environ={
            "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "q"),
            "AUTOFIX_FIX_VERIFY_WAIT": "0s",
            "AUTOFIX_FIX_MODE": "auto",
        }
    )
    clock = Clock()
    with MetricStore(tmp_path / "a.duckdb") as store:
        ex = Executor(
            store,
            Pipeline.model_validate({"targets": targets}),
            settings,
            clock=clock,
            sleep=lambda s: None,
        )
        yield World(store, ex, clock, root)


def _three_up_one_rolled_back(w: World) -> list[int]:
    """t1-t3 succeed 60 s, 120 s and 600 s after detection; t4 rolls back (frees nothing)."""
    ids = []
    for name, seconds in (("t1", 60), ("t2", 120), ("t3", 600)):
        decision = w.decision(f"d-{name}", T0 - timedelta(seconds=seconds))
        record = w.fix(name, 100, decision_id=decision)
        assert record.state == "succeeded"
        ids.append(record.id)
    rolled = w.fix("t4", 0, decision_id=w.decision("d-t4", T0 - timedelta(seconds=30)))
    assert rolled.state == "rolled_back"
    return [*ids, rolled.id]


# -- success rate, MTTR, recovery time --------------------------------------------------


def test_success_rate_mttr_and_recovery_percentiles(world: World) -> None:
    _three_up_one_rolled_back(world)
    k = world.kpis()
    assert (k.applied_fixes, k.succeeded_fixes, k.auto_fix_success_rate) == (4, 3, 0.75)
    assert k.recovered_incidents == 3
    assert k.mttr_seconds == pytest.approx(260.0)  # (60 + 120 + 600) / 3
    assert k.recovery_p50_seconds == pytest.approx(120.0)
    assert k.recovery_p95_seconds == pytest.approx(552.0)  # 120 + 0.9 * (600 - 120)
    assert k.mttr_reduction == pytest.approx(1 - 260 / 1800)
    assert k.status["auto_fix_success_rate"] == "misses"
    assert k.status["mttr_reduction"] == "meets_target"  # 85.6 %
    assert k.status["recovery_p95_seconds"] == "misses"
    assert k.fixes_by_state["succeeded"] == 3
    assert k.fixes_by_state["rolled_back"] == 1
    assert k.escalations == 1  # the rollback escalated (postcheck)
    assert k.decisions_by_mode["auto"] == 4


def test_every_state_counts_once_and_only_applied_fixes_rate(world: World) -> None:
    w = world
    # Outside the 30-day window: a success 40 days ago never counts.
    w.clock.now = T0 - timedelta(days=40)
    assert w.fix("old", 100).state == "succeeded"
    w.clock.now = T0
    _three_up_one_rolled_back(w)
    assert w.ex.run("command.run", "cmd").state == "failed"
    assert w.ex.run("files.clean_temp", "not-declared").state == "refused"
    assert w.fix("t5").state == "noop"
    assert w.fix("t6", 100, dry_run=True).state == "planned"
    assert w.fix("tp", 100).state == "pending_approval"
    dead = w.ex.audit.create("files.clean_temp", "t7", None, {}, "test", {})
    w.ex.audit.append(dead, "running", "apply")
    [interrupted] = w.ex.recover()
    assert interrupted.state == "interrupted"

    k = w.kpis()
    assert k.applied_fixes == 6  # 3 succeeded, rolled back, failed, interrupted
    assert k.auto_fix_success_rate == 0.5
    assert dict(k.fixes_by_state) == {
        "planned": 1,
        "pending_approval": 1,
        "refused": 1,
        "running": 0,
        "succeeded": 3,
        "failed": 1,
        "rolled_back": 1,
        "interrupted": 1,
        "noop": 1,
    }
    assert k.pending_approvals == 1
    assert k.escalations == 3  # rollback, failed apply, interrupted fix not verified
    # A 60-day window takes the old success in; a window ending before it does not.
    assert w.kpis(timedelta(days=60)).succeeded_fixes == 4
    before = compute_kpis(w.store, T0 - timedelta(days=39), timedelta(days=5))
    assert (before.applied_fixes, before.auto_fix_success_rate) == (1, 1.0)


def test_a_fix_still_running_is_not_yet_applied(world: World) -> None:
    fix_id = world.ex.audit.create("files.clean_temp", "t1", None, {}, "test", {})
    world.ex.audit.append(fix_id, "running", "apply")
    k = world.kpis()
    assert (k.applied_fixes, k.auto_fix_success_rate, k.fixes_by_state["running"]) == (0, None, 1)


def test_mttr_is_per_decision_to_its_first_verified_fix(world: World) -> None:
    w = world
    w.ex.pipeline = Pipeline.model_validate(
        {
            "targets": [
                {"name": n, "kind": "logdir", "path": str(w.root / n)} for n in ("ta", "tb")
            ],
        }
    )
    w.decision("d5", T0 - timedelta(seconds=300))
    w.target("ta", 0)
    w.target("tb", 100)
    results = w.ex.run_decision(
        Decision(
            [Candidate("files.clean_temp", "ta"), Candidate("files.clean_temp", "tb")],
            id="d5",
        )
    )
    assert [r.state for r in results] == ["rolled_back", "succeeded"]
    # Without a decision (an operator's `fix run`) a fix has no detection time: no MTTR.
    w.clock.now += timedelta(hours=1)  # past ta's cooldown and backoff
    w.target("ta", 100)
    assert w.ex.run("files.clean_temp", "ta").state == "succeeded"
    k = w.kpis()
    assert (k.recovered_incidents, k.mttr_seconds, k.recovery_p95_seconds) == (1, 300.0, 300.0)
    assert k.status["recovery_p95_seconds"] == "meets_target"
    assert (k.applied_fixes, k.succeeded_fixes) == (3, 2)


def test_events_after_now_are_ignored(world: World) -> None:
    _three_up_one_rolled_back(world)
    assert compute_kpis(world.store, T0 - timedelta(seconds=1)).applied_fixes == 0


# -- false-fix rate ----------------------------------------------------------------------


def test_labels_change_the_false_fix_rate_and_the_latest_label_wins(world: World) -> None:
    w = world
    t1, t2, t3, _t4 = _three_up_one_rolled_back(w)
    assert w.kpis().false_fix_rate_labels is None
    w.ex.audit.label(t1, True, "ann", "disk was fine")
    w.ex.audit.label(t2, False, "ann", None)
    k = w.kpis()
    assert (k.labelled_fixes, k.false_labels, k.false_fix_rate_labels) == (2, 1, 0.5)
    assert (k.false_fix_rate, k.status["false_fix_rate"]) == (0.5, "misses")

    w.clock.now += timedelta(minutes=1)
    w.ex.audit.label(t1, False, "bob", "it was real after all")
    assert w.kpis().false_fix_rate_labels == 0.0
    # Same timestamp: the one recorded last wins, in the KPI and in labels().
    w.ex.audit.label(t3, True, "ann", None)
    w.ex.audit.label(t3, False, "ann", "misclick")
    assert w.kpis().false_labels == 0
    assert [lab["false_fix"] for lab in w.ex.audit.labels(t3)] == [True, False]
    assert w.ex.audit.labels(t1)[0] == {
        "ts": T0,
        "false_fix": True,
        "actor": "ann",
        "comment": "disk was fine",
    }
    assert w.kpis().status["false_fix_rate_labels"] == "meets_goal"


def test_label_refuses_unknown_and_never_applied_fixes(world: World) -> None:
    w = world
    refused = w.ex.run("files.clean_temp", "not-declared")
    noop = w.fix("t5")
    pending = w.fix("tp", 100)
    with pytest.raises(InputError, match="no fix with id 999"):
        w.ex.audit.label(999, True, "ann")
    for record in (refused, noop, pending):
        with pytest.raises(InputError, match=f"is {record.state} and was never applied or planned"):
            w.ex.audit.label(record.id, True, "ann")
    planned = w.fix("t6", 100, dry_run=True)
    assert w.ex.audit.label(planned.id, True, "ann").state == "planned"
    # A planned fix can carry a label, but the labels KPI is over applied fixes only.
    assert w.kpis().labelled_fixes == 0


def test_shadow_decisions_scored_after_their_horizon(world: World) -> None:
    w = world
    day = timedelta(days=1)
    later = T0 - timedelta(hours=1)
    for name, mode, real in (
        ("s1", "shadow", [True]),
        ("s2", "shadow", [False]),
        ("s3", "dry_run", [True]),
        ("s4", "dry_run", [True]),
        ("s5", "auto", [False]),  # not a shadow decision
        ("s6", "shadow", []),  # not scored yet
        ("s7", "shadow", [False, True]),  # re-scored: the latest score wins
    ):
        w.decision(name, T0 - 2 * day, mode)
        for step, verdict in enumerate(real):
            w.outcome(name, later + timedelta(minutes=step), verdict)
    w.decision("s8", T0 - 2 * day, "shadow")
    w.outcome("s8", T0 + day, False)  # scored after now
    w.decision("s9", T0 - 40 * day, "shadow")
    w.outcome("s9", T0 - 39 * day, False)  # decided before the window
    k = w.kpis()
    assert (k.scored_decisions, k.not_real_decisions, k.false_fix_rate_shadow) == (5, 1, 0.2)
    assert k.decisions_by_mode == {"off": 0, "shadow": 5, "approve": 0, "auto": 1, "dry_run": 2}

    # Combined with operator labels: (1 false label + 1 not real) / (2 labels + 5 scored).
    t1, t2, *_ = _three_up_one_rolled_back(w)
    w.ex.audit.label(t1, True, "ann")
    w.ex.audit.label(t2, False, "ann")
    k = w.kpis()
    assert k.false_fix_rate == pytest.approx(2 / 7)
    assert (k.false_fix_rate_labels, k.false_fix_rate_shadow) == (0.5, 0.2)


# -- preventive maintenance --------------------------------------------------------------


def test_preventive_execution_rate(world: World) -> None:
    w = world
    hour = timedelta(hours=1)

    def task(task_id: int, window_end: datetime, *events: tuple[datetime, str]) -> None:
        w.insert(
            "maintenance_tasks",
            (task_id, T0 - 10 * hour, "log_growth", "t1", "files.rotate_logs", "{}", "soon",
             "fills in 2d", 30.0, False, window_end, window_end - hour, window_end),
        )  # fmt: skip
        for ts, state in events:
            w.insert("maintenance_events", (task_id, ts, state, None, None))

    past, future = T0 - 5 * hour, T0 + 5 * hour
    task(1, past, (past - 2 * hour, "planned"), (past - 0.5 * hour, "executed"))  # on time
    task(2, past, (past + hour, "executed"))  # late
    task(3, past, (past - 2 * hour, "planned"), (past, "missed"))  # missed
    task(4, past, (past - hour, "cancelled"))  # the need went away: not counted
    task(5, future, (T0 - hour, "planned"))  # not due yet
    task(6, future, (T0 - hour, "executed"))  # early: due and on time
    task(7, past, (past - 0.5 * hour, "started"), (past - 0.4 * hour, "failed"))  # failed
    task(8, T0 - timedelta(days=40), (T0 - timedelta(days=41), "executed"))  # before window
    task(9, future, (T0 + 2 * hour, "executed"))  # executed after now: not yet
    k = w.kpis()
    assert (k.maintenance_due, k.maintenance_on_time) == (5, 2)  # 1, 2, 3, 6, 7
    assert k.preventive_execution_rate == pytest.approx(0.4)
    assert k.status["preventive_execution_rate"] == "misses"


# -- targets and status -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "status"),
    [
        ("auto_fix_success_rate", 0.95, "meets_goal"),
        ("auto_fix_success_rate", 0.85, "meets_target"),
        ("auto_fix_success_rate", 0.849, "misses"),
        ("auto_fix_success_rate", None, "no_data"),
        ("false_fix_rate", 0.0, "meets_goal"),
        ("false_fix_rate", 0.001, "meets_target"),  # the goal is strictly below 0.1 %
        ("false_fix_rate", 0.0099, "meets_target"),
        ("false_fix_rate", 0.01, "misses"),
        ("recovery_p95_seconds", 60.0, "meets_goal"),
        ("recovery_p95_seconds", 300.0, "meets_target"),
        ("recovery_p95_seconds", 301.0, "misses"),
        ("preventive_execution_rate", 0.99, "meets_goal"),
        ("mttr_reduction", 0.7, "meets_target"),
        ("mttr_reduction", float("nan"), "no_data"),
    ],
)
def test_target_status(name: str, value: float | None, status: str) -> None:
    assert TARGETS[name].status(value) == status


def test_empty_store_has_no_data_and_formats() -> None:
    k = compute_kpis(MetricStore(":memory:"), T0)
    assert set(k.status.values()) == {"no_data"}
    assert k.fixes_by_state["succeeded"] == 0
    data = k.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert [r.shown for r in kpi_rows(k)] == ["no data"] * 10
    assert [TARGETS[n].describe("goal") for n in ("false_fix_rate", "recovery_p95_seconds")] == [
        "< 0.1 %",
        "≤ 60 s",
    ]
    assert format_value(0.875, "ratio") == "87.5 %"
    assert format_value(1800, "seconds") == "30 min"
    with pytest.raises(InputError, match="window must be positive"):
        compute_kpis(MetricStore(":memory:"), T0, timedelta(0))


# -- snapshots, history, daily -----------------------------------------------------------


def test_snapshots_and_history(world: World) -> None:
    w = world
    first = w.kpis()
    assert snapshot_kpis(w.store, first, T0) == len(first.numbers())
    _three_up_one_rolled_back(w)
    w.clock.now = T0 + timedelta(hours=1)
    snapshot_kpis(w.store, w.kpis(), w.clock.now)
    history = kpi_history(w.store, T0 - timedelta(days=1))
    assert list(history["ts"]) == [T0, T0 + timedelta(hours=1)]
    assert math.isnan(history["auto_fix_success_rate"].iloc[0])
    assert history["auto_fix_success_rate"].iloc[1] == 0.75
    assert list(history["applied_fixes"]) == [0.0, 4.0]
    assert set(first.numbers()) <= set(history.columns)
    assert kpi_history(w.store, T0 + timedelta(days=1)).columns.tolist() == ["ts"]


def test_daily_kpis(world: World) -> None:
    w = world
    w.clock.now = T0 - timedelta(days=2)
    w.decision("d-a", w.clock.now - timedelta(seconds=90))
    assert w.fix("t1", 100, decision_id="d-a").state == "succeeded"
    assert w.fix("t2", 0).state == "rolled_back"
    w.clock.now = T0
    assert w.fix("t3", 100).state == "succeeded"
    days = daily_kpis(w.store, T0 - timedelta(days=3), T0)
    assert list(days["day"]) == [datetime(2026, 2, d) for d in (27, 28)] + [
        datetime(2026, 3, d) for d in (1, 2)
    ]
    assert list(days["applied_fixes"]) == [0, 2, 0, 1]
    assert days["auto_fix_success_rate"].fillna(-1).tolist() == [-1, 0.5, -1, 1.0]
    assert days["mttr_seconds"].iloc[1] == 90.0


# -- read-only stores ----------------------------------------------------------------------


def test_reader_and_snapshot_stores(tmp_path: Path, world: World) -> None:
    w = world
    _three_up_one_rolled_back(w)
    expected = w.kpis().as_dict()
    w.store.export_parquet(tmp_path / "snap")
    w.store.close()
    with MetricStore.open_reader(w.store.path) as reader:
        assert compute_kpis(reader, T0).as_dict() == expected
        with pytest.raises(StoreError, match="read-only"):
            snapshot_kpis(reader, compute_kpis(reader, T0), T0)
    with MetricStore.open_snapshot(tmp_path / "snap") as snapshot:
        # The snapshot carries the audit log: the same KPIs while a service holds the file.
        assert compute_kpis(snapshot, T0).as_dict() == expected
        assert daily_kpis(snapshot, T0 - timedelta(days=1), T0)["applied_fixes"].sum() == 4


# -- the CLI --------------------------------------------------------------------------------

KPI_FIELDS = {
    "now", "window_seconds", "manual_mttr_seconds", "auto_fix_success_rate", "applied_fixes",
    "succeeded_fixes", "mttr_seconds", "recovery_p50_seconds", "recovery_p95_seconds",
    "recovered_incidents", "mttr_reduction", "preventive_execution_rate", "maintenance_due",
    "maintenance_on_time", "false_fix_rate", "false_fix_rate_labels", "false_fix_rate_outcomes",
    "false_fix_rate_shadow", "labelled_fixes", "false_labels", "judged_fixes",
    "judged_unlabelled", "false_outcomes", "effective_fixes", "ineffective_fixes",
    "unneeded_fixes", "exhaustion_fixes", "preventive_fixes", "scored_decisions",
    "not_real_decisions", "escalations",
    "pending_approvals", "fixes_by_state", "decisions_by_mode", "status", "targets",
}  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    old = tmp / "old.tmp"
    old.write_bytes(b"stale bytes")
    stamp = time.time() - 3 * 86400
    os.utime(old, (stamp, stamp))
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"targets:\n  - {{name: tmp, kind: logdir, path: {tmp}}}\n")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "data" / "autofix.duckdb"),
        "AUTOFIX_SNAPSHOT_DIR": str(tmp_path / "data" / "snapshot"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "quarantine"),
        "AUTOFIX_FIX_VERIFY_WAIT": "0s",
        "COLUMNS": "200",
    }


def _one_line_error(proc: Any, text: str) -> None:
    assert proc.stdout == ""
    assert proc.stderr.startswith("autofix: error: ")
    assert text in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_label_then_kpi(env: dict[str, str]) -> None:
    done = json.loads(
        run_autofix(
            ["fix", "run", "files.clean_temp", "--target", "tmp", "--yes", "--json"], env
        ).stdout
    )
    assert done["state"] == "succeeded"
    refused = json.loads(
        run_autofix(
            ["fix", "run", "files.clean_temp", "--target", "tmp", "--yes", "--json"], env, 1
        ).stdout
    )
    assert (refused["state"], refused["gate"]) == ("refused", "cooldown")

    before = json.loads(run_autofix(["kpi", "--json"], env).stdout)
    assert set(before) == KPI_FIELDS
    assert (before["applied_fixes"], before["auto_fix_success_rate"]) == (1, 1.0)
    assert before["false_fix_rate_labels"] is None
    assert before["fixes_by_state"]["refused"] == 1
    assert before["status"]["auto_fix_success_rate"] == "meets_goal"

    labelled = json.loads(
        run_autofix(
            ["fix", "label", str(done["id"]), "--false", "--comment", "disk was fine", "--json"],
            env,
        ).stdout
    )
    assert labelled["labels"][0]["false_fix"] is True
    assert labelled["labels"][0]["comment"] == "disk was fine"
    assert labelled["labels"][0]["actor"].startswith("cli")
    after = json.loads(run_autofix(["kpi", "--json", "--window", "1d"], env).stdout)
    assert (after["false_fix_rate_labels"], after["false_fix_rate"]) == (1.0, 1.0)
    assert after["status"]["false_fix_rate"] == "misses"
    assert after["window_seconds"] == 86400

    table = run_autofix(["kpi"], env).stdout
    assert "auto-fix success rate" in table
    assert "meets goal" in table

    for args, text in (
        (["fix", "label", "999", "--false"], "no fix with id 999"),
        (["fix", "label", str(refused["id"]), "--correct"], "never applied or planned"),
        (["fix", "label", str(done["id"])], "exactly one of --false or --correct"),
        (["fix", "label", str(done["id"]), "--false", "--correct"], "exactly one of"),
        (["kpi", "--window", "soon"], "--window: not a duration"),
    ):
        _one_line_error(run_autofix(args, env, 2), text)


def test_cli_kpi_reads_the_snapshot_while_another_process_writes(env: dict[str, str]) -> None:
    # Another process owns the store: the reader falls back to the snapshot, which carries
    # the audit log. One from an older autofix (metrics only) is refused with a reason.
    with MetricStore(env["AUTOFIX_DB_PATH"]) as owner:
        owner.export_parquet(env["AUTOFIX_SNAPSHOT_DIR"])
        kpis = json.loads(run_autofix(["kpi", "--json"], env).stdout)
        assert kpis["applied_fixes"] == 0
        (Path(env["AUTOFIX_SNAPSHOT_DIR"]) / "fixes.parquet").unlink()
        proc = run_autofix(["kpi", "--json"], env, 1)
    assert proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]  # after the store's INFO line about it
    assert last.startswith("autofix: error: ")
    assert "snapshot has no audit log" in last
