"""Configuration traps the manual warns about (docs/configuration-traps.md), each shown
on a real PostgreSQL.

- The DSN of a postgres target needs ``pg_monitor`` to see the application's sessions
  (else ``postgres.terminate_idle`` finds none idle) and ``pg_signal_backend`` to end
  another role's sessions (else it fails with PostgreSQL's permission error).
- A superuser's probe never sees the pool run out through a failed connect — it takes a
  reserved slot — so the health check and ``pg_connections_in_use`` compare the
  connections in use with ``max_connections`` minus the reserved ones.

(The tmpfs and maintenance traps are in tests/collect/test_host.py and
tests/test_maintenance.py.)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from autofix.actions.base import Context, NoOp
from autofix.actions.registry import ACTIONS
from autofix.collect.postgres_metrics import PostgresCollector
from autofix.errors import ActionError
from autofix.health import check_target
from autofix.targets import PostgresTarget
from tests.servers import PostgresServer, postgres_server

pytestmark = pytest.mark.postgres

MAX_CONNECTIONS = 8  # 5 for the applications, 3 reserved for superusers


@pytest.fixture(scope="module")
def small_pg() -> Iterator[PostgresServer]:
    with postgres_server(settings={"max_connections": str(MAX_CONNECTIONS)}) as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE ROLE news LOGIN PASSWORD 'news'")
            conn.execute("CREATE ROLE fixer LOGIN PASSWORD 'fixer'")
        yield server


@contextlib.contextmanager
def _idle_sessions(dsn: str, count: int) -> Iterator[list[psycopg.Connection[Any]]]:
    sessions = [psycopg.connect(dsn, application_name="news-web") for _ in range(count)]
    try:
        time.sleep(1.2)  # idle for longer than the action's idle_for
        yield sessions
    finally:
        for conn in sessions:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def _terminate_idle(dsn: str) -> Any:
    target = PostgresTarget(kind="postgres", name="news-db", dsn=dsn, applications=["news-web"])
    params = {"application": "news-web", "idle_for": "1s"}
    return ACTIONS["postgres.terminate_idle"].bind(target, params, Context(timeout=10))


def test_terminate_idle_needs_pg_monitor_and_pg_signal_backend(small_pg: PostgresServer) -> None:
    app = make_conninfo(small_pg.dsn, user="news", password="news")
    fixer = make_conninfo(small_pg.dsn, user="fixer", password="fixer")
    with _idle_sessions(app, 2):
        # No privileges: the application's sessions show no state, so none is idle.
        action = _terminate_idle(fixer)
        assert isinstance(action.plan(action.facts()), NoOp)

        with psycopg.connect(small_pg.dsn, autocommit=True) as conn:
            conn.execute("GRANT pg_monitor TO fixer")
        action = _terminate_idle(fixer)
        steps = action.plan(action.facts())
        assert not isinstance(steps, NoOp)
        assert len(steps[0].args["pids"]) == 2
        # Seeing them is not ending them: that takes pg_signal_backend.
        with pytest.raises(ActionError, match="pg_signal_backend"):
            action.apply(steps)

        with psycopg.connect(small_pg.dsn, autocommit=True) as conn:
            conn.execute("GRANT pg_signal_backend TO fixer")
        applied = _terminate_idle(fixer).apply(steps)
        assert applied.output.startswith("terminated 2 session(s)")


def test_a_superuser_probe_never_sees_the_pool_run_out(small_pg: PostgresServer) -> None:
    app = make_conninfo(small_pg.dsn, user="news", password="news")
    pool = MAX_CONNECTIONS - 3
    with _idle_sessions(app, pool):
        with pytest.raises(psycopg.OperationalError, match="reserved"):
            psycopg.connect(app, connect_timeout=3).close()  # the application is refused
        target = PostgresTarget(kind="postgres", name="news-db", dsn=small_pg.dsn)
        samples = PostgresCollector(target, 2.0).collect()
        # The superuser still connects (a reserved slot): its probe is up …
        up = next(s for s in samples if s.metric == "probe_up")
        assert up.value == 1.0
        # … so what shows the exhaustion is the count against the usable pool,
        in_use = next(s for s in samples if s.metric == "pg_connections_in_use")
        assert (in_use.value, in_use.capacity) == (pool, pool)
        # and the health check, which compares the same numbers.
        health = check_target(target, 3.0)
        assert not health.ok
        assert "connections exhausted" in health.detail
        assert "reserved" in health.detail
    assert check_target(target, 3.0).ok
