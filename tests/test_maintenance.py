"""Preventive maintenance on real components: DuckDB, PostgreSQL, log files, the executor."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autofix.actions.base import CommandResult, NoOp, run_argv
from autofix.collect.base import format_labels
from autofix.config import Settings, load_settings
from autofix.executor import Executor
from autofix.gates import parse_windows
from autofix.maintenance import (
    MIN_RUN_NOW,
    ActionProbe,
    Maintenance,
    Need,
    PlannedTask,
    derive_needs,
    parse_upgradable,
    plan,
    window_occurrences,
)
from autofix.maintenance.apt import UpgradableCache
from autofix.pipeline import Pipeline
from autofix.store import MetricStore
from tests.actions._util import eventually
from tests.clirun import run_autofix

T0 = datetime(2026, 3, 2, 12, 0)  # a Monday
TUE_0305 = datetime(2026, 3, 3, 3, 5)
SAT_0205 = datetime(2026, 3, 7, 2, 5)
HOST = "web-1"

# `apt list --upgradable` on Ubuntu 22.04 with stderr merged into stdout, as a runner that
# merges them sees it: apt's warning (stderr, when not on a terminal) comes first.
APT_UBUNTU = """\

WARNING: apt does not have a stable CLI interface. Use with caution in scripts.

Listing...
libssl3/jammy-updates,jammy-security 3.0.2-0ubuntu1.15 amd64 [upgradable from: 3.0.2-0ubuntu1.12]
openssl/jammy-updates,jammy-security 3.0.2-0ubuntu1.15 amd64 [upgradable from: 3.0.2-0ubuntu1.12]
python3-urllib3/jammy-updates 1.26.5-1~exp1ubuntu0.1 all [upgradable from: 1.26.5-1~exp1]
tzdata/jammy-updates 2024a-0ubuntu0.22.04 all [upgradable from: 2023c-0ubuntu0.22.04]
N: There is 1 additional version. Please use the '-a' switch to see it
"""
# Debian 12 (bookworm), the "Listing... Done" form of a terminal.
APT_DEBIAN = """\
Listing... Done
libc-bin/stable-security 2.36-9+deb12u4 amd64 [upgradable from: 2.36-9+deb12u3]
libc6/stable-security 2.36-9+deb12u4 amd64 [upgradable from: 2.36-9+deb12u3]
libgnutls30/stable 3.7.9-2+deb12u2 amd64 [upgradable from: 3.7.9-2+deb12u1]
"""
APT_NOTHING = "Listing...\n"
APT_ARGV = ("apt", "list", "--upgradable")


# -- fixtures --------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class AptRunner:
    """Answers the upgradable listing with recorded output; runs every other argv."""

    def __init__(self, listing: str = APT_NOTHING) -> None:
        self.listing = listing
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        self.calls.append(tuple(argv))
        if tuple(argv) == APT_ARGV:
            return CommandResult(APT_ARGV, 0, self.listing, "")
        return run_argv(argv, timeout)


@dataclass
class Env:
    store: MetricStore
    settings: Settings
    clock: Clock
    runner: AptRunner
    tmp: Path

    def maintenance(self, pipeline: dict[str, Any]) -> Maintenance:
        model = Pipeline.model_validate(pipeline)
        executor = Executor(
            self.store,
            model,
            self.settings,
            clock=self.clock,
            sleep=lambda s: None,
            runner=self.runner,
        )
        return Maintenance(
            self.store, model, self.settings, executor, clock=self.clock, runner=self.runner
        )


def _settings(tmp: Path, **extra: str) -> Settings:
    return load_settings(
        environ={
            "AUTOFIX_FIX_MODE": "auto",
            "AUTOFIX_FIX_VERIFY_WAIT": "0s",
            "AUTOFIX_DB_PATH": str(tmp / "autofix.duckdb"),
            "AUTOFIX_QUARANTINE_DIR": str(tmp / "quarantine"),
            "AUTOFIX_HOSTNAME": HOST,
            **extra,
        }
    )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    settings_ = _settings(tmp_path)
    with MetricStore(settings_.db_path) as store:
        yield Env(store, settings_, Clock(), AptRunner(), tmp_path)


def _old_file(path: Path, size: int, now: datetime, age: timedelta = timedelta(days=3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("GET /news 200 12ms\n" * (size // 19 + 1))
    stamp = (now - age).replace(tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def _write(store: MetricStore, rows: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(
        [
            {
                "host": HOST,
                "unit": "",
                "capacity": float("nan"),
                **row,
                "labels": format_labels(row["labels"]),
            }
            for row in rows
        ]
    )
    store.write(frame)


def _series_id(store: MetricStore, metric: str, labels: dict[str, str], host: str = HOST) -> int:
    frame = store.query(
        "SELECT series_id FROM series WHERE host = ? AND metric = ? AND labels = ?",
        [host, metric, format_labels(labels)],
    )
    return int(frame["series_id"].iloc[0])


def _predict_disk(
    store: MetricStore, mountpoint: str, p_24h: float, p_4d: float, host: str = HOST
) -> None:
    labels = {"mountpoint": mountpoint, "device": "/dev/sda1", "fstype": "ext4"}
    _write(
        store,
        [
            {
                "ts": T0 - timedelta(minutes=1),
                "host": host,
                "metric": "node_filesystem_avail_bytes",
                "labels": labels,
                "value": 1e9,
                "unit": "bytes",
                "capacity": 100e9,
            }
        ],
    )
    sid = _series_id(store, "node_filesystem_avail_bytes", labels, host)
    eta = T0 + timedelta(hours=10)
    store.write_predictions(
        pd.DataFrame(
            [
                {
                    "series_id": sid,
                    "origin": T0 - timedelta(minutes=1),
                    "eta": eta,
                    "eta_lo": eta,
                    "eta_hi": eta,
                    "p_1h": 0.0,
                    "p_4h": 0.0,
                    "p_24h": p_24h,
                    "p_4d": p_4d,
                    "threshold": 1.0,
                    "model": "linear",
                    "model_version": "1",
                }
            ]
        ),
        T0,
    )


def _growth(store: MetricStore, target: str, path: Path, per_day: float, ts: datetime) -> None:
    _write(
        store,
        [
            {
                "ts": ts,
                "metric": "autofix_dir_growth_bytes_per_day",
                "labels": {"target": target, "path": str(path)},
                "value": per_day,
                "unit": "bytes_per_day",
            }
        ],
    )


def _events(store: MetricStore, task_id: int) -> list[str]:
    frame = store.query(
        "SELECT state FROM maintenance_events WHERE task_id = ? ORDER BY ts, rowid", [task_id]
    )
    return list(frame["state"])


def _need(**values: Any) -> Need:
    base: dict[str, Any] = {
        "kind": "vacuum",
        "target": "db",
        "action": "postgres.vacuum",
        "params": {"table": "public.t"},
        "urgency": "normal",
        "due_by": T0 + timedelta(days=7),
        "reason": "test",
        "estimated_s": 300.0,
        "downtime": False,
    }
    return Need(**{**base, **values})


# -- apt -------------------------------------------------------------------------------


def test_parse_upgradable_on_recorded_ubuntu_output() -> None:
    packages = parse_upgradable(APT_UBUNTU)
    assert [p.name for p in packages] == ["libssl3", "openssl", "python3-urllib3", "tzdata"]
    assert [p.security for p in packages] == [True, True, False, False]
    openssl = packages[1]
    assert (openssl.suite, openssl.version, openssl.arch, openssl.current) == (
        "jammy-updates,jammy-security",
        "3.0.2-0ubuntu1.15",
        "amd64",
        "3.0.2-0ubuntu1.12",
    )


def test_parse_upgradable_on_recorded_debian_output() -> None:
    packages = parse_upgradable(APT_DEBIAN)
    assert {p.name: p.security for p in packages} == {
        "libc-bin": True,
        "libc6": True,
        "libgnutls30": False,
    }
    assert packages[0].version == "2.36-9+deb12u4"


@pytest.mark.parametrize(
    "text",
    ["", APT_NOTHING, "WARNING: apt does not have a stable CLI interface.\n", "Listing... Done\n"],
)
def test_parse_upgradable_finds_nothing_in_noise(text: str) -> None:
    assert parse_upgradable(text) == []


# -- windows and planning (pure, fixed clock) ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        (
            "daily 23:00-01:00",
            [(datetime(2026, 3, 2, 23), datetime(2026, 3, 3, 1))],
        ),
        (
            "sat 02:00-04:00",
            [],
        ),
        (
            "*",
            [(datetime(2026, 3, 2), datetime(2026, 3, 4))],
        ),
        (
            "daily 22:00-23:00, daily 23:00-23:30",
            [(datetime(2026, 3, 2, 22), datetime(2026, 3, 2, 23, 30))],
        ),
    ],
)
def test_window_occurrences_merge_and_wrap(
    text: str, expected: list[tuple[datetime, datetime]]
) -> None:
    assert window_occurrences(parse_windows(text), T0, T0 + timedelta(hours=24)) == expected


def test_urgent_need_without_downtime_runs_now() -> None:
    need = _need(urgency="high", due_by=T0 + timedelta(hours=6))
    [task] = plan([need], parse_windows("sat 02:00-04:00"), T0, timedelta(days=7))
    assert (task.placement, task.window_start, task.window_end) == (
        "now",
        T0,
        T0 + timedelta(hours=6),
    )


def test_normal_need_takes_the_next_window() -> None:
    [task] = plan([_need()], parse_windows("sat 02:00-04:00"), T0, timedelta(days=7))
    assert (task.placement, task.window_start, task.window_end) == (
        "window",
        datetime(2026, 3, 7, 2),
        datetime(2026, 3, 7, 4),
    )


def test_a_window_open_now_starts_now_and_always_means_until_due() -> None:
    inside = datetime(2026, 3, 3, 3, 10)
    [task] = plan([_need()], parse_windows("daily 03:00-03:30"), inside, timedelta(days=7))
    assert (task.window_start, task.window_end) == (inside, datetime(2026, 3, 3, 3, 30))
    [always] = plan([_need()], parse_windows("*"), T0, timedelta(days=7))
    assert (always.window_start, always.window_end) == (T0, T0 + timedelta(days=7))


def test_windows_are_never_overbooked() -> None:
    needs = [_need(params={"table": f"public.t{i}"}, estimated_s=1200.0) for i in range(3)]
    tasks = plan(needs, parse_windows("daily 03:00-03:30"), T0, timedelta(days=7))
    assert [t.window_start for t in tasks] == [
        datetime(2026, 3, 3, 3),
        datetime(2026, 3, 4, 3),
        datetime(2026, 3, 5, 3),
    ]


def test_a_need_longer_than_any_window_is_unscheduled_with_the_reason() -> None:
    [task] = plan(
        [_need(estimated_s=3600.0)], parse_windows("daily 03:00-03:30"), T0, timedelta(days=7)
    )
    assert task.placement == "unscheduled"
    assert task.window_start is None
    assert "no maintenance window has 1h free" in task.reason


def test_downtime_need_waits_for_a_window_and_none_configured_says_so() -> None:
    patches = _need(
        kind="security_patches",
        target="patches",
        action="command.run",
        params={},
        urgency="high",
        downtime=True,
        estimated_s=900.0,
    )
    [task] = plan([patches], parse_windows("sat 02:00-04:00"), T0, timedelta(days=7))
    assert (task.placement, task.window_start) == ("window", datetime(2026, 3, 7, 2))
    [never] = plan([patches], parse_windows(""), T0, timedelta(days=7))
    assert (never.placement, never.reason) == ("unscheduled", "no maintenance window is configured")


def test_critical_need_with_no_window_before_its_deadline_runs_now_and_says_why() -> None:
    need = _need(urgency="critical", downtime=True, due_by=T0 + timedelta(hours=5))
    [task] = plan([need], parse_windows("sat 02:00-04:00"), T0, timedelta(days=7))
    assert (task.placement, task.window_start) == ("now", T0)
    assert task.reason.startswith("critical, and no maintenance window has 5m free before")


def test_identical_open_task_is_not_planned_again_and_unactionable_is_reported() -> None:
    need = _need()
    booked = PlannedTask(need, datetime(2026, 3, 7, 2), datetime(2026, 3, 7, 4), "window", "")
    report_only = _need(kind="security_patches", action=None, params={}, downtime=True)
    windows = parse_windows("sat 02:00-04:00")
    tasks = plan([need, report_only], windows, T0, timedelta(days=7), booked=[booked])
    assert [(t.need.kind, t.placement) for t in tasks] == [("security_patches", "unscheduled")]
    assert tasks[0].reason == "reported only: no action meets it"


WINDOW_TEXTS = [
    "",
    "*",
    "sat 02:00-04:00",
    "daily 03:00-03:30",
    "daily 22:00-02:00",
    "sun 23:30-00:30",
    "sat 02:00-04:00, daily 03:00-03:30",
]


@st.composite
def _needs(draw: st.DrawFn, now: datetime) -> list[Need]:
    needs = []
    for index in range(draw(st.integers(0, 12))):
        needs.append(
            Need(
                kind=draw(st.sampled_from(["log_rotation", "vacuum", "security_patches"])),
                target=draw(st.sampled_from(["a", "b"])),
                action=draw(st.sampled_from(["files.rotate_logs", "command.run", None])),
                params={"n": index},
                urgency=draw(st.sampled_from(["critical", "high", "normal", "low"])),
                due_by=now + timedelta(minutes=draw(st.integers(-60, 10 * 24 * 60))),
                reason="generated",
                estimated_s=float(draw(st.integers(1, 3 * 3600))),
                downtime=draw(st.booleans()),
            )
        )
    return needs


@given(
    now=st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31)).map(
        lambda d: d.replace(second=0, microsecond=0)
    ),
    text=st.sampled_from(WINDOW_TEXTS),
    data=st.data(),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_plan_properties(now: datetime, text: str, data: st.DataObject) -> None:
    windows = parse_windows(text)
    horizon = timedelta(days=7)
    needs = data.draw(_needs(now))
    tasks = plan(needs, windows, now, horizon)
    assert sorted(t.need.params["n"] for t in tasks) == sorted(n.params["n"] for n in needs)
    spans = window_occurrences(windows, now, now + horizon)
    booked = dict.fromkeys(spans, 0.0)
    for task in tasks:
        need = task.need
        if task.placement == "unscheduled":
            assert task.window_start is None
            assert task.window_end is None
            continue
        assert need.action is not None
        assert task.window_start is not None
        assert task.window_end is not None
        if task.placement == "now":
            assert need.urgency == "critical" or (need.urgency == "high" and not need.downtime)
            assert task.window_start == now
            assert task.window_end >= now + MIN_RUN_NOW
            continue
        # In a window: inside the windows, after now, done by the deadline, room for it.
        assert now <= task.window_start < now + horizon
        assert task.window_end <= need.due_by
        span_time = (task.window_end - task.window_start).total_seconds()
        assert span_time >= need.estimated_s
        for moment in (task.window_start, task.window_end - timedelta(seconds=1)):
            assert any(w.contains(moment) for w in windows)
        span = next(s for s in spans if s[0] <= task.window_start < s[1])
        booked[span] += need.estimated_s
    for (opens, closes), used in booked.items():
        assert used <= (closes - max(opens, now)).total_seconds()
    # Planning again with the scheduled tasks open plans none of them twice.
    scheduled = [t for t in tasks if t.placement != "unscheduled"]
    again = plan(needs, windows, now, horizon, booked=scheduled)
    assert not {t.need.key for t in again} & {t.need.key for t in scheduled}


# -- needs from the store and the targets --------------------------------------------------


def test_disk_forecast_makes_rotation_and_opted_in_cleanup_needs(env: Env) -> None:
    disk = env.tmp / "disk"
    logs, scratch, elsewhere = disk / "logs", disk / "scratch", env.tmp / "elsewhere"
    _old_file(logs / "app.log", 50_000, T0)
    _old_file(scratch / "render.tmp", 10_000, T0)
    _old_file(elsewhere / "other.log", 10_000, T0)
    _predict_disk(env.store, os.path.realpath(disk), p_24h=0.9, p_4d=1.0)
    _predict_disk(env.store, "/", p_24h=0.0, p_4d=0.1)
    _predict_disk(env.store, os.path.realpath(elsewhere), 1.0, 1.0, host="web-2")
    pipeline = Pipeline.model_validate(
        {
            "targets": [
                {"name": "applogs", "kind": "logdir", "path": str(logs)},
                {
                    "name": "scratch",
                    "kind": "logdir",
                    "path": str(scratch),
                    "actions": ["files.clean_temp"],
                },
                {"name": "other", "kind": "logdir", "path": str(elsewhere)},
            ]
        }
    )
    needs = derive_needs(pipeline, env.store, T0, runner=env.runner, host=HOST)
    assert [(n.kind, n.target, n.action, n.urgency) for n in needs] == [
        ("disk_cleanup", "scratch", "files.clean_temp", "critical"),
        ("log_rotation", "applogs", "files.rotate_logs", "critical"),
    ]
    rotation = needs[1]
    assert rotation.due_by == T0 + timedelta(hours=10)  # the ETA
    assert "P(24h)=0.90" in rotation.reason
    assert (rotation.estimated_s, rotation.downtime) == (60.0, False)


def test_critical_rotation_runs_now_and_compresses_the_logs(env: Env) -> None:
    disk = env.tmp / "disk"
    log = _old_file(disk / "logs" / "app.log", 200_000, T0)
    _predict_disk(env.store, os.path.realpath(disk), p_24h=0.95, p_4d=1.0)
    maintenance = env.maintenance(
        {
            "targets": [{"name": "applogs", "kind": "logdir", "path": str(disk / "logs")}],
            "maintenance": {"windows": "sat 02:00-04:00"},
        }
    )
    [task] = maintenance.plan_and_record(T0)
    assert (task["need"], task["state"], task["window_start"]) == (
        "log_rotation",
        "planned",
        T0.isoformat(timespec="seconds"),
    )
    [done] = maintenance.execute_due(T0)
    assert done["state"] == "executed"
    assert not log.exists()
    assert (log.parent / "app.log.gz").stat().st_size < 200_000
    fix = maintenance.executor.get(done["fix_id"])
    assert (fix.state, fix.requested_by) == ("succeeded", "maintenance")
    assert _events(env.store, task["task_id"]) == ["planned", "started", "executed"]
    # Nothing old is left: the action plans a no-op, so there is no need any more.
    env.clock.now = T0 + timedelta(minutes=5)
    assert maintenance.record_plan().rows() == []


def test_log_growth_plans_rotation_missed_then_replanned_and_cancelled(env: Env) -> None:
    logs = env.tmp / "logs"
    _old_file(logs / "app.log", 10_000, T0)
    _growth(env.store, "applogs", logs, 250e6, T0 - timedelta(minutes=1))
    maintenance = env.maintenance(
        {
            "targets": [{"name": "applogs", "kind": "logdir", "path": str(logs)}],
            "maintenance": {"windows": "daily 03:00-03:30"},
        }
    )
    [first] = maintenance.plan_and_record(T0)
    assert (first["urgency"], first["window_start"], first["window_end"]) == (
        "low",
        "2026-03-03T03:00:00",
        "2026-03-03T03:30:00",
    )
    assert "logs grow 250 MB/day" in first["reason"]
    assert maintenance.plan_and_record(T0 + timedelta(minutes=10)) == []  # already open

    env.clock.now = datetime(2026, 3, 3, 3, 30)
    [missed] = maintenance.execute_due()
    assert (missed["task_id"], missed["state"]) == (first["task_id"], "missed")
    assert "window ended 2026-03-03T03:30:00" in missed["state_reason"]

    # Still needed: a new task in the next window, not blocked by the missed one.
    [second] = maintenance.plan_and_record()
    assert second["window_start"] == "2026-03-04T03:00:00"
    # The growth stops before that window: the task is cancelled, never run.
    env.clock.now = datetime(2026, 3, 3, 9)
    _growth(env.store, "applogs", logs, 1e6, env.clock.now - timedelta(minutes=1))
    report = maintenance.record_plan()
    assert [(t["task_id"], t["state"]) for t in report.cancelled] == [
        (second["task_id"], "cancelled")
    ]
    assert maintenance.execute_due(datetime(2026, 3, 4, 3, 5)) == []
    assert [t["state"] for t in maintenance.tasks()] == ["missed", "cancelled"]
    assert [t["task_id"] for t in maintenance.tasks("cancelled")] == [second["task_id"]]


def test_booked_task_too_late_for_a_disk_filling_sooner_is_superseded(env: Env) -> None:
    logs = env.tmp / "disk" / "logs"
    log = _old_file(logs / "app.log", 50_000, T0)
    _growth(env.store, "applogs", logs, 250e6, T0 - timedelta(hours=2))
    maintenance = env.maintenance(
        {
            "targets": [{"name": "applogs", "kind": "logdir", "path": str(logs)}],
            "maintenance": {"windows": "daily 03:00-03:30"},
        }
    )
    [booked] = maintenance.plan_and_record(T0 - timedelta(hours=1))
    assert (booked["urgency"], booked["window_start"]) == ("low", "2026-03-03T03:00:00")
    _predict_disk(env.store, os.path.realpath(logs.parent), p_24h=0.9, p_4d=1.0)  # ETA T0+10h
    report = maintenance.record_plan(T0)
    [cancelled] = report.cancelled
    assert cancelled["task_id"] == booked["task_id"]
    assert cancelled["state_reason"] == "superseded: now critical, due by 2026-03-02T22:00:00"
    [now] = report.planned
    assert (now["urgency"], now["window_start"]) == ("critical", T0.isoformat())
    assert "predicted full" in now["reason"]
    assert "logs grow 250 MB/day" in now["reason"]  # both sources, one task
    assert [t["state"] for t in maintenance.execute_due(T0)] == ["executed"]
    assert not log.exists()


def test_estimate_is_the_median_of_past_succeeded_fixes(env: Env) -> None:
    logs = env.tmp / "logs"
    _old_file(logs / "app.log", 10_000, T0)
    _growth(env.store, "applogs", logs, 250e6, T0 - timedelta(minutes=1))
    maintenance = env.maintenance(
        {"targets": [{"name": "applogs", "kind": "logdir", "path": str(logs)}]}
    )
    audit = maintenance.executor.audit
    for ms, state in ((2000.0, "succeeded"), (4000.0, "succeeded"), (9000.0, "succeeded"),
                      (60000.0, "failed")):  # fmt: skip
        fix_id = audit.create("files.rotate_logs", "applogs", None, {}, "test", {})
        audit.append(fix_id, "running", "apply")
        audit.append(fix_id, state, "verify", duration_ms=ms)
    [need] = maintenance.derive(T0)
    assert need.estimated_s == 4.0


def test_fresh_fast_growing_logs_are_rotated(env: Env) -> None:
    # An application that rotates its own log every hour and writes 2.5 GB/day: every
    # file is younger than a day, so rotating "logs older than 1d" never finds one.
    logs = env.tmp / "fast"
    live = _old_file(logs / "app.log", 30_000, T0, age=timedelta(seconds=5))
    hour_old = _old_file(logs / "app.log.1", 300_000, T0, age=timedelta(hours=1, minutes=10))
    older = _old_file(logs / "app.log.2", 300_000, T0, age=timedelta(hours=2, minutes=10))
    _growth(env.store, "applogs", logs, 2.5e9, T0 - timedelta(minutes=1))
    target = {"name": "applogs", "kind": "logdir", "path": str(logs)}
    maintenance = env.maintenance({"targets": [target]})
    probe = ActionProbe(clock=lambda: T0)
    _, default_plan = probe("files.rotate_logs", maintenance.pipeline.targets[0], {})
    assert isinstance(default_plan, NoOp)  # the trap: 1d finds nothing to rotate
    [task] = maintenance.plan_and_record(T0)
    assert task["urgency"] == "high"  # 25x the limit: now, not in a window days away
    assert task["params"] == {"compress_after": "1h", "pattern": "*.log*"}
    [done] = maintenance.execute_due(T0)
    assert done["state"] == "executed", done
    assert live.exists()  # the log being written is never touched
    assert not hour_old.exists()
    assert not older.exists()
    assert (logs / "app.log.1.gz").exists()
    assert (logs / "app.log.2.gz").exists()


@pytest.mark.parametrize(
    ("per_day", "after"),
    [(150e6, "12h"), (250e6, "6h"), (500e6, "3h"), (900e6, "1h"), (50e9, "1h")],
)
def test_rotation_age_follows_the_growth(env: Env, per_day: float, after: str) -> None:
    logs = env.tmp / "logs"
    _old_file(logs / "app.log.1", 10_000, T0, age=timedelta(days=2))
    _growth(env.store, "applogs", logs, per_day, T0 - timedelta(minutes=1))
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "applogs", "kind": "logdir", "path": str(logs)}]}
    )
    [need] = derive_needs(pipeline, env.store, T0, runner=env.runner, host=HOST)
    assert need.params["compress_after"] == after


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def bloated(postgres_dsn: str) -> Iterator[str]:
    """20,000 rows, a quarter deleted (dead/live = 1/3), autovacuum off for it."""
    name = f"mnt_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE public.{name} (id int PRIMARY KEY, body text)"
            " WITH (autovacuum_enabled = false)"
        )
        conn.execute(
            f"INSERT INTO public.{name} SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
        )
        conn.execute(f"DELETE FROM public.{name} WHERE id % 4 = 0")
        conn.execute("SELECT pg_stat_force_next_flush()")

    def counted() -> bool:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = to_regclass(%s)",
                [f"public.{name}"],
            ).fetchone()
        return row is not None and row[0] >= 5000

    assert eventually(counted)
    yield f"public.{name}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{name}")


def _dead_tuples(dsn: str, table: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = to_regclass(%s)", [table]
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_dead_tuples_vacuum_planned_in_window_and_executed(
    env: Env, postgres_dsn: str, bloated: str
) -> None:
    maintenance = env.maintenance(
        {
            "targets": [
                {"name": "db", "kind": "postgres", "dsn": postgres_dsn, "tables": [bloated]}
            ],
            "maintenance": {"windows": "daily 03:00-03:30"},
        }
    )
    [task] = maintenance.plan_and_record(T0)
    assert (task["need"], task["action"], task["params"], task["urgency"]) == (
        "vacuum",
        "postgres.vacuum",
        {"table": bloated},
        "normal",
    )
    assert "5000 dead / 15000 live tuples (0.33 > 0.1)" in task["reason"]
    assert (task["window_start"], task["estimated_s"]) == ("2026-03-03T03:00:00", 300.0)

    env.clock.now = datetime(2026, 3, 3, 2, 59)
    assert maintenance.execute_due() == []  # not yet
    env.clock.now = TUE_0305
    [done] = maintenance.execute_due()
    assert done["state"] == "executed", done
    assert done["updated_at"] <= done["window_end"]
    assert maintenance.executor.get(done["fix_id"]).state == "succeeded"
    assert _dead_tuples(postgres_dsn, bloated) == 0
    assert _events(env.store, task["task_id"]) == ["planned", "started", "executed"]
    assert maintenance.execute_due(TUE_0305 + timedelta(minutes=1)) == []  # done is done


def test_query_latency_anomaly_makes_a_reindex_need(
    env: Env, postgres_dsn: str, bloated: str
) -> None:
    labels = {"target": "db"}
    _write(
        env.store,
        [
            {
                "ts": T0 - timedelta(minutes=2),
                "metric": "probe_query_duration_seconds",
                "labels": labels,
                "value": 0.8,
            }
        ],
    )
    sid = _series_id(env.store, "probe_query_duration_seconds", labels)
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "db", "kind": "postgres", "dsn": postgres_dsn, "tables": [bloated]}]}
    )

    def reindex_needs(score: float) -> list[Need]:
        with env.store._write_lock:
            env.store._run("DELETE FROM anomaly_scores")
            env.store._run(
                "INSERT INTO anomaly_scores VALUES (?, ?, ?, ?, ?, ?)",
                [T0, sid, T0 - timedelta(minutes=2), 0.8, score, "test"],
            )
        needs = derive_needs(pipeline, env.store, T0, runner=env.runner, host=HOST)
        return [n for n in needs if n.kind == "reindex"]

    [need] = reindex_needs(0.95)
    assert (need.action, dict(need.params), need.urgency, need.downtime) == (
        "postgres.reindex",
        {"table": bloated},
        "normal",
        False,
    )
    assert "anomaly score 0.95" in need.reason
    assert reindex_needs(0.5) == []


# -- security patches ----------------------------------------------------------------------


def _patching(env: Env, argv: list[str]) -> Maintenance:
    env.runner.listing = APT_UBUNTU
    return env.maintenance(
        {
            "targets": [{"name": "patches", "kind": "command", "argv": argv}],
            "maintenance": {"windows": "sat 02:00-04:00", "patch_target": "patches"},
        }
    )


def test_security_patches_wait_for_the_window_then_install(env: Env) -> None:
    maintenance = _patching(env, ["true"])
    [task] = maintenance.plan_and_record(T0)
    assert (task["need"], task["target"], task["action"], task["downtime"]) == (
        "security_patches",
        "patches",
        "command.run",
        True,
    )
    assert task["reason"].startswith("2 security update(s): libssl3 3.0.2-0ubuntu1.15, openssl")
    assert (task["window_start"], task["window_end"]) == (
        "2026-03-07T02:00:00",
        "2026-03-07T04:00:00",
    )
    assert APT_ARGV in env.runner.calls
    assert maintenance.execute_due(T0 + timedelta(hours=1)) == []
    env.clock.now = SAT_0205
    [done] = maintenance.execute_due()
    assert done["state"] == "executed", done
    fix = maintenance.executor.get(done["fix_id"])
    assert (fix.action, fix.target, fix.state) == ("command.run", "patches", "succeeded")
    assert ("true",) in env.runner.calls


def test_failed_patch_run_records_the_reason_then_the_window_is_missed(env: Env) -> None:
    maintenance = _patching(env, ["false"])
    [task] = maintenance.plan_and_record(T0)
    env.clock.now = SAT_0205
    [failed] = maintenance.execute_due()
    assert failed["state"] == "failed"
    assert failed["state_reason"].startswith("fix failed: exit 1")
    env.clock.now = datetime(2026, 3, 7, 4, 0)
    [missed] = maintenance.execute_due()
    assert missed["state"] == "missed"
    assert "last failure: fix failed: exit 1" in missed["state_reason"]
    assert _events(env.store, task["task_id"]) == ["planned", "started", "failed", "missed"]


def test_upgradable_listing_is_read_once_while_apt_state_is_unchanged(tmp_path: Path) -> None:
    lists, status = tmp_path / "lists", tmp_path / "status"
    lists.mkdir()
    status.write_text("Package: libc6\n")
    now = [0.0]
    cache = UpgradableCache(watch=(lists, status), clock=lambda: now[0])
    runner = AptRunner(APT_UBUNTU)
    hour = timedelta(hours=1)
    first = cache.run(runner, APT_ARGV, hour)
    now[0] = 600.0
    assert cache.run(runner, APT_ARGV, hour) is first
    assert runner.calls == [APT_ARGV]
    (lists / "deb.debian.org_dists_bookworm-security_InRelease").write_text("new")  # apt update
    cache.run(runner, APT_ARGV, hour)
    assert len(runner.calls) == 2
    cache.run(runner, APT_ARGV, hour)
    assert len(runner.calls) == 2
    now[0] = 600.0 + 3601  # too old
    cache.run(runner, APT_ARGV, hour)
    assert len(runner.calls) == 3
    status.write_text("Package: libc6\nVersion: 2.36-9+deb12u4\n")  # something installed
    cache.run(runner, APT_ARGV, hour)
    assert len(runner.calls) == 4
    cache.run(runner, APT_ARGV, timedelta(0))  # 0: always asks
    cache.run(runner, APT_ARGV, timedelta(0))
    assert len(runner.calls) == 6
    failing = AptRunner()
    failing.listing = APT_NOTHING

    def broken(argv: Sequence[str], timeout: float) -> CommandResult:
        failing.calls.append(tuple(argv))
        return CommandResult(tuple(argv), 100, "", "E: Could not open lock file")

    cache.run(broken, APT_ARGV, hour)
    cache.run(broken, APT_ARGV, hour)
    assert len(failing.calls) == 2  # a failure is never reused


def test_the_maintenance_job_lists_upgradable_packages_once_per_cache_period(
    tmp_path: Path,
) -> None:
    settings_ = _settings(tmp_path, AUTOFIX_MAINTENANCE_UPGRADABLE_CACHE="1h")
    runner = AptRunner(APT_UBUNTU)
    with MetricStore(settings_.db_path) as store:
        env = Env(store, settings_, Clock(), runner, tmp_path)
        maintenance = env.maintenance({"maintenance": {"windows": "*"}})
        for minutes in (0, 60, 120):  # the hourly job, three times
            report = maintenance.record_plan(T0 + timedelta(minutes=minutes))
            assert [row["need"] for row in report.unscheduled] == ["security_patches"]
        # Another Maintenance (the job builds one per run) shares the listing too.
        env.maintenance({"maintenance": {"windows": "*"}}).record_plan(T0)
    assert runner.calls.count(APT_ARGV) <= 2  # not 4 (once more if apt's state changed)


def test_security_updates_without_patch_target_are_reported_never_recorded(env: Env) -> None:
    env.runner.listing = APT_UBUNTU
    maintenance = env.maintenance({"maintenance": {"windows": "*"}})
    report = maintenance.record_plan(T0)
    assert report.planned == []
    [row] = report.unscheduled
    assert (row["need"], row["target"], row["action"], row["task_id"]) == (
        "security_patches",
        HOST,
        None,
        None,
    )
    assert "reported only: no maintenance.patch_target installs them" in row["reason"]
    assert maintenance.tasks() == []
    assert maintenance.execute_due(T0) == []


def test_fix_waiting_for_approval_keeps_the_task_started_until_it_runs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    log = _old_file(logs / "app.log", 10_000, T0)
    settings_ = _settings(tmp_path, AUTOFIX_FIX_MODE="approve")
    with MetricStore(settings_.db_path) as store:
        env = Env(store, settings_, Clock(), AptRunner(), tmp_path)
        _growth(store, "applogs", logs, 5e9, T0 - timedelta(minutes=1))  # 50x: high, now
        maintenance = env.maintenance(
            {"targets": [{"name": "applogs", "kind": "logdir", "path": str(logs)}]}
        )
        [task] = maintenance.plan_and_record(T0)
        [waiting] = maintenance.execute_due(T0)
        assert (waiting["state"], waiting["urgency"]) == ("started", "high")
        assert maintenance.execute_due(T0 + timedelta(minutes=1)) == []  # no second fix
        env.clock.now = T0 + timedelta(minutes=2)
        assert maintenance.executor.approve(waiting["fix_id"], "ops").state == "succeeded"
        env.clock.now = T0 + timedelta(minutes=3)
        [done] = maintenance.execute_due()
        assert (done["state"], done["fix_id"]) == ("executed", waiting["fix_id"])
        assert done["updated_at"] == (T0 + timedelta(minutes=2)).isoformat(timespec="seconds")
        assert not log.exists()
        assert _events(store, task["task_id"]) == ["planned", "started", "started", "executed"]


# -- the command -------------------------------------------------------------------------------


def test_cli_plan_and_list(tmp_path: Path) -> None:
    listing = tmp_path / "apt-list.txt"
    listing.write_text(APT_UBUNTU)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "targets:\n"
        "  - {name: patches, kind: command, argv: ['true']}\n"
        "maintenance:\n"
        "  windows: 'sat 02:00-04:00'\n"
        "  patch_target: patches\n"
        f"  upgradable_argv: ['cat', '{listing}']\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "data" / "autofix.duckdb"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_HOSTNAME": HOST,
        "COLUMNS": "200",
    }
    [task] = json.loads(run_autofix(["maintenance", "plan", "--json"], env).stdout)
    assert (task["need"], task["action"], task["state"], task["downtime"]) == (
        "security_patches",
        "command.run",
        "planned",
        True,
    )
    start = datetime.fromisoformat(task["window_start"])
    assert start.weekday() == 5
    assert 2 <= start.hour < 4
    table = run_autofix(["maintenance", "plan"], env).stdout  # kept, not planned twice
    assert "security_patches" in table
    assert "command.run" in table
    listed = json.loads(
        run_autofix(["maintenance", "list", "--json", "--state", "planned"], env).stdout
    )
    assert [t["task_id"] for t in listed] == [task["task_id"]]
    bad = run_autofix(["maintenance", "list", "--state", "bogus"], env, check=2)
    assert "use one of planned, started" in bad.stderr
