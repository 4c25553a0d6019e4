"""process.* against real processes: TERM → KILL escalation, supervised restart, SIGHUP."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest

from autofix.actions.base import Context
from autofix.actions.process import ReloadConfig, RestartWorker, SignalProcess, parse_pidfile
from autofix.pipeline import ProcessTarget
from tests.actions._util import eventually, run_phases
from tests.servers import Supervisor

_STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture
def stubborn() -> Iterator[tuple[subprocess.Popen[str], str]]:
    marker = f"autofix-stubborn-{uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _STUBBORN, marker], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    try:
        yield proc, marker
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_parse_pidfile() -> None:
    assert parse_pidfile("123\n") == 123
    assert parse_pidfile("") is None
    assert parse_pidfile("12; rm -rf /") is None


def test_term_escalates_to_kill(stubborn: tuple[subprocess.Popen[str], str]) -> None:
    proc, marker = stubborn
    target = ProcessTarget(name="w", kind="process", cmdline=marker)
    action = SignalProcess.bind(target, {"grace": "0.5s"}, Context())
    # The killed child is a zombie until reaped; psutil then no longer lists it.
    before = action.facts()
    assert [p["pid"] for p in before["processes"]] == [proc.pid]
    steps = action.plan(before)
    applied = action.apply(steps)  # type: ignore[arg-type]
    assert f"pid {proc.pid}: sent SIGKILL" in applied.output
    assert proc.wait(timeout=5) == -9
    assert action.verify(before, action.facts()).ok


def test_restart_supervised_worker_by_pidfile(supervisor: Supervisor) -> None:
    target = ProcessTarget(name="demo", kind="process", pidfile=supervisor.pidfile)
    action = RestartWorker.bind(target, {"grace": "5s"}, Context())
    before, _, check = run_phases(action, wait=15)
    assert check.ok, check.reason
    assert eventually(lambda: httpx.get(supervisor.health_url, timeout=2).is_success)
    with httpx.Client(timeout=5) as client:
        assert client.get(supervisor.health_url).json()["pid"] != before["processes"][0]["pid"]


def test_reload_by_sighup_keeps_the_process(supervisor: Supervisor) -> None:
    assert eventually(lambda: supervisor.pidfile.exists())
    target = ProcessTarget(name="demo", kind="process", pidfile=supervisor.pidfile)
    with httpx.Client(timeout=5) as client:
        assert eventually(lambda: client.get(supervisor.health_url).is_success)
        reloads = client.get(supervisor.health_url).json()["reloads"]
        action = ReloadConfig.bind(target, {}, Context())
        _, _, check = run_phases(action)
        assert check.ok, check.reason
        assert eventually(
            lambda: client.get(supervisor.health_url).json()["reloads"] == reloads + 1
        )


def test_hostile_cmdline_pattern_is_only_a_regex() -> None:
    target = ProcessTarget(name="w", kind="process", cmdline="$(rm -rf /); `id`")
    action = SignalProcess.bind(target, {}, Context())
    assert action.facts() == {"processes": []}
