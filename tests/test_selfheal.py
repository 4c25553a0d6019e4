"""The service loop under real faults, job by job with an injected clock (real supervisord).

Two programs, ``a`` and ``b``, run under two real supervisord instances; each answers
``/health`` and leaks memory on ``GET /leak``. Jobs are called directly (no scheduler) on
a fresh store per test, with a clock the test moves forward where gates depend on time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import xmlrpc.client
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from autofix.config import load_settings
from autofix.executor import utcnow
from autofix.jobs import Service
from autofix.pipeline import Pipeline
from autofix.store import MetricStore
from tests.clirun import run_autofix
from tests.conftest import _under_ci
from tests.servers import ServerUnavailableError, Supervisor, supervisord_server
from tests.test_service_e2e import _DEMO

Programs = dict[str, Supervisor]


@pytest.fixture(scope="module")
def programs() -> Iterator[Programs]:
    with contextlib.ExitStack() as stack:
        out = {}
        for name in ("a", "b"):
            try:
                out[name] = stack.enter_context(
                    supervisord_server(program=name, source=_DEMO, stopwaitsecs=1)
                )
            except ServerUnavailableError as exc:
                if _under_ci():
                    pytest.fail(f"CI=true but {exc}")
                pytest.skip(str(exc))
        yield out


class Clock:
    """Real time plus an offset the test moves forward (gates see the moved time)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def _pid(sup: Supervisor) -> int:
    with xmlrpc.client.ServerProxy(sup.url) as rpc:
        return int(rpc.supervisor.getProcessInfo(sup.program)["pid"])


def _target(sup: Supervisor, **more: Any) -> dict[str, Any]:
    return {
        "name": sup.program,
        "kind": "supervisor",
        "url": sup.url,
        "program": sup.program,
        "health_url": sup.health_url,
        "start_grace": "1s",
        **more,
    }


def _service(tmp_path: Path, pipeline: dict[str, Any], clock: Clock, **env: str) -> Service:
    settings = load_settings(
        environ={
            "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
            "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
            "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "quarantine"),
            "AUTOFIX_FIX_MODE": "auto",
            "AUTOFIX_FIX_VERIFY_WAIT": "1500ms",
            "AUTOFIX_FIX_SETTLE": "1s",
            "AUTOFIX_PROBE_TIMEOUT": "1s",
            "AUTOFIX_HOSTNAME": "loop",
            **env,
        }
    )
    store = MetricStore(settings.db_path)
    return Service(settings, Pipeline.model_validate(pipeline), store, clock=clock)


@contextlib.contextmanager
def _stopped(sup: Supervisor) -> Iterator[int]:
    pid = _pid(sup)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _wait_healthy(sup: Supervisor, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(sup.health_url, timeout=1).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{sup.program} does not answer"
        time.sleep(0.1)


def test_a_refused_recovery_is_retried_once_the_cooldown_ends(
    programs: Programs, tmp_path: Path
) -> None:
    a = programs["a"]
    _wait_healthy(a)
    clock = Clock()
    target = _target(
        a,
        recovery={"after": 1, "actions": [{"action": "service.restart"}]},
        gates={"cooldown": "60s"},
    )
    service = _service(tmp_path, {"targets": [target]}, clock)
    try:
        with _stopped(a) as first:
            service.health()
        (fix,) = service.executor.audit.list(limit=10)
        assert (fix.state, fix.inputs["cause"]) == ("succeeded", "hang")
        assert _pid(a) != first
        _wait_healthy(a)

        clock.advance(10)  # inside the 60 s cooldown of that restart
        with _stopped(a) as second:
            refused = service.health()
            clock.advance(5)
            again = service.health()
            assert refused["recoveries"][0]["refused"] == "cooldown"
            assert again["recoveries"][0]["refused"] == "cooldown"
            # No fix recorded per refused try, and one escalation for the outage.
            assert len(service.executor.audit.list(limit=10)) == 1
            escalations = service.store.query("SELECT gate, reason FROM escalations")
            assert list(escalations["gate"]) == ["cooldown"]
            assert "retrying while the outage lasts" in escalations["reason"].iloc[0]

            clock.advance(60)  # the cooldown is over: the same outage gets its restart
            service.health()
        fixes = service.executor.audit.list(limit=10)
        assert [f.state for f in fixes] == ["succeeded", "succeeded"]
        assert _pid(a) != second
    finally:
        service.close()
        service.store.close()


def test_independent_targets_recover_in_parallel(programs: Programs, tmp_path: Path) -> None:
    a, b = programs["a"], programs["b"]
    for sup in (a, b):
        _wait_healthy(sup)
    recovery = {"after": 1, "actions": [{"action": "service.restart"}]}
    pipeline = {"targets": [_target(a, recovery=recovery), _target(b, recovery=recovery)]}
    service = _service(tmp_path, pipeline, Clock(), AUTOFIX_FIX_VERIFY_WAIT="2s")
    try:
        with _stopped(a), _stopped(b):
            service.health()
        spans = service.store.query(
            """SELECT f.target, min(e.ts) FILTER (WHERE e.state = 'running') AS began,
                      max(e.ts) FILTER (WHERE e.state = 'succeeded') AS ended
               FROM fixes f JOIN fix_events e USING (fix_id) GROUP BY f.target
               ORDER BY f.target"""
        )
        assert list(spans["target"]) == ["a", "b"]
        assert spans["ended"].notna().all(), spans
        one, two = spans.to_dict("records")
        # Each apply + verify takes at least the 2 s verify wait; side by side they overlap.
        assert one["began"] < two["ended"], spans
        assert two["began"] < one["ended"], spans
    finally:
        service.close()
        service.store.close()


def test_a_restarted_workers_old_series_decides_nothing(programs: Programs, tmp_path: Path) -> None:
    a = programs["a"]
    _wait_healthy(a)
    pipeline = {
        "targets": [
            _target(a),
            {
                "name": "a-proc",
                "kind": "process",
                "cmdline": f"{a.pidfile.parent}/a\\.py",
                "health": False,
            },
        ],
        "rules": [
            {
                "name": "a-memory-high",
                "when": {
                    "type": "threshold",
                    "metric": "process_resident_memory_bytes",
                    "match": {"target": "a-proc"},
                    "above": 120e6,
                },
                "actions": [{"action": "service.restart", "target": "a"}],
                "repeat": "0s",
                "mode": "auto",
            }
        ],
    }
    service = _service(tmp_path, pipeline, Clock())
    try:
        service.collect()
        httpx.get(f"{a.health_url.removesuffix('/health')}/leak", timeout=5)
        deadline = time.monotonic() + 30
        while not service.executor.audit.list(limit=10):
            assert time.monotonic() < deadline, "the leak was not decided on"
            time.sleep(0.5)
            service.collect()
            service.remediate()
        (fix,) = service.executor.audit.list(limit=10)
        assert fix.state == "succeeded", fix.as_dict(events=True)
        for _ in range(4):  # the old pid's last value is still above the threshold
            time.sleep(0.5)
            service.collect()
            service.remediate()
        decisions = service.store.query("SELECT * FROM decisions WHERE rule = 'a-memory-high'")
        assert len(decisions) == 1, decisions
        assert len(service.executor.audit.list(limit=10)) == 1
    finally:
        service.close()
        service.store.close()


def test_a_false_restart_shows_in_the_false_fix_rate(programs: Programs, tmp_path: Path) -> None:
    """A rule that restarts a healthy worker on purpose: autofix says so about itself."""
    a = programs["a"]
    _wait_healthy(a)
    pipeline = {
        "targets": [
            _target(a, health=False),
            {"name": "a-http", "kind": "http", "url": a.health_url, "health": False},
        ],
        "rules": [
            {
                "name": "restart-when-up",  # the condition holds *because* it is healthy
                "when": {
                    "type": "threshold",
                    "metric": "probe_up",
                    "match": {"target": "a-http"},
                    "above": 0.5,
                },
                "actions": [{"action": "service.restart", "target": "a"}],
                "repeat": "1h",
                "mode": "auto",
            }
        ],
    }
    service = _service(tmp_path, pipeline, Clock())
    try:
        service.collect()
        summary = service.remediate()
        assert summary["fixes"] == {"failed": 1}, summary
    finally:
        service.close()
        service.store.close()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
        "AUTOFIX_SNAPSHOT_DIR": str(tmp_path / "snapshot"),
    }
    kpis = json.loads(run_autofix(["kpi", "--json"], env).stdout)
    assert kpis["false_fix_rate"] == 1.0
    assert (kpis["judged_fixes"], kpis["ineffective_fixes"]) == (1, 1)
    assert kpis["status"]["false_fix_rate"] == "misses"
