"""PostgreSQL: terminate idle sessions of one application, VACUUM ANALYZE, REINDEX, amcheck.

Tables and applications come from the target's allowlists (``tables``, ``applications``);
identifiers reach SQL only through ``psycopg.sql.Identifier``, values only as parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from pydantic import Field

from autofix.actions.base import Action, Applied, Check, Facts, NoOp, Params, Plan, Step
from autofix.config import Duration
from autofix.errors import ActionError, RefusedError
from autofix.targets import PostgresTarget

_IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")

_SESSIONS_SQL = """
    SELECT pid, state, extract(epoch FROM now() - state_change)::float8 AS idle_seconds
    FROM pg_stat_activity
    WHERE application_name = %s AND pid <> pg_backend_pid() AND datname = current_database()
    ORDER BY pid
"""

_TERMINATE_SQL = """
    SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE pid = ANY(%s) AND application_name = %s AND state = ANY(%s)
      AND state_change < now() - make_interval(secs => %s)
"""


def parse_sessions(rows: Sequence[tuple[Any, ...]], idle_for: float) -> dict[str, Any]:
    """Sessions of an application → total and the idle ones older than ``idle_for`` s."""
    idle = [
        {"pid": int(pid), "state": state, "idle_seconds": round(float(seconds or 0), 3)}
        for pid, state, seconds in rows
        if state in _IDLE_STATES and float(seconds or 0) >= idle_for
    ]
    return {"connections": len(rows), "idle": idle}


def split_table(name: str) -> sql.Composable:
    """``schema.table`` or ``table`` as a quoted identifier."""
    return sql.Identifier(*name.split(".", 1))


class _PgAction(Action[Any, PostgresTarget]):
    target_kinds = (PostgresTarget,)

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with psycopg.connect(
                self.target.dsn, autocommit=True, connect_timeout=5, application_name="autofix"
            ) as conn:
                conn.execute(
                    "SELECT set_config('statement_timeout', %s, false)",
                    [f"{int(self.ctx.timeout * 1000)}"],
                )
                yield conn
        except psycopg.Error as exc:
            raise ActionError(f"postgres {self.target.name}: {exc}".strip()) from exc

    def authorize(self) -> None:
        table = getattr(self.params, "table", None)
        if table is not None and table not in self.target.tables:
            raise RefusedError(
                "allowlist", f"table {table!r} is not in tables of {self.target.name!r}"
            )


class TerminateIdleParams(Params):
    application: str = Field(description="application_name; must be in the target's applications.")
    idle_for: Duration = Field(timedelta(minutes=10), description="Only sessions idle this long.")


class TerminateIdle(_PgAction):
    name = "postgres.terminate_idle"
    summary = "Terminate idle / idle-in-transaction sessions of one application older than N."
    params_model = TerminateIdleParams
    idempotent = True

    def authorize(self) -> None:
        if self.params.application not in self.target.applications:
            raise RefusedError(
                "allowlist",
                f"application {self.params.application!r} is not in applications of "
                f"{self.target.name!r}",
            )

    def facts(self) -> Facts:
        with self.connect() as conn:
            rows = conn.execute(_SESSIONS_SQL, [self.params.application]).fetchall()
        return parse_sessions(rows, self.params.idle_for.total_seconds())

    def plan(self, facts: Facts) -> Plan:
        if not facts["idle"]:
            return NoOp(f"no idle session of {self.params.application!r} older than the limit")
        pids = [s["pid"] for s in facts["idle"]]
        return [
            Step(
                "terminate", f"pg_terminate_backend on {len(pids)} idle session(s)", {"pids": pids}
            )
        ]

    def apply(self, steps: Sequence[Step]) -> Applied:
        pids = [int(p) for step in steps for p in step.args["pids"]]
        # The WHERE re-checks the condition: a session that became active meanwhile lives.
        with self.connect() as conn:
            rows = conn.execute(
                _TERMINATE_SQL,
                [
                    pids,
                    self.params.application,
                    list(_IDLE_STATES),
                    self.params.idle_for.total_seconds(),
                ],
            ).fetchall()
        done = [int(pid) for pid, ok in rows if ok]
        return Applied(f"terminated {len(done)} session(s): {done}")

    def verify(self, before: Facts, after: Facts) -> Check:
        still = {s["pid"] for s in after["idle"]} & {s["pid"] for s in before["idle"]}
        if still:
            return Check(False, f"session(s) {sorted(still)} still there")
        return Check(True, f"connections {before['connections']} -> {after['connections']}")


class TableParams(Params):
    table: str = Field(description="schema.table; must be in the target's tables.")


_TABLE_STATS_SQL = """
    SELECT coalesce(s.n_dead_tup, 0), coalesce(s.n_live_tup, 0),
           pg_table_size(c.oid), pg_indexes_size(c.oid)
    FROM pg_class c LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
    WHERE c.oid = to_regclass(%s)
"""


class _TableAction(_PgAction):
    def facts(self) -> Facts:
        with self.connect() as conn:
            row = conn.execute(_TABLE_STATS_SQL, [self.params.table]).fetchone()
        if row is None:
            raise ActionError(f"table {self.params.table!r} does not exist")
        dead, live, size, index_size = (int(v) for v in row)
        return {
            "dead_tuples": dead,
            "live_tuples": live,
            "table_bytes": size,
            "index_bytes": index_size,
        }


class VacuumParams(TableParams):
    analyze: bool = Field(True, description="VACUUM (ANALYZE).")
    min_dead_tuples: int = Field(1, ge=0, description="Do nothing with fewer dead tuples.")


class Vacuum(_TableAction):
    name = "postgres.vacuum"
    summary = "VACUUM (ANALYZE) one allowlisted table; verify = dead tuples dropped."
    params_model = VacuumParams

    def plan(self, facts: Facts) -> Plan:
        if facts["dead_tuples"] < max(self.params.min_dead_tuples, 1):
            return NoOp(
                f"{self.params.table}: {facts['dead_tuples']} dead tuple(s), nothing to vacuum"
            )
        verb = "VACUUM (ANALYZE)" if self.params.analyze else "VACUUM"
        return [Step("vacuum", f"{verb} {self.params.table} ({facts['dead_tuples']} dead tuples)")]

    def apply(self, steps: Sequence[Step]) -> Applied:
        options = sql.SQL("(ANALYZE) ") if self.params.analyze else sql.SQL("")
        with self.connect() as conn:
            conn.execute(sql.SQL("VACUUM {}{}").format(options, split_table(self.params.table)))
        return Applied(f"vacuumed {self.params.table}")

    def verify(self, before: Facts, after: Facts) -> Check:
        if after["dead_tuples"] < before["dead_tuples"]:
            return Check(True, f"dead tuples {before['dead_tuples']} -> {after['dead_tuples']}")
        return Check(False, f"dead tuples did not drop ({after['dead_tuples']})")


class ReindexParams(TableParams):
    concurrently: bool = Field(True, description="REINDEX ... CONCURRENTLY (no write lock).")


class Reindex(_TableAction):
    name = "postgres.reindex"
    summary = "REINDEX TABLE (CONCURRENTLY by default); verify = index size not larger."
    params_model = ReindexParams

    def plan(self, facts: Facts) -> Plan:
        if facts["index_bytes"] == 0:
            return NoOp(f"{self.params.table} has no index")
        how = "CONCURRENTLY " if self.params.concurrently else ""
        return [
            Step(
                "reindex",
                f"REINDEX TABLE {how}{self.params.table} ({facts['index_bytes']} bytes of index)",
            )
        ]

    def apply(self, steps: Sequence[Step]) -> Applied:
        how = sql.SQL("CONCURRENTLY ") if self.params.concurrently else sql.SQL("")
        with self.connect() as conn:
            conn.execute(sql.SQL("REINDEX TABLE {}{}").format(how, split_table(self.params.table)))
        return Applied(f"reindexed {self.params.table}")

    def verify(self, before: Facts, after: Facts) -> Check:
        if after["index_bytes"] <= before["index_bytes"]:
            return Check(True, f"index bytes {before['index_bytes']} -> {after['index_bytes']}")
        return Check(False, f"index grew: {before['index_bytes']} -> {after['index_bytes']}")


_INDEXES_SQL = """
    SELECT i.indexrelid::regclass::text FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
    WHERE i.indrelid = to_regclass(%s) AND a.amname = 'btree' ORDER BY 1
"""


class Amcheck(_PgAction):
    name = "postgres.amcheck"
    summary = "amcheck bt_index_check(heapallindexed) on a table's B-tree indexes (read-only)."
    params_model = TableParams

    def facts(self) -> Facts:
        with self.connect() as conn:
            ext = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone()
            indexes = [r[0] for r in conn.execute(_INDEXES_SQL, [self.params.table]).fetchall()]
        return {"amcheck_installed": ext is not None, "indexes": indexes}

    def plan(self, facts: Facts) -> Plan:
        if not facts["indexes"]:
            return NoOp(f"{self.params.table} has no B-tree index")
        steps = (
            []
            if facts["amcheck_installed"]
            else [Step("create_extension", "CREATE EXTENSION amcheck")]
        )
        steps += [
            Step("check", f"bt_index_check({name}, heapallindexed)", {"index": name})
            for name in facts["indexes"]
        ]
        return steps

    def apply(self, steps: Sequence[Step]) -> Applied:
        lines = []
        with self.connect() as conn:
            for step in steps:
                if step.op == "create_extension":
                    conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                    lines.append("created extension amcheck")
                    continue
                index = str(step.args["index"])
                try:
                    conn.execute("SELECT bt_index_check(%s::regclass, true)", [index])
                except psycopg.errors.IndexCorrupted as exc:
                    raise ActionError(f"{index}: corrupted: {exc}") from exc
                lines.append(f"{index}: ok")
        return Applied("\n".join(lines))

    def verify(self, before: Facts, after: Facts) -> Check:
        return Check(
            bool(after["amcheck_installed"]),
            "indexes checked" if after["amcheck_installed"] else "amcheck missing",
        )
