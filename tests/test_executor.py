"""The executor on a real DuckDB store with an injected clock and a counting action."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autofix.actions.base import Action, Applied, Check, Facts, NoOp, Params, Plan, Step
from autofix.actions.registry import ACTIONS
from autofix.config import Settings, load_settings
from autofix.errors import ActionError, InputError, PartialApplyError
from autofix.executor import Candidate, Decision, Executor
from autofix.pipeline import LogDirTarget, Pipeline
from autofix.store import MetricStore

T0 = datetime(2026, 3, 2, 12, 0)


class CounterParams(Params):
    fail_verify: bool = False
    noop: bool = False
    fail_partway: bool = False
    slow_facts: float = 0.0  # seconds reading facts takes (widens a race window)


class Counter(Action[CounterParams, LogDirTarget]):
    """Adds one to ``<root>/counter``; verify wants +1; rollback subtracts one."""

    name = "test.counter"
    summary = "test"
    params_model = CounterParams
    target_kinds = (LogDirTarget,)
    rolls_back = True

    @property
    def file(self) -> Path:
        return self.target.path / "counter"

    def facts(self) -> Facts:
        time.sleep(self.params.slow_facts)
        return {"n": int(self.file.read_text()) if self.file.exists() else 0}

    def plan(self, facts: Facts) -> Plan:
        return NoOp("nothing to count") if self.params.noop else [Step("add", "add one")]

    def apply(self, steps: Sequence[Step]) -> Applied:
        n = self.facts()["n"] + 1
        self.file.write_text(str(n))
        if self.params.fail_partway:
            raise PartialApplyError("second step broke", {"was": n - 1})
        return Applied(f"now {n}", {"was": n - 1})

    def verify(self, before: Facts, after: Facts) -> Check:
        ok = after["n"] == before["n"] + 1 and not self.params.fail_verify
        return Check(ok, f"n={after['n']}")

    def rollback(self, undo: Any) -> str:
        self.file.write_text(str(undo["was"]))
        return f"back to {undo['was']}"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


REGISTRY = {**ACTIONS, Counter.name: Counter}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Executor, Clock, Path]]:
    root = tmp_path / "root"
    root.mkdir()
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "box", "kind": "logdir", "path": str(root), "group": "g"}]}
    )
    settings = _settings(tmp_path, fix_mode="auto")
    clock = Clock()
    with MetricStore(tmp_path / "a.duckdb") as store:
        yield (
            Executor(
                store, pipeline, settings, clock=clock, sleep=lambda s: None, registry=REGISTRY
            ),
            clock,
            root,
        )


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return load_settings(
        environ={
            "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "q"),
            "AUTOFIX_FIX_VERIFY_WAIT": "0s",
            **{f"AUTOFIX_{k.upper()}": str(v) for k, v in values.items()},
        }
    )


def _count(root: Path) -> int:
    file = root / "counter"
    return int(file.read_text()) if file.exists() else 0


def test_auto_run_succeeds_and_records_running_first(env: tuple[Executor, Clock, Path]) -> None:
    ex, _, root = env
    record = ex.run("test.counter", "box")
    assert record.state == "succeeded"
    assert _count(root) == 1
    assert [e["state"] for e in record.events] == ["running", "succeeded"]
    assert record.plan == [{"op": "add", "detail": "add one", "args": {}}]
    assert record.undo == {"was": 0}


def test_dry_run_plans_only(env: tuple[Executor, Clock, Path]) -> None:
    ex, _, root = env
    record = ex.run("test.counter", "box", dry_run=True)
    assert (record.state, _count(root)) == ("planned", 0)


def test_noop(env: tuple[Executor, Clock, Path]) -> None:
    ex, _, _root = env
    record = ex.run("test.counter", "box", {"noop": True})
    assert (record.state, record.output) == ("noop", "nothing to count")


def test_failed_verify_rolls_back_and_escalates(env: tuple[Executor, Clock, Path]) -> None:
    ex, _, root = env
    record = ex.run("test.counter", "box", {"fail_verify": True})
    assert record.state == "rolled_back"
    assert _count(root) == 0
    assert record.error is not None
    assert "verify failed" in record.error
    assert ex.audit.escalations(record.id)[0]["gate"] == "postcheck"


def test_cooldown_refusal_is_recorded_then_lifts(env: tuple[Executor, Clock, Path]) -> None:
    ex, clock, root = env
    ex.run("test.counter", "box")
    refused = ex.run("test.counter", "box")
    assert (refused.state, refused.gate) == ("refused", "cooldown")
    assert refused.reason is not None
    assert "next allowed" in refused.reason
    clock.now += timedelta(minutes=11)
    assert ex.run("test.counter", "box").state == "succeeded"
    assert _count(root) == 2


def test_breaker_holds_after_failures(env: tuple[Executor, Clock, Path]) -> None:
    ex, clock, _ = env
    for _ in range(3):
        ex.run("test.counter", "box", {"fail_verify": True})
        clock.now += timedelta(hours=1)
    record = ex.run("test.counter", "box")
    assert (record.state, record.gate) == ("refused", "breaker")


def test_undeclared_target_and_unknown_action(env: tuple[Executor, Clock, Path]) -> None:
    ex, _, _ = env
    record = ex.run("test.counter", "box; rm -rf /")
    assert (record.state, record.gate) == ("refused", "allowlist")
    assert ex.audit.get(record.id) is not None
    with pytest.raises(InputError, match="unknown action"):
        ex.run("nope.nothing", "box")


def test_decision_stops_at_the_first_that_verifies(env: tuple[Executor, Clock, Path]) -> None:
    ex, _, root = env
    decision = Decision(
        [
            Candidate("test.counter", "box", {"fail_verify": True}),
            Candidate("test.counter", "box"),
            Candidate("test.counter", "box"),
        ],
        reason="disk fills in 3h",
    )
    ex.pipeline = Pipeline.model_validate(
        {
            "targets": [{"name": "box", "kind": "logdir", "path": str(root)}],
            "gates": {"test.counter": {"cooldown": "0s", "backoff_base": "0s"}},
        }
    )
    results = ex.run_decision(decision)
    assert [r.state for r in results] == ["rolled_back", "succeeded"]
    assert _count(root) == 1


def test_approval_flow(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "box", "kind": "logdir", "path": str(root)}]}
    )
    clock = Clock()
    with MetricStore(tmp_path / "a.duckdb") as store:
        ex = Executor(
            store,
            pipeline,
            _settings(tmp_path),
            clock=clock,
            sleep=lambda s: None,
            registry=REGISTRY,
        )
        pending = ex.run("test.counter", "box")
        assert pending.state == "pending_approval"
        assert pending.plan
        assert _count(root) == 0
        done = ex.approve(pending.id, "ann")
        assert (done.state, done.approved_by, _count(root)) == ("succeeded", "ann", 1)

        clock.now += timedelta(hours=2)
        second = ex.run("test.counter", "box")
        assert ex.reject(second.id, "bob").error == "refused by approval: rejected by bob"
        with pytest.raises(InputError, match="not pending"):
            ex.approve(second.id, "ann")

        clock.now += timedelta(hours=2)
        third = ex.run("test.counter", "box")
        clock.now += timedelta(hours=1, seconds=1)
        expired = ex.approve(third.id, "ann")
        assert (expired.state, expired.gate) == ("refused", "approval")
        assert _count(root) == 1  # the expired approval never executed


def test_recover_marks_running_interrupted_and_never_reapplies(
    env: tuple[Executor, Clock, Path],
) -> None:
    ex, _, root = env
    fix_id = ex.audit.create("test.counter", "box", None, {}, "t", {})
    (root / "counter").write_text("1")  # it had applied when the process died
    ex.audit.append(fix_id, "running", "apply", plan=[{"op": "add"}], facts={"n": 0})
    [record] = ex.recover()
    assert record.state == "interrupted"
    assert [e["step"] for e in record.events] == ["apply", "recover", "verify"]
    assert record.events[-1]["output"] == "n=1"
    assert _count(root) == 1
    assert ex.recover() == []


def test_manual_rollback(env: tuple[Executor, Clock, Path]) -> None:
    ex, _, root = env
    record = ex.run("test.counter", "box")
    rolled = ex.rollback(record.id, "ann")
    assert (rolled.state, _count(root)) == ("rolled_back", 0)
    with pytest.raises(InputError):
        ex.rollback(rolled.id, "ann")


# -- crash safety: a real executor process killed with SIGKILL in the middle of apply ----

_SLOW = """
import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()}\\n")
time.sleep(60)
"""


def test_sigkill_mid_apply_leaves_interrupted_not_reapplied(tmp_path: Path) -> None:
    marker = tmp_path / "applied"
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "name": "slow",
                        "kind": "command",
                        "argv": [sys.executable, "-c", _SLOW, str(marker)],
                        "check_argv": [sys.executable, "-c", "raise SystemExit(1)"],
                        "timeout": "120s",
                    }
                ]
            }
        )
    )
    env = {
        **os.environ,
        "AUTOFIX_DB_PATH": str(tmp_path / "a.duckdb"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_FIX_MODE": "auto",
        "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "q"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from autofix.cli import main; main()",
         "fix", "run", "command.run", "--target", "slow", "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline, "apply never started"
        assert proc.poll() is None, "the executor exited before applying"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    child = int(marker.read_text().split()[0])
    os.kill(child, signal.SIGKILL)  # the orphaned command: the executor died, not it

    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("AUTOFIX_")})
    from autofix.pipeline import load_pipeline

    with MetricStore(settings.db_path) as store:
        ex = Executor(store, load_pipeline(pipeline), settings)
        [record] = ex.recover()
        assert record.state == "interrupted"
        steps = [(e["state"], e["step"]) for e in record.events]
        assert steps == [
            ("running", "apply"),
            ("interrupted", "recover"),
            ("interrupted", "verify"),
        ]
        assert record.plan
        assert record.plan[0]["op"] == "run"
        assert "check exit 1" in (record.events[-1]["error"] or "")
        assert ex.audit.escalations(record.id)
        assert ex.recover() == []
    assert len(marker.read_text().split()) == 1  # applied once, never again


def test_apply_failing_partway_is_rolled_back_and_escalated(
    env: tuple[Executor, Clock, Path],
) -> None:
    ex, _, root = env
    record = ex.run("test.counter", "box", {"fail_partway": "true"})
    assert record.state == "rolled_back"
    assert _count(root) == 0  # the half-done change was undone
    assert [e["state"] for e in record.events] == ["running", "rolled_back"]
    assert "apply stopped partway: second step broke" in (record.error or "")
    escalations = ex.audit.escalations(record.id)
    assert len(escalations) == 1
    assert "partway" in escalations[0]["reason"]


def test_concurrent_requests_for_one_target_apply_once(tmp_path: Path) -> None:
    # A rule, the self-healing loop and an operator may ask at the same moment: the gates
    # must see the first fix before the second is admitted (no double restart).
    root = tmp_path / "root"
    root.mkdir()
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "box", "kind": "logdir", "path": str(root)}]}
    )
    settings = _settings(tmp_path, fix_mode="auto", fix_verify_wait="300ms")
    with MetricStore(tmp_path / "a.duckdb") as store:
        ex = Executor(store, pipeline, settings, registry=REGISTRY)  # real clock and sleep
        barrier = threading.Barrier(4)
        states: list[str] = []

        def ask() -> None:
            barrier.wait()
            states.append(ex.run("test.counter", "box", {"slow_facts": 0.2}).state)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert sorted(states) == ["refused", "refused", "refused", "succeeded"]
    assert _count(root) == 1


# -- issue 11: files fixes after a crash, failures partway, rollback attempts --------------


def _files_env(tmp_path: Path, n: int = 4) -> tuple[Path, Pipeline, Settings, dict[str, bytes]]:
    root = tmp_path / "tmpdir"
    root.mkdir()
    stamp = time.time() - 3 * 86400
    payloads = {f"f{i}.tmp": os.urandom(1000 + i) for i in range(n)}
    for name, data in payloads.items():
        (root / name).write_bytes(data)
        os.utime(root / name, (stamp, stamp))
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "tmp", "kind": "logdir", "path": str(root)}]}
    )
    return root, pipeline, _settings(tmp_path, fix_mode="auto"), payloads


class _Crash(BaseException):
    """Stands for the process dying: nothing in the executor catches it."""


def test_a_files_fix_interrupted_mid_apply_rolls_back_after_a_restart(tmp_path: Path) -> None:
    root, pipeline, settings, payloads = _files_env(tmp_path)
    moves = 0
    real_rename = os.rename

    def dying_rename(*args: Any, **kwargs: Any) -> None:
        nonlocal moves
        if re.fullmatch(r"f\d\.tmp", str(args[0])):  # a file of the fix, not the journal
            if moves == 2:
                raise _Crash
            moves += 1
        real_rename(*args, **kwargs)

    with MetricStore(tmp_path / "a.duckdb") as store:
        ex = Executor(store, pipeline, settings, sleep=lambda s: None)
        os.rename = dying_rename  # type: ignore[assignment]
        try:
            with pytest.raises(_Crash):
                ex.run("files.clean_temp", "tmp")
        finally:
            os.rename = real_rename
    assert len(list(root.iterdir())) == 2  # two files moved before the "crash"

    with MetricStore(tmp_path / "a.duckdb") as store:  # the restart
        ex = Executor(store, pipeline, settings, sleep=lambda s: None)
        [record] = ex.recover()
        assert record.state == "interrupted"
        assert len(list(root.iterdir())) == 2  # recovered, never applied again
        rolled = ex.rollback(record.id, "ann")
        assert rolled.state == "rolled_back", rolled.as_dict(events=True)
        assert rolled.output is not None
        assert rolled.output.startswith("restored 2 file(s)")
    assert {p.name: p.read_bytes() for p in root.iterdir()} == payloads


def test_a_failure_partway_of_any_kind_is_rolled_back(tmp_path: Path) -> None:
    root, pipeline, settings, payloads = _files_env(tmp_path)
    real_rename = os.rename
    calls = 0

    def failing_rename(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += bool(re.fullmatch(r"f\d\.tmp", str(args[0])))
        if calls == 3:
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "a bug, not an OSError")
        real_rename(*args, **kwargs)

    with MetricStore(tmp_path / "a.duckdb") as store:
        ex = Executor(store, pipeline, settings, sleep=lambda s: None)
        os.rename = failing_rename  # type: ignore[assignment]
        try:
            record = ex.run("files.clean_temp", "tmp")
        finally:
            os.rename = real_rename
        assert record.state == "rolled_back", record.as_dict(events=True)
        assert "after 2 of 4 steps" in (record.error or "")
    assert {p.name: p.read_bytes() for p in root.iterdir()} == payloads


def test_a_failed_rollback_attempt_keeps_the_fix_state(tmp_path: Path) -> None:
    _root, pipeline, settings, _ = _files_env(tmp_path)
    with MetricStore(tmp_path / "a.duckdb") as store:
        ex = Executor(store, pipeline, settings, sleep=lambda s: None)
        done = ex.run("files.clean_temp", "tmp")
        assert done.state == "succeeded"
        assert done.undo is not None
        import shutil

        shutil.rmtree(done.undo["quarantine"])  # purged after the TTL
        attempt = ex.rollback(done.id, "ann")
        assert attempt.state == "succeeded"
        assert "quarantine is gone" in (attempt.error or "")
        assert [e["state"] for e in attempt.events] == ["running", "succeeded", "succeeded"]
        assert ex.audit.escalations(done.id)


def test_an_unexpected_error_while_planning_is_recorded_not_left_planned(
    env: tuple[Executor, Clock, Path],
) -> None:
    ex, _, _ = env

    class Broken(Counter):
        name = "test.broken"

        def facts(self) -> Facts:
            raise re.error("nothing to repeat")

    ex.registry = {**REGISTRY, Broken.name: Broken}
    with pytest.raises(ActionError, match="unexpected error: error: nothing to repeat"):
        ex.run("test.broken", "box")
    [record] = ex.audit.list(limit=1)
    assert (record.state, record.action) == ("failed", "test.broken")
    assert ex.audit.escalations(record.id)


def test_recover_survives_a_malformed_quarantine(env: tuple[Executor, Clock, Path]) -> None:
    ex, _, _ = env
    base = ex.settings.quarantine_dir
    (base / "fix-1").mkdir(parents=True)
    (base / "fix-1" / "manifest.json").write_text("not json")
    assert ex.recover() == []
    assert any("fix-1" in reason for reason in ex.sweep_quarantines().skipped)
