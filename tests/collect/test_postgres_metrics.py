"""PostgresCollector against a real PostgreSQL: connections against the pool, waiting locks,
transaction ages, dead tuples and bloat of declared tables, and replication lag on a real
streaming standby (pg_basebackup of the session's server)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from autofix.collect.base import Sample
from autofix.collect.postgres_metrics import PostgresCollector, estimate_bloat, pool_size
from autofix.targets import PostgresTarget
from tests.servers import (
    PostgresServer,
    _chown_tree,
    _run_as,
    _stop,
    _wait_ready,
    find_postgres_bin,
    free_port,
)

pytestmark = pytest.mark.postgres


def _one(samples: list[Sample], metric: str, **labels: str) -> Sample:
    found = [
        s
        for s in samples
        if s.metric == metric and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (metric, labels, found)
    return found[0]


def _collect(dsn: str, timeout: float = 2.0, **kw: Any) -> list[Sample]:
    target = PostgresTarget(kind="postgres", name="db", dsn=dsn, **kw)
    return PostgresCollector(target, timeout).collect()


def _analyze(dsn: str) -> None:
    # In a session of its own: a session flushes its row counts to the statistics when
    # it ends, and an ANALYZE before that flush would be counted over by it.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE metrics_articles")


@pytest.fixture(scope="module")
def articles(postgres: PostgresServer) -> Iterator[str]:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS metrics_articles")
        conn.execute("CREATE TABLE metrics_articles (id int PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO metrics_articles "
            "SELECT i, repeat('x', 200) FROM generate_series(1, 4000) AS i"
        )
    _analyze(postgres.dsn)
    yield "public.metrics_articles"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS metrics_articles")


def test_connections_by_state_against_the_pool(postgres: PostgresServer) -> None:
    app = make_conninfo(postgres.dsn, application_name="news-web")
    with psycopg.connect(app) as idle_in_tx, psycopg.connect(app, autocommit=True):
        idle_in_tx.execute("SELECT 1")  # opens a transaction and leaves it open
        time.sleep(0.3)
        samples = _collect(postgres.dsn)
    with psycopg.connect(postgres.dsn) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int, "
            "current_setting('superuser_reserved_connections')::int"
        ).fetchone()
    assert row is not None
    pool = pool_size(row[0], row[1], 0)
    assert _one(samples, "probe_up").value == 1.0
    assert _one(samples, "pg_settings_max_connections").value == row[0]
    in_use = _one(samples, "pg_connections_in_use")
    assert in_use.capacity == pool  # max_connections minus the reserved slots
    assert in_use.value >= 2  # our two sessions; the collector leaves itself out
    idle_tx = _one(
        samples, "pg_stat_activity_count", datname="postgres", state="idle in transaction"
    )
    assert idle_tx.value >= 1
    assert idle_tx.capacity == pool
    assert _one(samples, "pg_stat_activity_count", datname="postgres", state="idle").value >= 1
    age = _one(
        samples,
        "pg_stat_activity_max_state_duration",
        datname="postgres",
        state="idle in transaction",
    )
    assert age.value >= 0.2
    tx = _one(
        samples, "pg_stat_activity_max_tx_duration", datname="postgres", state="idle in transaction"
    )
    assert tx.value >= age.value
    # Every state is reported for the target's database, zero when nobody is in it.
    assert _one(samples, "pg_stat_activity_count", datname="postgres", state="disabled").value == 0
    assert _one(samples, "pg_exporter_last_scrape_error").value == 0
    assert _one(samples, "pg_replication_is_replica").value == 0


def test_roles_and_databases_with_a_connection_limit(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS limited_app")
        conn.execute("CREATE ROLE limited_app LOGIN PASSWORD 'app' CONNECTION LIMIT 4")
        conn.execute("DROP DATABASE IF EXISTS limited_db")
        conn.execute("CREATE DATABASE limited_db CONNECTION LIMIT 3")
    app = make_conninfo(postgres.dsn, user="limited_app", password="app", dbname="limited_db")
    try:
        with psycopg.connect(app), psycopg.connect(app):
            samples = _collect(postgres.dsn)
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS limited_db WITH (FORCE)")
            conn.execute("DROP ROLE IF EXISTS limited_app")
    role = _one(samples, "pg_roles_connections", rolname="limited_app")
    assert (role.value, role.capacity) == (2, 4)  # the role runs out at 4, not at the pool
    assert _one(samples, "pg_roles_connection_limit", rolname="limited_app").value == 4
    db = _one(samples, "pg_database_connections", datname="limited_db")
    assert (db.value, db.capacity) == (2, 3)
    # Roles without a limit are not listed: nothing to run out of but the pool.
    assert not [s for s in samples if s.labels.get("rolname") == "autofix"]


def test_tables_dead_tuples_and_bloat(postgres: PostgresServer, articles: str) -> None:
    before = _collect(postgres.dsn, tables=[articles])
    ratio = _one(before, "pg_table_bloat_ratio", relname="metrics_articles")
    assert ratio.capacity == 1.0
    assert ratio.value < 0.25  # freshly loaded: the rows fill the pages
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM metrics_articles WHERE id % 2 = 0")
    _analyze(postgres.dsn)
    labels = {"schemaname": "public", "relname": "metrics_articles", "datname": "postgres"}
    deadline = time.monotonic() + 10
    while True:  # the cumulative statistics reach the view a moment after the commit
        after = _collect(postgres.dsn, tables=[articles])
        dead = _one(after, "pg_stat_user_tables_n_dead_tup", **labels).value
        live = _one(after, "pg_stat_user_tables_n_live_tup", **labels).value
        if (dead, live) == (2000, 2000) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (dead, live) == (2000, 2000)
    assert _one(after, "pg_stat_user_tables_table_size_bytes", **labels).value > 8192
    bloat = _one(after, "pg_table_bloat_ratio", **labels)
    assert 0.35 < bloat.value < 0.65  # half the rows are gone, the pages are not
    assert _one(after, "pg_table_bloat_bytes", **labels).value > 0


def test_waiting_locks_and_a_failed_query_leave_the_probe_up(
    postgres: PostgresServer, articles: str
) -> None:
    holder = psycopg.connect(postgres.dsn)
    holder.execute(f"LOCK TABLE {articles} IN ACCESS EXCLUSIVE MODE")
    blocked_done = threading.Event()

    def blocked() -> None:
        with contextlib.suppress(psycopg.Error), psycopg.connect(postgres.dsn) as conn:
            conn.execute(f"SELECT count(*) FROM {articles}")
        blocked_done.set()

    thread = threading.Thread(target=blocked)
    thread.start()
    try:
        time.sleep(0.5)
        # The table statistics wait for the lock too and hit the statement timeout.
        samples = _collect(postgres.dsn, tables=[articles], timeout=1.0)
    finally:
        holder.rollback()
        holder.close()
        thread.join(10)
    assert blocked_done.is_set()
    assert _one(samples, "probe_up").value == 1.0
    assert _one(samples, "pg_locks_waiting", datname="postgres").value >= 1
    assert _one(samples, "pg_exporter_last_scrape_error").value == 1.0
    assert not [s for s in samples if s.metric.startswith("pg_table_bloat")]
    assert _one(samples, "pg_connections_in_use").capacity is not None  # the rest is there


def test_a_role_without_pg_monitor_sees_others_as_unknown(postgres: PostgresServer) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS stats_reader")
        conn.execute("CREATE ROLE stats_reader LOGIN PASSWORD 'reader'")
    reader = make_conninfo(postgres.dsn, user="stats_reader", password="reader")
    try:
        with psycopg.connect(postgres.dsn) as other:
            other.execute("SELECT 1")  # idle in transaction, as another role
            blind = _collect(reader)
            with psycopg.connect(postgres.dsn, autocommit=True) as conn:
                conn.execute("GRANT pg_monitor TO stats_reader")
            seeing = _collect(reader)
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("DROP ROLE IF EXISTS stats_reader")
    assert _one(blind, "pg_stat_activity_count", state="unknown").value >= 1
    assert _one(seeing, "pg_stat_activity_count", state="idle in transaction").value >= 1
    # The total is the same either way: the pool fills whoever can see it.
    assert _one(blind, "pg_connections_in_use").value >= 1
    assert _one(seeing, "pg_connections_in_use").value >= 1


def test_estimate_bloat_before_and_after_analyze() -> None:
    block = 8192
    # 1000 rows of 100 bytes at fillfactor 100 need ~16 pages; 100 pages are mostly bloat.
    bloat = estimate_bloat(100 * block, 1000, 100, 2, block, 100, 1000, 0)
    assert 0.8 * 100 * block < bloat < 0.9 * 100 * block
    # Never analysed (reltuples -1, no pg_stats): the dead tuples' share.
    assert estimate_bloat(100 * block, -1, None, 2, block, 100, 300, 100) == 25 * block
    assert estimate_bloat(0, 10, 10, 1, block, 100, 10, 10) == 0.0


# --- replication: a real streaming standby ---------------------------------------


@pytest.fixture(scope="module")
def standby(postgres: PostgresServer) -> Iterator[str]:
    """A hot standby of the session server, streaming from it; yields its DSN."""
    bindir = find_postgres_bin()
    owner = _run_as()
    base = Path(tempfile.mkdtemp(prefix="autofix-standby-"))
    _chown_tree(base, owner)
    uid, gid = owner if owner is not None else (None, None)
    groups: list[int] | None = [] if owner is not None else None
    data = base / "data"
    primary = make_conninfo(postgres.dsn, application_name="standby-1")
    done = subprocess.run(
        [
            str(bindir / "pg_basebackup"),
            "-d",
            primary,
            "-D",
            str(data),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ],
        capture_output=True,
        check=False,
        user=uid,
        group=gid,
        extra_groups=groups,
        cwd=base,
        timeout=120,
    )
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"pg_basebackup failed: {done.stderr.decode(errors='replace')[-500:]}")
    port = free_port()
    log = (base / "standby.log").open("ab")
    proc = subprocess.Popen(
        [
            str(bindir / "postgres"),
            "-D", str(data),
            "-p", str(port),
            "-k", str(postgres.socket_dir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        user=uid,
        group=gid,
        extra_groups=groups,
        cwd=base,
    )  # fmt: skip
    dsn = make_conninfo(postgres.dsn, port=str(port))
    try:
        error = _wait_ready(proc, dsn, 30)
        if error:
            pytest.fail(f"standby did not start: {error}")
        yield dsn
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def test_replication_lag_on_the_standby_and_the_primary(
    postgres: PostgresServer, standby: str
) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS replicated (x int)")
        conn.execute("INSERT INTO replicated VALUES (1)")
    deadline = time.monotonic() + 20
    while True:  # wait until the standby has replayed the insert
        with psycopg.connect(standby) as conn:
            if conn.execute("SELECT to_regclass('replicated') IS NOT NULL").fetchone() == (True,):
                break
        assert time.monotonic() < deadline, "the standby never replayed"
        time.sleep(0.2)
    on_standby = _collect(standby)
    assert _one(on_standby, "pg_replication_is_replica").value == 1.0
    lag = _one(on_standby, "pg_replication_lag_seconds")
    assert 0 <= lag.value < 20
    on_primary = _collect(postgres.dsn)
    behind = _one(on_primary, "pg_stat_replication_pg_wal_lsn_diff", application_name="standby-1")
    assert behind.value >= 0
    assert behind.labels["client_addr"] == "127.0.0.1"
    assert behind.labels["state"] == "streaming"
    assert _one(on_primary, "pg_replication_is_replica").value == 0
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE replicated")
