"""End to end: the shipped pipeline's exhaustion rules catch what runs out, in time.

A news-delivery stack on loopback — three web workers under a real supervisord, a real
PostgreSQL with a small connection pool, a real Redis with ``maxmemory`` and no eviction —
watched by the real ``Service`` on APScheduler. Its pipeline is ``pipelines/news-delivery.yaml``
rendered for this stack exactly as ``autofix demo`` renders it (``autofix.demo.pipeline``:
endpoints replaced, the clock of holds, repeats and gate windows 60 times faster, forecast
horizons real), keeping the file's three *predictive* rules for what runs out here:

- ``redis-memory-filling``: Redis filling towards maxmemory is forecast and its page
  cache dropped before a write is refused;
- ``db-connections-filling``: idle sessions filling PostgreSQL's pool are forecast and
  ended before the application is refused a connection;
- ``memory-exhaustion`` (``target: {group: web, kind: supervisor}``): one rule for the
  group restarts the one worker that leaks, before its memory limit, and no other.

The threshold backstops of the file fire at the same fill (90 %) and are left out, so
what fixes each fault here is the forecast. The host rules (cpu, disk) are left out too:
they would react to the shared test machine, not to the stack.

The tests run in order on one running service.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import yaml
from psycopg.conninfo import make_conninfo

from autofix.collect.base import parse_labels
from autofix.config import load_settings
from autofix.demo.pipeline import Endpoints, WorkerEndpoint, compressed_settings, render_pipeline
from autofix.jobs import Service, build_scheduler
from autofix.pipeline import load_pipeline
from autofix.store import MetricStore
from tests.conftest import _under_ci
from tests.servers import (
    ServerUnavailableError,
    _terminate,
    _which,
    free_port,
    postgres_server,
    redis_server,
)

pytestmark = pytest.mark.postgres

SHIPPED = Path(__file__).parents[1] / "pipelines" / "news-delivery.yaml"
RULES = ("redis-memory-filling", "db-connections-filling", "memory-exhaustion")
MiB = 2**20
MAXMEMORY = 32 * MiB
MAX_CONNECTIONS = 43  # 40 for the applications, 3 reserved for superusers
WORKER_LIMIT = 160 * MiB  # each test worker's memory_limit
WORKERS = ("web-1", "web-2", "web-3")

_WORKER = """
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

name, port = sys.argv[1], int(sys.argv[2])
leak = []
leaking = threading.Event()

def block(mib):
    chunk = bytearray(mib * 2**20)
    chunk[::4096] = b"\\x01" * len(chunk[::4096])  # touched: resident
    return chunk

def grow():
    while True:
        if leaking.is_set() and len(leak) < 150:
            leak.append(block(3))  # 3 MiB/s
        time.sleep(1.0)

threading.Thread(target=grow, daemon=True).start()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/leak" and not leaking.is_set():
            leak.append(block(80))  # a cache that never evicts, then a steady leak
            leaking.set()
        body = name.encode()
        self.send_response(200 if self.path in ("/health", "/leak") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        return

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@dataclass
class Stack:
    service: Service
    store: MetricStore
    supervisor_url: str
    ports: dict[str, int]
    redis_url: str
    admin_dsn: str
    app_dsn: str
    notes: list[str] = field(default_factory=list)

    def pid(self, worker: str) -> int:
        with xmlrpc.client.ServerProxy(self.supervisor_url) as rpc:
            return int(rpc.supervisor.getProcessInfo(worker)["pid"])

    def fixes(self) -> list[Any]:
        return self.service.executor.audit.list(limit=500)

    def wait_for_fix(self, action: str, target: str, rule: str, timeout: float = 120) -> Any:
        """The first finished fix of ``action`` on ``target`` that ``rule`` asked for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.fixes():
                if (
                    record.action == action
                    and record.target == target
                    and record.requested_by == f"rule:{rule}"
                    and record.state not in {"running", "planned", "pending_approval"}
                ):
                    return record
            time.sleep(0.3)
        raise AssertionError(
            f"no finished {action} on {target} within {timeout}s; fixes: "
            f"{[(r.id, r.action, r.target, r.state, r.gate, r.error) for r in self.fixes()]}; "
            f"decisions: {self.store.query('SELECT rule, target, mode, reason FROM decisions')}"
        )

    def series(self, metric: str) -> list[tuple[dict[str, str], float | None]]:
        frame = self.store.query(
            "SELECT labels, capacity FROM series WHERE metric = ? AND host = 'limits'", [metric]
        )
        return [
            (parse_labels(labels), None if capacity != capacity else float(capacity))
            for labels, capacity in frame.itertuples(index=False)
        ]


@contextlib.contextmanager
def _supervisord(base: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """A real supervisord running the three workers; (its XML-RPC URL, worker → port)."""
    binary = _which("supervisord", "supervisor")
    rpc_port = free_port()
    ports = {name: free_port() for name in WORKERS}
    (base / "worker.py").write_text(_WORKER)
    programs = "".join(
        f"""
[program:{name}]
command = {sys.executable} {base}/worker.py {name} {port}
autostart = true
autorestart = true
startsecs = 1
stopwaitsecs = 2
"""
        for name, port in ports.items()
    )
    (base / "supervisord.conf").write_text(
        f"""[inet_http_server]
port = 127.0.0.1:{rpc_port}

[supervisord]
nodaemon = true
logfile = {base}/supervisord.log
pidfile = {base}/supervisord.pid
childlogdir = {base}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
{programs}"""
    )
    proc = subprocess.Popen(
        [binary, "-n", "-c", str(base / "supervisord.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=base,
    )
    url = f"http://127.0.0.1:{rpc_port}/RPC2"
    try:
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError, xmlrpc.client.Fault),
                xmlrpc.client.ServerProxy(url) as rpc,
            ):
                states = {p["name"]: p["statename"] for p in rpc.supervisor.getAllProcessInfo()}
                if all(states.get(name) == "RUNNING" for name in WORKERS):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("supervisord did not start the workers")
            time.sleep(0.1)
        for port in ports.values():
            _until(lambda p=port: _answers(f"http://127.0.0.1:{p}/health"), 20, "a worker")
        yield url, ports
    finally:
        _terminate(proc, timeout=15)


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _pipeline(base: Path, endpoints: Endpoints) -> Any:
    rendered = render_pipeline(SHIPPED, endpoints, speedup=60)
    doc = rendered.document
    doc["rules"] = [r for r in doc["rules"] if r["name"] in RULES]
    assert sorted(r["name"] for r in doc["rules"]) == sorted(RULES), "a rule left the file"
    for target in doc["targets"]:
        if target["kind"] == "supervisor":
            target["memory_limit"] = WORKER_LIMIT  # the test workers' budget
    doc["jobs"]["snapshot"] = {"every": "1h", "enabled": False}
    return rendered.write(base / "pipeline.yaml")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="autofix-limits-"))
    try:
        with contextlib.ExitStack() as servers:
            try:
                pg = servers.enter_context(
                    postgres_server(settings={"max_connections": str(MAX_CONNECTIONS)})
                )
                cache = servers.enter_context(redis_server())
                sup_url, ports = servers.enter_context(_supervisord(base))
            except ServerUnavailableError as exc:
                if _under_ci():
                    pytest.fail(f"CI=true but {exc}")
                pytest.skip(str(exc))
            yield from _service(base, pg.dsn, cache.url, sup_url, ports)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _service(
    base: Path, admin_dsn: str, redis_url: str, sup_url: str, ports: dict[str, int]
) -> Iterator[Stack]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE news LOGIN PASSWORD 'news'")
        conn.execute(
            "CREATE TABLE articles (id serial PRIMARY KEY, published_at timestamptz, body text)"
        )
        conn.execute("INSERT INTO articles (published_at, body) VALUES (now(), 'hello')")
    with redis.Redis.from_url(redis_url) as client:
        client.config_set("maxmemory", MAXMEMORY)
        client.config_set("maxmemory-policy", "noeviction")
    (base / "logs").mkdir()
    endpoints = Endpoints(
        supervisor_url=sup_url,
        workers=[
            WorkerEndpoint(name, name, f"http://127.0.0.1:{port}/health", rf"worker\.py {name} ")
            for name, port in ports.items()
        ],
        postgres_dsn=admin_dsn,
        redis_url=redis_url,
        logs=base / "logs",
        logs_quota=64e6,
        scratch=base / "dirs",
    )
    pipeline = _pipeline(base, endpoints)
    settings = load_settings(
        environ={
            **compressed_settings(60),
            "AUTOFIX_DB_PATH": str(base / "autofix.duckdb"),
            "AUTOFIX_MODELS_DIR": str(base / "models"),
            "AUTOFIX_QUARANTINE_DIR": str(base / "quarantine"),
            # Generous: this machine is shared; a health answer is "slow" past half of it.
            "AUTOFIX_PROBE_TIMEOUT": "3s",
            "AUTOFIX_COLLECT_TIMEOUT": "5s",
            "AUTOFIX_HOSTNAME": "limits",
        }
    )
    store = MetricStore(settings.db_path)
    service = Service(settings, pipeline, store)
    scheduler = build_scheduler(service)
    scheduler.start()
    app_dsn = make_conninfo(admin_dsn, user="news", password="news")
    try:
        # The first remediate run loads the forecaster (MLflow): let it finish before any
        # fault, as a service that has been running for a while has.
        _until(lambda: service.runs["remediate"] >= 2, 180, "two remediate runs")
        yield Stack(service, store, sup_url, ports, redis_url, admin_dsn, app_dsn)
    finally:
        scheduler.shutdown(wait=True)
        service.close()
        store.close()


# -- 1. what is collected ---------------------------------------------------------------


def test_each_metric_appears_with_its_capacity(stack: Stack) -> None:
    wanted = (
        "redis_memory_used_bytes",
        "redis_connected_clients",
        "redis_keys_count",
        "redis_evicted_keys_total",
        "redis_expired_keys_total",
        "pg_connections_in_use",
        "pg_stat_activity_count",
        "pg_stat_activity_max_tx_duration",
        "pg_stat_activity_max_state_duration",
        "pg_locks_waiting",
        "pg_stat_user_tables_n_dead_tup",
        "pg_table_bloat_ratio",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_restarts_total",
    )
    _until(lambda: all(stack.series(m) for m in wanted), 30, f"every one of {wanted}")
    [(labels, capacity)] = stack.series("redis_memory_used_bytes")
    assert (labels, capacity) == ({"target": "cache"}, MAXMEMORY)
    [(_, clients)] = stack.series("redis_connected_clients")
    assert clients == 10_000  # maxclients
    assert {labels["key"] for labels, _ in stack.series("redis_keys_count")} == {"page:*"}
    pool = MAX_CONNECTIONS - 3
    assert stack.series("pg_connections_in_use") == [({"target": "news-db"}, pool)]
    assert {c for _, c in stack.series("pg_stat_activity_count")} == {pool}
    [(table, _)] = stack.series("pg_stat_user_tables_n_dead_tup")
    assert table["relname"] == "articles"  # the target's declared table
    assert {c for _, c in stack.series("pg_table_bloat_ratio")} == {1.0}
    rss = stack.series("process_resident_memory_bytes")
    by_worker = {labels["target"]: capacity for labels, capacity in rss}
    assert {by_worker[w] for w in WORKERS} == {WORKER_LIMIT}  # each worker's own limit
    fds = [c for labels, c in stack.series("process_open_fds") if labels["target"] in WORKERS]
    assert fds
    assert all(c is not None and c > 0 for c in fds)  # the soft RLIMIT_NOFILE
    restarts = {labels["target"] for labels, _ in stack.series("process_restarts_total")}
    assert set(WORKERS) <= restarts


# -- 2. Redis memory ----------------------------------------------------------------------


class _CacheWriter:
    """An application's page cache: a quick warm-up to 75 % of maxmemory, then +0.8 % of
    maxmemory a second — at that pace Redis would refuse writes 31 s later."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.errors: list[str] = []
        self.written = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cache-writer", daemon=True)

    def _run(self) -> None:
        value = b"x" * 2048
        with redis.Redis.from_url(self.url, socket_timeout=5) as client:
            start = time.monotonic()
            while not self.stop.is_set():
                elapsed = time.monotonic() - start
                goal = MAXMEMORY * min(1.0, 0.75 + 0.008 * elapsed)
                used = int(client.info("memory")["used_memory"])
                pipe = client.pipeline(transaction=False)
                batch = max(0, min(500, int((goal - used) / 2200)))
                for _ in range(batch):
                    pipe.set(f"page:{self.written}", value)
                    self.written += 1
                try:
                    pipe.execute()
                except redis.ResponseError as exc:  # OOM command not allowed
                    self.errors.append(str(exc))
                time.sleep(0.1)


def test_redis_filling_is_forecast_and_fixed_before_writes_fail(stack: Stack) -> None:
    writer = _CacheWriter(stack.redis_url)
    writer.thread.start()
    try:
        record = stack.wait_for_fix("redis.delete_keys", "cache", "redis-memory-filling")
    finally:
        writer.stop.set()
        writer.thread.join(10)
    assert record.state == "succeeded", record.as_dict(events=True)
    assert writer.errors == []  # no write was ever refused
    decision = stack.store.query(
        "SELECT kind, reason FROM decisions WHERE rule = 'redis-memory-filling'"
    )
    assert "exhaustion" in set(decision["kind"]), decision
    assert record.output.startswith("deleted ")
    # Verified by the condition itself, re-read from Redis: the fill came down.
    assert "redis_memory_used_bytes fill" in (record.reason or ""), record.reason
    with redis.Redis.from_url(stack.redis_url) as client:
        client.flushdb()


# -- 3. PostgreSQL connections ----------------------------------------------------------


class _SessionLeak:
    """An application that opens 32 sessions, then leaks one idle session every 2.5 s."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.sessions: list[psycopg.Connection[Any]] = []
        self.refused: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="session-leak", daemon=True)

    def _open(self) -> None:
        try:
            self.sessions.append(
                psycopg.connect(self.dsn, application_name="news-web", connect_timeout=5)
            )
        except psycopg.OperationalError as exc:
            self.refused.append(" ".join(str(exc).split()))

    def _run(self) -> None:
        for _ in range(32):
            self._open()
        while not self.stop.wait(2.5):
            self._open()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for conn in self.sessions:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def test_idle_sessions_are_ended_before_the_application_is_refused(stack: Stack) -> None:
    leak = _SessionLeak(stack.app_dsn)
    leak.thread.start()
    try:
        record = stack.wait_for_fix("postgres.terminate_idle", "news-db", "db-connections-filling")
        assert record.state == "succeeded", record.as_dict(events=True)
        assert leak.refused == []  # the application never met a full pool
    finally:
        leak.close()
    psycopg.connect(stack.app_dsn, connect_timeout=5).close()
    with psycopg.connect(stack.admin_dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'news-web'"
        ).fetchone()
    assert row is not None
    assert row[0] < 0.5 * (MAX_CONNECTIONS - 3)


# -- 4. a leaking worker among three ----------------------------------------------------


def test_only_the_leaking_worker_is_restarted_by_one_group_rule(stack: Stack) -> None:
    before = {name: stack.pid(name) for name in WORKERS}
    done = {r.id for r in stack.fixes()}
    httpx.get(f"http://127.0.0.1:{stack.ports['web-2']}/leak", timeout=5)
    record = stack.wait_for_fix("service.restart", "web-2", "memory-exhaustion")
    assert record.state == "succeeded", record.as_dict(events=True)
    time.sleep(4)  # a few more remediate runs: nothing else may follow
    restarts = [
        (r.target, r.state)
        for r in stack.fixes()
        if r.id not in done and r.action == "service.restart" and r.state == "succeeded"
    ]
    assert restarts == [("web-2", "succeeded")]
    after = {name: stack.pid(name) for name in WORKERS}
    assert after["web-1"] == before["web-1"]
    assert after["web-3"] == before["web-3"]
    assert after["web-2"] != before["web-2"]
    # Restarted before it reached its limit: the old process's RSS never got there.
    peak = stack.store.query(
        """SELECT max(x.value) AS peak FROM samples x JOIN series s USING (series_id)
           WHERE s.metric = 'process_resident_memory_bytes' AND s.labels = ?""",
        [f'{{"pid":"{before["web-2"]}","target":"web-2"}}'],
    )["peak"].iloc[0]
    assert 100 * MiB < peak < WORKER_LIMIT
    decided = stack.store.query(
        "SELECT DISTINCT target FROM decisions WHERE rule = 'memory-exhaustion'"
    )
    assert set(decided["target"]) == {"web-2"}
    # One rule in the file for every worker; the pipeline holds it once.
    assert [r.name for r in stack.service.pipeline.rules].count("memory-exhaustion") == 1


def test_the_shipped_file_declares_the_dependencies() -> None:
    shipped = load_pipeline(SHIPPED)
    web = shipped.target("web")
    assert web is not None
    assert set(web.depends_on) == {"news-db", "cache"}
    rules = {rule.name: rule for rule in shipped.rules}
    assert rules["memory-exhaustion"].target is not None
    assert rules["memory-exhaustion"].target.group == "web"
    raw = yaml.safe_load(SHIPPED.read_text())
    assert all(r.get("mode") == "auto" for r in raw["rules"] if r["name"] in RULES)
