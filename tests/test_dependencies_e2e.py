"""End to end: the loop fixes the cause, not the symptom (real PostgreSQL and supervisord).

A web app under a real supervisord answers ``/health`` by querying a real PostgreSQL as
its own role (``news``, at most 4 connections), and says ``503 database unavailable``
when it cannot. The pipeline declares ``web`` ``depends_on: [news-db-app]`` (the
database as the app's role sees it). The scheduled loop runs with 1-second jobs.

The tests in this module run in order on one running service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo

from autofix.config import load_settings
from autofix.jobs import Service, build_scheduler
from autofix.pipeline import load_pipeline
from autofix.store import MetricStore
from tests.conftest import _under_ci
from tests.servers import PostgresServer, ServerUnavailableError, supervisord_server

pytestmark = pytest.mark.postgres

_APP = """
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import psycopg

port, pidfile = int(sys.argv[1]), sys.argv[2]
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with psycopg.connect(%(dsn)r, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            status, body = 200, b"ok"
        except psycopg.Error as exc:
            status, body = 503, ("database unavailable: %%s" %% exc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        return

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

ROLE_LIMIT = 4


@dataclass
class Stack:
    service: Service
    store: MetricStore
    supervisor_url: str
    web_url: str
    app_dsn: str

    def pid(self) -> int:
        with xmlrpc.client.ServerProxy(self.supervisor_url) as rpc:
            return int(rpc.supervisor.getProcessInfo("web")["pid"])

    def fixes(self) -> list[Any]:
        return self.service.executor.audit.list(limit=500)

    def decisions(self, rule: str) -> list[dict[str, Any]]:
        frame = self.store.query("SELECT * FROM decisions WHERE rule = ? ORDER BY ts", [rule])
        return list(frame.to_dict("records"))


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)
    return found


@pytest.fixture(scope="module")
def stack(postgres: PostgresServer) -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="autofix-deps-"))
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS news")
        conn.execute(f"CREATE ROLE news LOGIN PASSWORD 'news' CONNECTION LIMIT {ROLE_LIMIT}")
    app_dsn = make_conninfo(postgres.dsn, user="news", password="news")
    source = _APP % {"dsn": make_conninfo(app_dsn, application_name="news-web-health")}
    try:
        sup = supervisord_server(program="web", source=source, stopwaitsecs=2)
        supervisor = sup.__enter__()
    except ServerUnavailableError as exc:
        if _under_ci():
            pytest.fail(f"CI=true but {exc}")
        pytest.skip(str(exc))
    web = supervisor.health_url.removesuffix("/health")
    _until(lambda: _status(web) == 200, 20, "the web app to answer")
    data = {
        "jobs": {
            "collect": {"every": "1s"},
            "remediate": {"every": "1s"},
            "health": {"every": "1s"},
            **{
                name: {"every": "1h", "enabled": False}
                for name in ("train", "maintenance", "report", "retention", "kpi", "snapshot")
            },
        },
        "targets": [
            {
                "name": "web",
                "kind": "supervisor",
                "url": supervisor.url,
                "program": "web",
                "health_url": f"{web}/health",
                "depends_on": ["news-db-app"],
                "start_grace": "3s",
                "recovery": {"after": 2, "actions": [{"action": "service.restart"}]},
            },
            {"name": "web-http", "kind": "http", "url": f"{web}/health", "health": False},
            {
                "name": "news-db",
                "kind": "postgres",
                "dsn": postgres.dsn,
                "applications": ["news-web"],
            },
            {"name": "news-db-app", "kind": "postgres", "dsn": app_dsn},
        ],
        "rules": [
            {
                "name": "db-app-refused",
                "when": {
                    "type": "threshold",
                    "metric": "probe_up",
                    "match": {"target": "news-db-app"},
                    "below": 1,
                    "for": "1s",
                },
                "actions": [
                    {
                        "action": "postgres.terminate_idle",
                        "target": "news-db",
                        "params": {"application": "news-web", "idle_for": "1s"},
                    }
                ],
                "repeat": "3s",
            },
            {
                "name": "web-unresponsive",
                "when": {
                    "type": "threshold",
                    "metric": "probe_up",
                    "match": {"target": "web-http"},
                    "below": 1,
                    "for": "1s",
                },
                "actions": [{"action": "service.restart", "target": "web"}],
                "repeat": "3s",
            },
        ],
    }
    file = base / "pipeline.yaml"
    file.write_text(yaml.safe_dump(data))
    settings = load_settings(
        environ={
            "AUTOFIX_DB_PATH": str(base / "autofix.duckdb"),
            "AUTOFIX_MODELS_DIR": str(base / "models"),
            "AUTOFIX_QUARANTINE_DIR": str(base / "quarantine"),
            "AUTOFIX_FIX_MODE": "auto",
            "AUTOFIX_FIX_VERIFY_WAIT": "1s",
            "AUTOFIX_FIX_COOLDOWN": "20s",
            "AUTOFIX_FIX_SETTLE": "3s",
            "AUTOFIX_FIX_OUTCOME_WINDOW": "5s",
            "AUTOFIX_PROBE_TIMEOUT": "1s",
            "AUTOFIX_COLLECT_TIMEOUT": "3s",
            "AUTOFIX_HOSTNAME": "deps",
        }
    )
    store = MetricStore(settings.db_path)
    service = Service(settings, load_pipeline(file), store)
    scheduler = build_scheduler(service)
    scheduler.start()
    try:
        yield Stack(service, store, supervisor.url, web, app_dsn)
    finally:
        scheduler.shutdown(wait=True)
        service.close()
        store.close()
        sup.__exit__(None, None, None)
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'news'"
            )
            with contextlib.suppress(psycopg.Error):
                conn.execute("DROP ROLE IF EXISTS news")
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def _status(web: str) -> int:
    try:
        return httpx.get(f"{web}/health", timeout=3).status_code
    except httpx.HTTPError:
        return 0


@contextlib.contextmanager
def _exhausted(dsn: str) -> Iterator[list[psycopg.Connection[Any]]]:
    """Every connection the app's role may open, held idle by "the app" (news-web)."""
    held: list[psycopg.Connection[Any]] = []
    deadline = time.monotonic() + 20
    try:
        while len(held) < ROLE_LIMIT:
            try:
                held.append(psycopg.connect(dsn, application_name="news-web", connect_timeout=2))
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield held
    finally:
        for conn in held:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def test_database_exhaustion_fixes_the_database_not_the_workers(stack: Stack) -> None:
    _until(lambda: stack.service.runs["remediate"] >= 2, 60, "the loop to run")
    pid = stack.pid()
    with _exhausted(stack.app_dsn):
        _until(lambda: _status(stack.web_url) == 503, 20, "the web app to answer 503")
        inhibited = _until(
            lambda: [d for d in stack.decisions("recovery:web") if d["mode"] == "inhibited"],
            60,
            "the web recovery to be inhibited",
        )
        record = _until(
            lambda: next(
                (
                    f
                    for f in stack.fixes()
                    if f.action == "postgres.terminate_idle" and f.state == "succeeded"
                ),
                None,
            ),
            60,
            "terminate_idle to free the pool",
        )
    assert "inhibited by news-db-app" in inhibited[0]["reason"]
    assert '"inhibited_by": "news-db-app"' in inhibited[0]["inputs"]
    _until(lambda: _status(stack.web_url) == 200, 20, "the web app to recover")
    time.sleep(4)  # a few more loops: nothing may restart the workers now either
    assert record.target == "news-db"
    assert [f for f in stack.fixes() if f.action == "service.restart"] == []
    assert stack.pid() == pid


def test_a_hang_during_a_degraded_database_is_restarted_at_once(stack: Stack) -> None:
    time.sleep(4)  # past the settle window of the last database fix
    before = {f.id for f in stack.fixes()}
    with _exhausted(stack.app_dsn):
        _until(lambda: _status(stack.web_url) == 503, 20, "the web app to answer 503")
        pid = stack.pid()
        os.kill(pid, signal.SIGSTOP)
        try:
            restart = _until(
                lambda: next(
                    (
                        f
                        for f in stack.fixes()
                        if f.id not in before
                        and f.action == "service.restart"
                        and f.state in {"succeeded", "failed", "rolled_back", "refused", "noop"}
                    ),
                    None,
                ),
                60,
                "the hung worker to be restarted",
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert restart.state == "succeeded", (restart.as_dict(events=True), restart.events)
    assert restart.inputs["cause"] == "hang"
    assert stack.pid() != pid


def test_a_planned_restart_gets_no_fix(stack: Stack) -> None:
    time.sleep(4)
    _until(lambda: _status(stack.web_url) == 200, 30, "the web app to be healthy")
    before = {f.id for f in stack.fixes()}
    decided = len(stack.store.query("SELECT * FROM decisions WHERE mode != 'inhibited'"))
    pid = stack.pid()
    with xmlrpc.client.ServerProxy(stack.supervisor_url) as rpc:  # `supervisorctl restart web`
        rpc.supervisor.stopProcess("web", True)
        time.sleep(1.5)
        rpc.supervisor.startProcess("web", True)
    _until(lambda: _status(stack.web_url) == 200, 20, "the web app to be back")
    time.sleep(5)
    assert stack.pid() != pid
    assert [f.as_dict() for f in stack.fixes() if f.id not in before] == []
    now = stack.store.query("SELECT * FROM decisions WHERE mode != 'inhibited'")
    assert len(now) == decided, now.tail()


def test_the_service_reports_its_own_outcomes(stack: Stack) -> None:
    from autofix.kpi import compute_kpis

    _until(
        lambda: len(stack.store.query("SELECT * FROM fix_outcomes WHERE final")) >= 2,
        30,
        "final outcomes of the fixes",
    )
    kpis = compute_kpis(stack.store, stack.service.clock())
    assert kpis.judged_fixes >= 2
    assert kpis.false_fix_rate == 0.0, kpis.as_dict()
    assert kpis.ineffective_fixes == kpis.unneeded_fixes == 0
