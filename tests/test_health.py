"""Health checks of the self-healing loop, per target kind, on real processes and servers."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

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


# -- causes: why a check failed decides the fix ----------------------------------------


class _Status(BaseHTTPRequestHandler):
    status = 200
    body = b"ok"

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def status_server() -> Iterator[tuple[str, type[_Status]]]:
    handler = type("Handler", (_Status,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health", handler
    finally:
        server.shutdown()
        server.server_close()


def test_an_error_page_naming_a_dependency(status_server: tuple[str, type[_Status]]) -> None:
    url, handler = status_server
    p = _pipeline(
        {"name": "news-db", "kind": "postgres", "dsn": "postgresql:///news", "health": False},
        {"name": "cache", "kind": "redis", "url": "redis://127.0.0.1:1/0", "health": False},
        {"name": "web", "kind": "http", "url": url, "depends_on": ["news-db", "cache"]},
    )
    handler.status, handler.body = 503, b'{"error": "database unavailable"}'
    result = check_target(p.targets[2], 1.0, pipeline=p)
    assert (result.ok, result.cause, result.dependency) == (False, "dependency", "news-db")
    assert "database unavailable" in result.detail
    handler.body = b"cache: Connection refused"
    assert check_target(p.targets[2], 1.0, pipeline=p).dependency == "cache"
    handler.status, handler.body = 500, b"Internal Server Error"
    result = check_target(p.targets[2], 1.0, pipeline=p)
    assert (result.cause, result.dependency) == ("error", None)
    handler.status = 200
    assert check_target(p.targets[2], 1.0, pipeline=p).ok


def test_a_supervisor_stop_someone_started_is_planned_not_a_fault(
    supervisor: Supervisor,
) -> None:
    p = _pipeline(
        {
            "name": "demo",
            "kind": "supervisor",
            "url": supervisor.url,
            "program": supervisor.program,
            "health_url": supervisor.health_url,
        }
    )
    with xmlrpc.client.ServerProxy(supervisor.url) as rpc:
        rpc.supervisor.stopProcess(supervisor.program, True)
        try:
            stopped = check_target(p.targets[0], 1.0)
            assert (stopped.ok, stopped.cause) == (False, "planned"), stopped
            rpc.supervisor.startProcess(supervisor.program, True)
            # Running, but inside its start grace: a failing check is still the start.
            deadline = time.monotonic() + 10
            while not (result := check_target(p.targets[0], 1.0)).ok:
                assert result.cause == "planned", result
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            if rpc.supervisor.getProcessInfo(supervisor.program)["statename"] != "RUNNING":
                rpc.supervisor.startProcess(supervisor.program, True)


def test_a_superuser_probe_still_sees_pool_exhaustion(postgres_dsn: str) -> None:
    """The superuser gets in through the reserved slots; the application would not."""
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS filler")
        admin.execute("CREATE ROLE filler LOGIN PASSWORD 'filler'")
    filler = make_conninfo(postgres_dsn, user="filler", password="filler")
    p = _pipeline({"name": "db", "kind": "postgres", "dsn": postgres_dsn})
    held: list[psycopg.Connection[Any]] = []
    try:
        assert check_target(p.targets[0], 2.0).ok
        refused = ""
        while not refused:
            try:
                held.append(psycopg.connect(filler, connect_timeout=5))
            except psycopg.OperationalError as exc:
                refused = str(exc)
            assert len(held) < 500
        assert "reserved" in refused or "too many" in refused
        result = check_target(p.targets[0], 2.0)
        assert (result.ok, result.cause) == (False, "error"), result
        assert "connections exhausted" in result.detail
    finally:
        for conn in held:
            conn.close()
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute("DROP ROLE IF EXISTS filler")
    assert check_target(p.targets[0], 2.0).ok


def test_a_role_at_its_connection_limit_fails_the_servers_check(postgres_dsn: str) -> None:
    """The application's own role is full: the superuser gets in, the app does not."""
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS capped")
        admin.execute("CREATE ROLE capped LOGIN PASSWORD 'capped' CONNECTION LIMIT 2")
    app = make_conninfo(postgres_dsn, user="capped", password="capped")
    p = _pipeline(
        {"name": "db", "kind": "postgres", "dsn": postgres_dsn, "applications": ["news-web"]}
    )
    held = [psycopg.connect(app, application_name="news-web") for _ in range(2)]
    try:
        result = check_target(p.targets[0], 2.0)
        assert (result.ok, result.cause) == (False, "error"), result
        assert "role capped at its connection limit (2 of 2)" in result.detail
    finally:
        for conn in held:
            conn.close()
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute("DROP ROLE IF EXISTS capped")
    assert check_target(p.targets[0], 2.0).ok
