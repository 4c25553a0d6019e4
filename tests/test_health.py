"""Health checks of the self-healing loop, per target kind, on real processes and servers."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autofix.health import check_all, check_target, has_check
from autofix.pipeline import Pipeline
from tests.servers import RedisServer, Supervisor, free_port


def _pipeline(*targets: dict[str, Any]) -> Pipeline:
    return Pipeline.model_validate({"targets": list(targets)})


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    (tmp_path / "sleeper.pid").write_text(f"{proc.pid}\n")
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_stopped_process_is_unhealthy(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    p = _pipeline({"name": "sl", "kind": "process", "pidfile": str(tmp_path / "sleeper.pid")})
    assert check_target(p.targets[0], 1.0).ok
    sleeper.send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        result = check_target(p.targets[0], 1.0)
        while result.ok and time.monotonic() < deadline:  # the kernel stops it asynchronously
            time.sleep(0.05)
            result = check_target(p.targets[0], 1.0)
        assert not result.ok
        assert "stopped" in result.detail
    finally:
        sleeper.send_signal(signal.SIGCONT)
    sleeper.kill()
    sleeper.wait()
    gone = check_target(p.targets[0], 1.0)
    assert not gone.ok
    assert gone.detail == "no matching process"


def test_tcp_redis_and_command_checks(redis_srv: RedisServer) -> None:
    closed = free_port()
    p = _pipeline(
        {"name": "cache", "kind": "redis", "url": redis_srv.url},
        {"name": "cache-port", "kind": "tcp", "host": "127.0.0.1", "port": redis_srv.port},
        {"name": "nothing", "kind": "tcp", "host": "127.0.0.1", "port": closed},
        {"name": "bad-redis", "kind": "redis", "url": f"redis://127.0.0.1:{closed}/0"},
        {"name": "ok-cmd", "kind": "command", "argv": ["true"], "check_argv": ["true"]},
        {"name": "bad-cmd", "kind": "command", "argv": ["true"], "check_argv": ["false"]},
        {"name": "slow-cmd", "kind": "command", "argv": ["true"], "check_argv": ["sleep", "5"]},
        {"name": "logs", "kind": "logdir", "path": "/tmp"},
        {"name": "quiet", "kind": "tcp", "host": "127.0.0.1", "port": closed, "health": False},
    )
    started = time.monotonic()
    results = {r.target: r for r in check_all(p, 0.5)}
    assert time.monotonic() - started < 3  # concurrent, each bounded by the timeout
    assert set(results) == {
        "cache", "cache-port", "nothing", "bad-redis", "ok-cmd", "bad-cmd", "slow-cmd"
    }  # fmt: skip
    assert results["cache"].ok
    assert results["cache"].detail == "PONG"
    assert results["cache-port"].ok
    assert not results["nothing"].ok
    assert not results["bad-redis"].ok
    assert results["bad-redis"].cause == "refused"
    assert results["ok-cmd"].ok
    assert not results["bad-cmd"].ok
    assert "exit 1" in results["bad-cmd"].detail
    assert not results["slow-cmd"].ok
    assert "timed out" in results["slow-cmd"].detail
    assert not has_check(p.target("logs"))  # type: ignore[arg-type]
    assert not has_check(p.target("quiet"))  # type: ignore[arg-type]


def test_supervisor_program_and_its_health_url(supervisor: Supervisor) -> None:
    p = _pipeline(
        {
            "name": "demo",
            "kind": "supervisor",
            "url": supervisor.url,
            "program": supervisor.program,
            "health_url": supervisor.health_url,
        },
        {
            "name": "ghost",
            "kind": "supervisor",
            "url": supervisor.url,
            "program": "no-such-program",
        },
    )
    demo, ghost = check_all(p, 1.0)
    assert demo.ok, demo.detail
    assert "running as pid" in demo.detail
    assert not ghost.ok
    assert "BAD_NAME" in ghost.detail


def test_a_hung_listener_fails_within_the_timeout() -> None:
    # A socket that accepts connections but never answers HTTP: a hung service.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        port = server.getsockname()[1]
        p = _pipeline({"name": "hung", "kind": "http", "url": f"http://127.0.0.1:{port}/health"})
        started = time.monotonic()
        result = check_target(p.targets[0], 0.5)
        assert time.monotonic() - started < 2
        assert not result.ok
        assert result.cause == "hang", result
    finally:
        server.close()


def test_checks_that_never_started_are_left_out_not_failed() -> None:
    # More slow-but-healthy checks than workers: those still queued at the deadline are
    # not reported unhealthy (that would get a healthy target restarted).
    slow = [
        {"name": f"slow-{i}", "kind": "command", "argv": ["true"], "check_argv": ["sleep", "0.45"]}
        for i in range(8)
    ]
    results = check_all(_pipeline(*slow), 0.5, workers=1)
    assert 3 <= len(results) < 8
    failed = [r for r in results if not r.ok]
    assert len(failed) <= 1  # at most the one running at the deadline
    assert all(r.detail == "health check hung" for r in failed)
