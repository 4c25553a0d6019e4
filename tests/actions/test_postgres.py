"""PostgreSQL actions against the session's real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from autofix.actions.base import Context, NoOp, RefusedError
from autofix.actions.postgres import Amcheck, Reindex, TerminateIdle, Vacuum, parse_sessions
from autofix.pipeline import PostgresTarget
from tests.actions._util import eventually, run_phases


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    """A bloated table: 20,000 rows, 15,000 deleted, autovacuum off for it."""
    name = f"bloat_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE public.{name} (id int PRIMARY KEY, body text)"
            " WITH (autovacuum_enabled = false)"
        )
        conn.execute(f"CREATE INDEX {name}_body ON public.{name} (body)")
        conn.execute(
            f"INSERT INTO public.{name} SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
        )
        conn.execute(f"DELETE FROM public.{name} WHERE id % 4 <> 0")
        conn.execute("SELECT pg_stat_force_next_flush()")
    yield f"public.{name}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{name}")


def _target(dsn: str, **extra: Any) -> PostgresTarget:
    return PostgresTarget(name="db", kind="postgres", dsn=dsn, **extra)


def test_parse_sessions_recorded_rows() -> None:
    rows = [(1, "active", 100.0), (2, "idle", 30.0), (3, "idle in transaction", 120.0)]
    assert parse_sessions(rows, 60) == {
        "connections": 3,
        "idle": [{"pid": 3, "state": "idle in transaction", "idle_seconds": 120.0}],
    }


def test_terminate_idle_sessions_of_one_application(postgres_dsn: str) -> None:
    app = f"autofix-test-{uuid.uuid4().hex[:6]}"
    idle = [psycopg.connect(postgres_dsn, application_name=app) for _ in range(2)]
    in_tx = psycopg.connect(postgres_dsn, application_name=app)
    other = psycopg.connect(postgres_dsn, application_name="bystander")
    try:
        for conn in idle:
            conn.execute("SELECT 1")
            conn.commit()
        in_tx.execute("SELECT 1")  # leaves the session idle in transaction
        other.execute("SELECT 1")
        target = _target(postgres_dsn, applications=[app])
        action = TerminateIdle.bind(target, {"application": app, "idle_for": "0s"}, Context())
        before, _, check = run_phases(action)
        assert check.ok, check.reason
        assert len(before["idle"]) == 3
        assert {s["state"] for s in before["idle"]} == {"idle", "idle in transaction"}
        for conn in [*idle, in_tx]:
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        assert other.execute("SELECT 1").fetchone() == (1,)
    finally:
        for conn in [*idle, in_tx, other]:
            conn.close()


def test_terminate_idle_refuses_unlisted_application(postgres_dsn: str) -> None:
    with pytest.raises(RefusedError) as caught:
        TerminateIdle.bind(
            _target(postgres_dsn, applications=["web"]),
            {"application": "web'; DROP TABLE x; --"},
            Context(),
        )
    assert caught.value.gate == "allowlist"


def test_vacuum_drops_dead_tuples(postgres_dsn: str, table: str) -> None:
    action = Vacuum.bind(_target(postgres_dsn, tables=[table]), {"table": table}, Context())
    assert eventually(lambda: action.facts()["dead_tuples"] > 0)
    before, _, check = run_phases(action)
    assert check.ok, check.reason
    assert before["dead_tuples"] >= 10000


def test_reindex_concurrently_shrinks_bloated_index(postgres_dsn: str, table: str) -> None:
    action = Reindex.bind(_target(postgres_dsn, tables=[table]), {"table": table}, Context())
    before, _, check = run_phases(action)
    assert check.ok, check.reason
    assert action.facts()["index_bytes"] < before["index_bytes"]


def test_amcheck_passes_on_a_healthy_table(postgres_dsn: str, table: str) -> None:
    action = Amcheck.bind(_target(postgres_dsn, tables=[table]), {"table": table}, Context())
    facts = action.facts()
    steps = action.plan(facts)
    assert not isinstance(steps, NoOp)
    applied = action.apply(steps)
    assert applied.output.count(": ok") == 2
    assert action.verify(facts, action.facts()).ok


@pytest.mark.parametrize("table_name", ["public.other", "x; DROP TABLE y", "pg_catalog.pg_class"])
def test_table_must_be_allowlisted(postgres_dsn: str, table_name: str) -> None:
    with pytest.raises(RefusedError):
        Vacuum.bind(
            _target(postgres_dsn, tables=["public.allowed"]), {"table": table_name}, Context()
        )
