"""Probes against real local servers: HTTP, TCP, PostgreSQL and DuckDB files."""

from __future__ import annotations

import logging
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest

from autofix.collect.base import Sample
from autofix.collect.probes import DuckDBProbe, HttpProbe, PostgresProbe, TcpProbe
from autofix.pipeline import DuckDBTarget, HttpTarget, PostgresTarget, TcpTarget
from tests.servers import HttpServer, PostgresServer, free_port


def _values(samples: list[Sample]) -> dict[str, float]:
    names = [s.metric for s in samples]
    assert len(names) == len(set(names)), names
    for s in samples:
        assert math.isfinite(s.value)
    return {s.metric: s.value for s in samples}


def _assert_up(samples: list[Sample], target: str, kind: str) -> dict[str, float]:
    values = _values(samples)
    assert values["probe_up"] == 1.0
    assert 0 < values["probe_duration_seconds"] < 5
    for s in samples:
        assert s.labels == {"target": target, "kind": kind}
    return values


def _assert_down(samples: list[Sample]) -> dict[str, float]:
    values = _values(samples)
    assert values["probe_up"] == 0.0
    assert not any(s.unit == "seconds" for s in samples), "no latency for a failure"
    return values


# --- HTTP ---------------------------------------------------------------------------


@pytest.fixture
def http_probe(http_test_server: HttpServer) -> Iterator[HttpProbe]:
    probe = HttpProbe(
        HttpTarget(kind="http", name="web", url=f"{http_test_server.url}/ok"), timeout=0.5
    )
    yield probe
    probe.close()


def _http(server: HttpServer, path: str, timeout: float = 0.5, **kw: int) -> HttpProbe:
    return HttpProbe(HttpTarget(kind="http", name="web", url=server.url + path, **kw), timeout)


def test_http_up_on_200(http_probe: HttpProbe) -> None:
    values = _assert_up(http_probe.collect(), "web", "http")
    assert values["probe_http_status_code"] == 200
    assert http_probe.last_error is None
    _assert_up(http_probe.collect(), "web", "http")  # the client is reused


def test_http_down_on_500_keeps_the_status(
    http_test_server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    probe = _http(http_test_server, "/error")
    try:
        with caplog.at_level(logging.WARNING, logger="autofix.collect.probes"):
            values = _assert_down(probe.collect())
    finally:
        probe.close()
    assert values["probe_http_status_code"] == 500
    assert probe.last_error == "status 500, expected 200"
    assert "http probe web down: status 500, expected 200" in caplog.text


def test_http_expected_status_other_than_200(http_test_server: HttpServer) -> None:
    probe = _http(http_test_server, "/error", expect_status=500)
    try:
        assert _assert_up(probe.collect(), "web", "http")["probe_http_status_code"] == 500
    finally:
        probe.close()


def test_http_timeout_returns_in_time_without_latency(http_test_server: HttpServer) -> None:
    probe = _http(http_test_server, "/slow?s=10", timeout=0.5)
    try:
        start = time.monotonic()
        samples = probe.collect()
        elapsed = time.monotonic() - start
    finally:
        probe.close()
    assert _assert_down(samples) == {"probe_up": 0.0}
    assert elapsed < 0.5 + 1.0
    assert probe.last_error is not None
    assert probe.last_error.startswith("timed out after 0.5s")


def test_http_connection_refused() -> None:
    probe = HttpProbe(
        HttpTarget(kind="http", name="web", url=f"http://127.0.0.1:{free_port()}/"), 1.0
    )
    try:
        _assert_down(probe.collect())
    finally:
        probe.close()
    assert probe.last_error is not None
    assert probe.last_error.startswith("ConnectError")


# --- TCP ----------------------------------------------------------------------------


def test_tcp_up_on_listening_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        probe = TcpProbe(TcpTarget(kind="tcp", name="redis", host="127.0.0.1", port=port), 1.0)
        _assert_up(probe.collect(), "redis", "tcp")


def test_tcp_down_on_closed_port() -> None:
    target = TcpTarget(kind="tcp", name="redis", host="127.0.0.1", port=free_port())
    probe = TcpProbe(target, 1.0)
    _assert_down(probe.collect())
    assert probe.last_error is not None
    assert "ConnectionRefusedError" in probe.last_error


# --- PostgreSQL ---------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_up(postgres_dsn: str) -> None:
    probe = PostgresProbe(PostgresTarget(kind="postgres", name="db", dsn=postgres_dsn), 2.0)
    values = _assert_up(probe.collect(), "db", "postgres")
    assert 0 < values["probe_connect_duration_seconds"] <= values["probe_duration_seconds"]
    assert 0 < values["probe_query_duration_seconds"] <= values["probe_duration_seconds"]


@pytest.mark.postgres
def test_postgres_canary_never_commits(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS canary_t (x int)")
    canary = "INSERT INTO canary_t VALUES (1)"
    target = PostgresTarget(kind="postgres", name="db", dsn=postgres_dsn, canary=canary)
    _assert_up(PostgresProbe(target, 2.0).collect(), "db", "postgres")
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM canary_t").fetchone()
    assert row == (0,)


@pytest.mark.postgres
def test_postgres_slow_canary_hits_statement_timeout(postgres_dsn: str) -> None:
    target = PostgresTarget(
        kind="postgres", name="db", dsn=postgres_dsn, canary="SELECT pg_sleep(10)"
    )
    probe = PostgresProbe(target, 0.5)
    start = time.monotonic()
    _assert_down(probe.collect())
    assert time.monotonic() - start < 0.5 + 1.5
    assert probe.last_error is not None
    assert "statement timeout" in probe.last_error


@pytest.mark.postgres
def test_postgres_bad_password(postgres: PostgresServer) -> None:
    dsn = postgres.dsn.replace(postgres.password, "not-the-Pa55word")
    probe = PostgresProbe(PostgresTarget(kind="postgres", name="db", dsn=dsn), 2.0)
    _assert_down(probe.collect())
    assert probe.last_error is not None
    assert "password authentication failed" in probe.last_error
    assert "\n" not in probe.last_error
    assert "not-the-Pa55word" not in probe.last_error  # reasons are logged: no secrets


def test_postgres_closed_port() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=x password=y dbname=z"
    probe = PostgresProbe(PostgresTarget(kind="postgres", name="db", dsn=dsn), 2.0)
    start = time.monotonic()
    _assert_down(probe.collect())
    assert time.monotonic() - start < 3
    assert probe.last_error is not None
    assert probe.last_error.startswith("OperationalError")
    assert "Connection refused" in probe.last_error


def test_postgres_malformed_dsn_is_down_not_a_crash() -> None:
    probe = PostgresProbe(PostgresTarget(kind="postgres", name="db", dsn="host='oops"), 1.0)
    _assert_down(probe.collect())
    assert probe.last_error is not None


# --- DuckDB -------------------------------------------------------------------------


@pytest.fixture
def duck_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE t AS SELECT range AS x FROM range(10)")
    return path


def test_duckdb_up(duck_file: Path) -> None:
    target = DuckDBTarget(
        kind="duckdb", name="store", path=duck_file, canary="SELECT count(*) FROM t"
    )
    values = _assert_up(DuckDBProbe(target, 2.0).collect(), "store", "duckdb")
    assert values["probe_query_duration_seconds"] > 0


def test_duckdb_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.duckdb"
    probe = DuckDBProbe(DuckDBTarget(kind="duckdb", name="store", path=missing), 2.0)
    _assert_down(probe.collect())
    assert probe.last_error == f"{missing}: no such file"
    assert not missing.exists()  # a probe must never create the file


def test_duckdb_bad_canary(duck_file: Path) -> None:
    target = DuckDBTarget(kind="duckdb", name="store", path=duck_file, canary="SELECT nope")
    probe = DuckDBProbe(target, 2.0)
    _assert_down(probe.collect())
    assert probe.last_error is not None
    assert "nope" in probe.last_error


def test_duckdb_slow_canary_is_interrupted(duck_file: Path) -> None:
    slow = "SELECT count(*) FROM range(10000000000) a WHERE a.range % 7 = 3"
    probe = DuckDBProbe(DuckDBTarget(kind="duckdb", name="store", path=duck_file, canary=slow), 0.3)
    start = time.monotonic()
    _assert_down(probe.collect())
    assert time.monotonic() - start < 0.3 + 1.5
    assert probe.last_error == "canary query ran past 0.3s"


def test_duckdb_locked_by_another_process(duck_file: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time\n"
            "conn = duckdb.connect(sys.argv[1])\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            str(duck_file),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"ready\n"
        probe = DuckDBProbe(DuckDBTarget(kind="duckdb", name="store", path=duck_file), 2.0)
        _assert_down(probe.collect())
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    assert probe.last_error is not None
    assert probe.last_error.startswith(f"cannot open {duck_file} read-only")
    assert "lock" in probe.last_error.lower()
