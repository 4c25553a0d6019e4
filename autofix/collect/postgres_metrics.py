"""A PostgreSQL target: the canary probe, then the server's statistics (postgres_exporter names).

On the probe's own connection, after the canary (outside its timing, each query under the
probe's ``statement_timeout``):

- connections: ``pg_stat_activity_count{datname,state}`` (client backends, ourselves left
  out) and their sum ``pg_connections_in_use``, both against the pool the applications
  can use — ``max_connections`` minus ``superuser_reserved_connections`` minus
  ``reserved_connections`` (PostgreSQL 16+); ``pg_stat_activity_max_tx_duration`` (the
  oldest open transaction) and ``pg_stat_activity_max_state_duration`` (how long the
  longest session has been in its state: idle in transaction …) per database and state;
- roles and databases with a ``CONNECTION LIMIT`` of their own (an application's role
  runs out long before the server does): ``pg_roles_connections{rolname}`` and
  ``pg_database_connections{datname}`` against that limit;
- ``pg_locks_waiting{datname}``: sessions waiting for a lock;
- per declared table (``tables:``): live and dead tuples, size, and the estimated bloat
  (``pg_table_bloat_bytes`` / ``_ratio``: the table's size beyond what its rows need at
  its fillfactor, from the planner's statistics; before the first ANALYZE, the dead
  tuples' share of the table);
- replication: on a standby ``pg_replication_lag_seconds`` (0 when it has replayed all
  it received); on a primary, per standby, ``pg_stat_replication_pg_wal_lsn_diff`` (bytes
  not yet replayed) and ``pg_stat_replication_replay_lag_seconds``.

A failed statistics query is logged and skipped (``pg_exporter_last_scrape_error 1``); the
probe stays up. Without ``pg_monitor`` (or ``pg_read_all_stats``) PostgreSQL hides other
roles' sessions' state: they count with ``state="unknown"`` and the total stays right.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from autofix.collect.base import Sample
from autofix.collect.probes import PostgresProbe, _reason
from autofix.targets import PostgresTarget

log = logging.getLogger(__name__)

#: States zero-filled for the target's own database (as postgres_exporter does), so a
#: count that drops to nothing reads 0 instead of going silent.
STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)

_SETTINGS_SQL = """
    SELECT current_database(),
           current_setting('max_connections')::int,
           current_setting('superuser_reserved_connections')::int,
           coalesce(current_setting('reserved_connections', true)::int, 0),
           pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
"""

_ACTIVITY_SQL = """
    SELECT coalesce(datname, ''), coalesce(state, 'unknown'), count(*)::int,
           coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8,
           coalesce(max(extract(epoch FROM now() - state_change)), 0)::float8
    FROM pg_stat_activity
    WHERE pid <> pg_backend_pid()
      AND (backend_type = 'client backend'
           -- what a role without pg_read_all_stats sees of another role's session
           OR (backend_type IS NULL AND datname IS NOT NULL AND usename IS NOT NULL))
    GROUP BY 1, 2
"""

#: Roles and databases with a connection limit of their own: an application's role hits
#: its CONNECTION LIMIT long before the server's pool is full.
_LIMITS_SQL = """
    WITH sessions AS (
        SELECT usename, datname FROM pg_stat_activity
        WHERE pid <> pg_backend_pid()
          AND (backend_type = 'client backend'
               OR (backend_type IS NULL AND datname IS NOT NULL AND usename IS NOT NULL)))
    SELECT 'role', r.rolname, r.rolconnlimit,
           (SELECT count(*) FROM sessions s WHERE s.usename = r.rolname)::int
    FROM pg_roles r WHERE r.rolconnlimit >= 0 AND r.rolcanlogin
    UNION ALL
    SELECT 'database', d.datname, d.datconnlimit,
           (SELECT count(*) FROM sessions s WHERE s.datname = d.datname)::int
    FROM pg_database d WHERE d.datconnlimit >= 0 AND d.datallowconn
"""

_LOCKS_SQL = """
    SELECT coalesce(a.datname, ''), count(DISTINCT l.pid)::int
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE NOT l.granted
    GROUP BY 1
"""

_TABLES_SQL = """
    SELECT n.nspname, c.relname,
           coalesce(s.n_live_tup, 0)::float8, coalesce(s.n_dead_tup, 0)::float8,
           pg_table_size(c.oid)::float8, pg_relation_size(c.oid)::float8,
           c.reltuples::float8, current_setting('block_size')::int,
           coalesce((SELECT substring(o FROM '^fillfactor=([0-9]+)$')::int
                     FROM unnest(c.reloptions) AS o WHERE o LIKE 'fillfactor=%%'), 100),
           (SELECT sum((1 - coalesce(st.null_frac, 0)) * coalesce(st.avg_width, 0))::float8
            FROM pg_stats st WHERE st.schemaname = n.nspname AND st.tablename = c.relname),
           (SELECT count(*)::int FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
    FROM unnest(%s::text[]) AS t(name)
    JOIN pg_class c ON c.oid = to_regclass(t.name)
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
"""

_RECOVERY_SQL = """
    SELECT pg_is_in_recovery(),
           CASE WHEN NOT pg_is_in_recovery() THEN NULL
                WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                ELSE greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()))
           END::float8
"""

_STANDBYS_SQL = """
    SELECT coalesce(application_name, ''), coalesce(host(client_addr), ''),
           coalesce(state, ''),
           pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8,
           extract(epoch FROM replay_lag)::float8
    FROM pg_stat_replication
"""

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(key: str, message: str, *args: object) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


def pool_size(max_connections: int, superuser_reserved: int, reserved: int) -> int:
    """Connections ordinary roles can open: what an application's pool runs out of.

    >>> pool_size(100, 3, 0)
    97
    """
    return max(1, max_connections - superuser_reserved - reserved)


def estimate_bloat(
    main_bytes: float,
    reltuples: float,
    row_width: float | None,
    columns: int,
    block_size: int,
    fillfactor: int,
    live: float,
    dead: float,
) -> float:
    """Bytes of a table's main fork beyond what its rows need, estimated.

    From the statistics (the classic estimate: tuple header and row width → rows per page
    at the fillfactor → pages needed) when the table has been analysed; before that, the
    dead tuples' share of the table.

    >>> estimate_bloat(8192 * 100, 1000, 100, 3, 8192, 100, 1000, 0) > 0.8 * 8192 * 100
    True
    """
    if main_bytes <= 0:
        return 0.0
    if reltuples >= 0 and row_width is not None and row_width > 0:
        header = _align(23 + math.ceil(max(columns, 1) / 8))
        tuple_bytes = header + _align(row_width) + 4  # + its line pointer
        usable = (block_size - 24) * fillfactor / 100
        per_page = max(1, math.floor(usable / tuple_bytes))
        needed = math.ceil(reltuples / per_page) * block_size
        return max(0.0, main_bytes - needed)
    rows = live + dead
    return main_bytes * dead / rows if rows > 0 else 0.0


def _align(n: float, to: int = 8) -> int:
    return int(math.ceil(n / to) * to)


class PostgresCollector(PostgresProbe):
    """The canary probe of ``PostgresProbe`` plus the statistics in the module docstring."""

    def __init__(self, target: PostgresTarget, timeout: float) -> None:
        super().__init__(target, timeout)
        self._conn: psycopg.Connection[Any] | None = None

    def _keep(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def _after(self) -> list[Sample]:
        conn, self._conn = self._conn, None
        if conn is None:
            return []
        try:
            return self._statistics(conn)
        finally:
            conn.close()

    def _statistics(self, conn: psycopg.Connection[Any]) -> list[Sample]:
        labels = {"target": self.name}
        try:
            conn.autocommit = True  # one failed query must not abort the ones after it
            timeout_ms = str(max(1, math.ceil(self.timeout * 1000)))
            conn.execute("SELECT set_config('statement_timeout', %s, false)", [timeout_ms])
            row = conn.execute(_SETTINGS_SQL).fetchone()
        except psycopg.Error as exc:
            log.warning("postgres %s: statistics unavailable: %s", self.name, _reason(exc))
            return [Sample("pg_exporter_last_scrape_error", 1.0, labels)]
        assert row is not None
        database, most, su_reserved, reserved, all_stats = row
        if not all_stats:
            _warn_once(
                f"stats:{self.name}",
                "postgres %s: the role cannot see other roles' sessions (grant it "
                "pg_monitor): their state counts as 'unknown'",
                self.name,
            )
        pool = float(pool_size(int(most), int(su_reserved), int(reserved)))
        out = [
            Sample("pg_settings_max_connections", float(most), labels, "count"),
            Sample("pg_settings_superuser_reserved_connections", float(su_reserved), labels),
            Sample("pg_settings_reserved_connections", float(reserved), labels, "count"),
        ]
        errors = 0
        parts: Sequence[Callable[[], list[Sample]]] = (
            lambda: self._activity(conn, str(database), pool),
            lambda: self._limits(conn),
            lambda: self._locks(conn, str(database)),
            lambda: self._tables(conn, str(database)),
            lambda: self._replication(conn),
        )
        for part in parts:
            try:
                out.extend(part())
            except psycopg.Error as exc:
                errors += 1
                log.warning("postgres %s: a statistics query failed: %s", self.name, _reason(exc))
        out.append(Sample("pg_exporter_last_scrape_error", 1.0 if errors else 0.0, labels))
        return out

    def _activity(self, conn: psycopg.Connection[Any], database: str, pool: float) -> list[Sample]:
        rows = conn.execute(_ACTIVITY_SQL).fetchall()
        counts: dict[tuple[str, str], tuple[float, float, float]] = {
            (database, state): (0.0, 0.0, 0.0) for state in STATES
        }
        for datname, state, count, tx_age, state_age in rows:
            counts[(str(datname), str(state))] = (float(count), float(tx_age), float(state_age))
        out = []
        total = 0.0
        for (datname, state), (count, tx_age, state_age) in sorted(counts.items()):
            labels = {"target": self.name, "datname": datname, "state": state}
            total += count
            out.append(Sample("pg_stat_activity_count", count, labels, "count", pool))
            out.append(Sample("pg_stat_activity_max_tx_duration", tx_age, labels, "seconds"))
            out.append(Sample("pg_stat_activity_max_state_duration", state_age, labels, "seconds"))
        mine = {"target": self.name}
        out.append(Sample("pg_connections_in_use", total, mine, "count", pool))
        return out

    def _limits(self, conn: psycopg.Connection[Any]) -> list[Sample]:
        out = []
        for kind, name, limit, used in conn.execute(_LIMITS_SQL).fetchall():
            key = "rolname" if kind == "role" else "datname"
            labels = {"target": self.name, key: str(name)}
            prefix = "pg_roles" if kind == "role" else "pg_database"
            capacity = float(limit) if limit > 0 else None
            out.append(Sample(f"{prefix}_connections", float(used), labels, "count", capacity))
            out.append(Sample(f"{prefix}_connection_limit", float(limit), labels, "count"))
        return out

    def _locks(self, conn: psycopg.Connection[Any], database: str) -> list[Sample]:
        waiting = {database: 0.0}
        for datname, count in conn.execute(_LOCKS_SQL).fetchall():
            waiting[str(datname)] = float(count)
        return [
            Sample("pg_locks_waiting", count, {"target": self.name, "datname": name}, "count")
            for name, count in sorted(waiting.items())
        ]

    def _tables(self, conn: psycopg.Connection[Any], database: str) -> list[Sample]:
        tables = list(self.target.tables)
        if not tables:
            return []
        rows = conn.execute(_TABLES_SQL, [tables]).fetchall()
        if len(rows) < len(tables):
            _warn_once(
                f"tables:{self.name}:{len(rows)}",
                "postgres %s: %d of the declared tables do not exist (or are not visible)",
                self.name,
                len(tables) - len(rows),
            )
        out = []
        for schema, table, live, dead, size, main, reltuples, block, ff, width, cols in rows:
            labels = {
                "target": self.name,
                "datname": database,
                "schemaname": str(schema),
                "relname": str(table),
            }
            bloat = estimate_bloat(main, reltuples, width, cols, block, ff, live, dead)
            ratio = bloat / main if main > 0 else 0.0
            out += [
                Sample("pg_stat_user_tables_n_live_tup", live, labels, "count"),
                Sample("pg_stat_user_tables_n_dead_tup", dead, labels, "count"),
                Sample("pg_stat_user_tables_table_size_bytes", size, labels, "bytes"),
                Sample("pg_table_bloat_bytes", bloat, labels, "bytes"),
                Sample("pg_table_bloat_ratio", ratio, labels, "ratio", 1.0),
            ]
        return out

    def _replication(self, conn: psycopg.Connection[Any]) -> list[Sample]:
        row = conn.execute(_RECOVERY_SQL).fetchone()
        assert row is not None
        standby, lag = row
        labels = {"target": self.name}
        out = [Sample("pg_replication_is_replica", 1.0 if standby else 0.0, labels)]
        if standby:
            if lag is not None:
                out.append(Sample("pg_replication_lag_seconds", float(lag), labels, "seconds"))
            return out
        for name, addr, state, behind, replay_lag in conn.execute(_STANDBYS_SQL).fetchall():
            if behind is None:  # hidden without pg_read_all_stats
                continue
            peer = {"target": self.name, "application_name": name, "client_addr": addr}
            peer["state"] = state
            out.append(Sample("pg_stat_replication_pg_wal_lsn_diff", float(behind), peer, "bytes"))
            # replay_lag is NULL once a standby has caught up and nothing happens.
            seconds = float(replay_lag) if replay_lag is not None else 0.0 if behind == 0 else None
            if seconds is not None:
                out.append(
                    Sample("pg_stat_replication_replay_lag_seconds", seconds, peer, "seconds")
                )
        return out
