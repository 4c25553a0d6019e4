"""MetricStore: the metric history in one DuckDB file.

Long format, like Prometheus: ``series`` names what is measured (host, metric, labels,
unit, capacity) and ``samples`` holds ``(series_id, ts, value)``. Timestamps are UTC
(stored without a zone). One process writes (DuckDB allows one read-write process);
everyone else reads the file read-only when it is free, or a Parquet snapshot written
by ``export_parquet`` while a writer runs. Nobody sees a raw lock error.

>>> store = MetricStore(":memory:")
>>> import pandas as pd
>>> frame = pd.DataFrame({"ts": [pd.Timestamp("2026-01-01")], "host": ["web-1"],
...     "metric": ["node_load1"], "value": [0.5]})
>>> store.write(frame).stored
1
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from autofix.errors import StoreError, StoreLockedError
from autofix.schema import (
    APPENDABLE,
    MIGRATIONS,
    REJECT_SQL,
    SCHEMA_VERSION,
    SNAPSHOT_TABLES,
)

#: What ``write_predictions`` stores per series (after ``made_at``), in table order.
PREDICTION_COLUMNS = (
    "series_id",
    "origin",
    "eta",
    "eta_lo",
    "eta_hi",
    "p_1h",
    "p_4h",
    "p_24h",
    "p_4d",
    "threshold",
    "model",
    "model_version",
)

log = logging.getLogger(__name__)

ROLLUP_STEP = timedelta(minutes=5)

#: Tables a staged import writes into before its one commit (``MetricStore.staging``).
STAGING_PREFIX = "_staging_"

_LOCK_PID = re.compile(r"PID (\d+)")
_WRITE_COLUMNS = ("ts", "host", "metric", "labels", "value", "unit", "capacity")


@dataclass(frozen=True)
class WriteResult:
    """What a write did: stored rows, duplicates skipped, rejected rows by reason."""

    stored: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def __add__(self, other: WriteResult) -> WriteResult:
        reasons = dict(self.rejected)
        for reason, count in other.rejected.items():
            reasons[reason] = reasons.get(reason, 0) + count
        return WriteResult(self.stored + other.stored, self.duplicates + other.duplicates, reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected_total,
            "rejected_by_reason": dict(sorted(self.rejected.items())),
        }


@dataclass(frozen=True)
class RetentionResult:
    """What a retention run did."""

    raw_cutoff: datetime
    rollup_cutoff: datetime
    buckets_written: int
    raw_deleted: int
    rollups_deleted: int
    #: Forecasts and anomaly scores are kept as long as raw samples.
    predictions_deleted: int = 0
    scores_deleted: int = 0


def _batch_select(source: str, *, empty: bool = False) -> str:
    """SQL: rows of a write table (``_WRITE_COLUMNS``) as a batch, each with its reject reason."""
    if empty:
        source = (
            "(SELECT NULL::TIMESTAMP AS ts, NULL::VARCHAR AS host, NULL::VARCHAR AS metric, "
            "NULL::VARCHAR AS labels, NULL::DOUBLE AS value, NULL::VARCHAR AS unit, "
            "NULL::DOUBLE AS capacity LIMIT 0)"
        )
    return f"""SELECT ts, host, metric, coalesce(labels, '{{}}') AS labels,
                      coalesce(unit, '') AS unit,
                      CASE WHEN isnan(capacity) THEN NULL ELSE capacity END AS capacity,
                      value, {REJECT_SQL} AS reject
               FROM {source}"""


class Staging:
    """Batches staged by ``MetricStore.staging``; ``commit`` stores them all at once."""

    def __init__(self, store: MetricStore, table: str) -> None:
        self._store = store
        self._table = table
        self.rows = 0

    def add(self, frame: pd.DataFrame | pa.Table) -> int:
        """Stage one batch (committed on its own into the staging table, not the store)."""
        store = self._store
        table = _as_write_table(frame)
        if table.num_rows == 0:
            return 0
        with store._write_lock:
            store._con.register("_incoming_stage", table)
            try:
                store._run(f"INSERT INTO {self._table} {_batch_select('_incoming_stage')}")
            except duckdb.Error as exc:
                raise StoreError(f"{store.path}: write failed: {one_line(exc)}") from exc
            finally:
                store._con.unregister("_incoming_stage")
        rows = int(table.num_rows)
        self.rows += rows
        return rows

    def commit(self) -> WriteResult:
        """Every staged row into the store in one transaction (or nothing of them)."""
        store = self._store
        with store._write_lock:
            try:
                store._run("BEGIN TRANSACTION")
            except duckdb.Error as exc:
                raise StoreError(f"{store.path}: cannot write: {one_line(exc)}") from exc
            try:
                result = store._write_batch(self._table, f"{self._table}_ids", "TABLE")
                store._run(f"DROP TABLE {self._table}_ids")
                store._run("COMMIT")
            except duckdb.Error as exc:
                store._rollback()
                raise StoreError(
                    f"{store.path}: not committed, nothing of it was stored: {one_line(exc)}"
                ) from exc
            except BaseException:
                store._rollback()
                raise
        return result


def _utc_naive(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1)
    return epoch + ((moment - epoch) // step) * step


def _lock_holder(exc: BaseException) -> str:
    match = _LOCK_PID.search(str(exc))
    return f" (PID {match.group(1)})" if match else ""


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


class MetricStore:
    """The single writer (or a read-only view) of the metric history.

    ``path`` is a DuckDB file or ``":memory:"``. With ``read_only=True`` the file must
    exist and the schema is not migrated. A writer waits up to ``lock_wait`` seconds for
    another process to let go of the file, then raises StoreLockedError saying who holds
    it and what to do. Writes are serialised by an in-process lock, so one MetricStore
    may be shared by the collector loop, the scheduler and the API.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        lock_wait: float = 5.0,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        self._write_lock = threading.RLock()
        self._con = self._connect(lock_wait)
        self._snapshot: Path | None = None
        if not read_only:
            self._migrate()
        elif self.schema_version() > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {self.schema_version()} is newer than this "
                f"autofix understands ({SCHEMA_VERSION}); upgrade autofix"
            )

    # -- opening -----------------------------------------------------------------------

    def _connect(self, lock_wait: float) -> duckdb.DuckDBPyConnection:
        if self.path != ":memory:":
            file = Path(self.path)
            if self.read_only and not file.exists():
                raise StoreError(
                    f"{file}: no metric store yet; run `autofix collect --once` or "
                    "`autofix import PATH` first"
                )
            if not self.read_only:
                try:
                    file.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"{file.parent}: cannot create the store's directory: {exc.strerror or exc}"
                    ) from None
        deadline = time.monotonic() + lock_wait
        while True:
            try:
                con = duckdb.connect(self.path, read_only=self.read_only)
                # Every read that needs an order says ORDER BY; dropping the implicit
                # order halves the memory and time of big scans (forecasting a fleet).
                con.execute("SET preserve_insertion_order = false").fetchall()
                return con
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise StoreError(
                        f"{self.path}: cannot open the store: {one_line(exc)}"
                    ) from exc
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{self.path} is in use by another process{_lock_holder(exc)}; "
                        "stop it, or read its snapshot (`--snapshot DIR`, written by "
                        "`autofix export --parquet DIR`), or go through the API"
                    ) from exc
                time.sleep(0.1)

    @classmethod
    def open_snapshot(cls, directory: str | Path) -> MetricStore:
        """A read-only store over a Parquet snapshot written by ``export_parquet``."""
        directory = Path(directory)
        manifest = directory / "manifest.json"
        if not manifest.is_file():
            raise StoreError(f"{directory}: no snapshot here (manifest.json missing)")
        store = cls.__new__(cls)
        store.path = str(directory)
        store.read_only = True
        store._write_lock = threading.RLock()
        store._snapshot = directory
        store._con = duckdb.connect(":memory:")
        for table, _ in SNAPSHOT_TABLES:
            file = directory / f"{table}.parquet"
            if not file.exists():  # a snapshot from an older autofix: metrics only
                continue
            # rowid as in the live tables (readers break timestamp ties with it); the
            # files are written in time order, so it keeps that order.
            store._run(
                f"CREATE VIEW {table} AS SELECT * EXCLUDE (file_row_number), "
                f"file_row_number AS rowid "
                f"FROM read_parquet({_sql_string(file)}, file_row_number = true)"
            )
        version = json.loads(manifest.read_text())["schema_version"]
        store._run(f"CREATE VIEW schema_version AS SELECT {int(version)} AS version")
        return store

    @classmethod
    def open_reader(cls, path: str | Path, snapshot_dir: str | Path | None = None) -> MetricStore:
        """Open for reading: the file itself when free, else the snapshot, else a clear error."""
        try:
            return cls(path, read_only=True, lock_wait=0.0)
        except StoreLockedError as exc:
            if snapshot_dir is not None and (Path(snapshot_dir) / "manifest.json").is_file():
                log.info("%s is busy; reading the snapshot in %s", path, snapshot_dir)
                return cls.open_snapshot(snapshot_dir)
            raise StoreLockedError(
                f"{path} is being written by another process{_lock_holder(exc)} and there "
                f"is no snapshot in {snapshot_dir}; have the writer run "
                "`autofix export --parquet DIR`, or query through the API"
            ) from exc

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> MetricStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def snapshot(self) -> Path | None:
        """The snapshot directory when this store reads one, else None."""
        return self._snapshot

    def _run(self, sql: str, params: Sequence[Any] | None = None) -> list[Any]:
        # Consume every result: DuckDB refuses new work while a result is unfinished.
        # One connection serves every thread of the service; DuckDB refuses (rather than
        # queues) a call while another is running on it, so every call holds the lock.
        with self._write_lock:
            return self._con.execute(sql, params or []).fetchall()

    # -- schema ------------------------------------------------------------------------

    def schema_version(self) -> int:
        try:
            row = _first(self._run("SELECT max(version) FROM schema_version"))
        except duckdb.CatalogException:
            return 0
        return int(row[0]) if row and row[0] is not None else 0

    def _migrate(self) -> None:
        with self._write_lock:
            self._run(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
            )
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {current} is newer than this autofix "
                    f"understands ({SCHEMA_VERSION}); upgrade autofix"
                )
            applied = {int(row[0]) for row in self._run("SELECT version FROM schema_version")}
            for version in sorted(set(MIGRATIONS) - applied):
                self._run("BEGIN TRANSACTION")
                try:
                    for statement in MIGRATIONS[version]:
                        self._run(statement)
                    self._run("INSERT INTO schema_version VALUES (?, ?)", [version, _now()])
                    self._run("COMMIT")
                except duckdb.Error as exc:
                    self._run("ROLLBACK")
                    raise StoreError(
                        f"{self.path}: migration to v{version} failed: {one_line(exc)}"
                    ) from exc
                log.debug("store %s migrated to schema v%d", self.path, version)
            self._drop_staging()

    # -- writing -----------------------------------------------------------------------

    def _require_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only; writes go through the writer")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all (used by imports).

        A COMMIT that fails (a full disk: the WAL cannot grow) is a StoreError saying that
        nothing of this transaction was stored; what was committed before is intact.
        """
        self._require_writable()
        with self._write_lock:
            try:
                self._run("BEGIN TRANSACTION")
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: cannot write: {one_line(exc)}") from exc
            self._in_tx = True
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    self._run("COMMIT")
                except duckdb.Error as exc:
                    self._rollback()
                    raise StoreError(
                        f"{self.path}: not committed, nothing of it was stored: {one_line(exc)}"
                    ) from exc
            finally:
                self._in_tx = False

    def _rollback(self) -> None:
        # After a failed COMMIT or a fatal error DuckDB may refuse even the ROLLBACK; the
        # error that got us here is the one worth reporting.
        try:
            self._run("ROLLBACK")
        except duckdb.Error as exc:
            log.debug("%s: rollback: %s", self.path, one_line(exc))

    _in_tx = False

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        if self._in_tx:
            yield
            return
        self._run("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        try:
            self._run("COMMIT")
        except duckdb.Error:
            self._rollback()
            raise

    def write(self, frame: pd.DataFrame | pa.Table) -> WriteResult:
        """Append samples given as ``ts, host, metric, value`` (+ ``labels, unit, capacity``).

        ``labels`` is canonical JSON (see ``collect.base.format_labels``). A duplicate
        (series, ts) keeps the value already stored; invalid rows are counted by reason
        and never stored. The whole batch is one transaction.
        """
        self._require_writable()
        table = _as_write_table(frame)
        if table.num_rows == 0:
            return WriteResult()
        with self._write_lock:
            try:
                self._con.register("_incoming", table)
                try:
                    with self._atomic():
                        return self._write_registered()
                finally:
                    self._con.unregister("_incoming")
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: write failed: {one_line(exc)}") from exc

    def _write_registered(self) -> WriteResult:
        self._run(f"CREATE OR REPLACE TEMP TABLE _batch AS {_batch_select('_incoming')}")
        return self._write_batch("_batch", "_ids", "TEMP TABLE")

    def _write_batch(self, batch: str, ids: str, kind: str) -> WriteResult:
        """Rows of ``batch`` (``_batch_select`` columns) into series and samples.

        ``ids`` is the name of the table of valid rows with their series ids, created as
        ``kind`` (a TEMP TABLE for one batch; a plain TABLE for a staged import, so that
        millions of rows go to disk under DuckDB's memory limit, not to memory).
        """
        con = self._con
        rejected = dict(
            self._run(f"SELECT reject, count(*) FROM {batch} WHERE reject IS NOT NULL GROUP BY 1")
        )
        now = _now()
        self._run(
            f"""INSERT INTO series (series_id, host, metric, labels, unit, created_at)
               SELECT nextval('series_id_seq'), n.host, n.metric, n.labels, n.unit, ?
               FROM (SELECT host, metric, labels, max(unit) AS unit FROM {batch}
                     WHERE reject IS NULL GROUP BY host, metric, labels) n
               ANTI JOIN series s
                 ON s.host = n.host AND s.metric = n.metric AND s.labels = n.labels
               ORDER BY n.host, n.metric, n.labels""",
            [now],
        )
        self._run(
            f"""CREATE OR REPLACE {kind} {ids} AS
               SELECT s.series_id, b.ts, b.value, b.capacity FROM {batch} b
               JOIN series s ON s.host = b.host AND s.metric = b.metric AND s.labels = b.labels
               WHERE b.reject IS NULL"""
        )
        self._update_capacity(ids)
        valid = _first(con.execute(f"SELECT count(*) FROM {ids}").fetchall())
        stored = self._insert_samples(ids)
        if rejected:
            self._count_rejects(rejected, now)
        total_valid = int(valid[0]) if valid else 0
        return WriteResult(stored, total_valid - stored, rejected)

    @contextmanager
    def staging(self, memory_limit: str | None = None) -> Iterator[Staging]:
        """Stage a large write batch by batch, then store all of it in one transaction.

        Each ``Staging.add`` is committed on its own into a table of its own, so memory
        stays bounded by a batch (and by ``memory_limit``: DuckDB spills past it to a
        temp directory beside the store) however many rows come; ``Staging.commit``
        moves every staged row into series and samples in one transaction, checks and
        counts as ``write`` does. Until then nothing a reader sees has changed: an error
        (or a crash: leftover staging tables are dropped when the store is next opened)
        leaves the store exactly as it was.
        """
        self._require_writable()
        name = f"{STAGING_PREFIX}{os.getpid()}_{time.monotonic_ns()}"
        with self._write_lock:
            previous = None
            try:
                if memory_limit is not None:
                    previous = _first(self._run("SELECT current_setting('memory_limit')"))
                    self._run(f"SET memory_limit = {_sql_string(memory_limit)}")
                self._run(f"CREATE TABLE {name} AS {_batch_select('_none', empty=True)}")
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: cannot write: {one_line(exc)}") from exc
            try:
                yield Staging(self, name)
            finally:
                try:
                    self._run(f"DROP TABLE IF EXISTS {name}")
                    self._run(f"DROP TABLE IF EXISTS {name}_ids")
                    if previous is not None:
                        self._run(f"SET memory_limit = {_sql_string(previous[0])}")
                except duckdb.Error as exc:  # the store is dropping it on its next open
                    log.debug("%s: dropping %s: %s", self.path, name, one_line(exc))

    def _drop_staging(self) -> None:
        """Staging tables an import left when its process died: never committed, dropped."""
        for (table,) in self._run(
            "SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, ?)",
            [STAGING_PREFIX],
        ):
            self._run(f'DROP TABLE IF EXISTS "{table}"')
            log.info("%s: dropped %s, left by an import that did not finish", self.path, table)

    def write_ids(self, frame: pd.DataFrame | pa.Table) -> WriteResult:
        """Fast path for callers that already know ``series_id``: ``series_id, ts, value``."""
        self._require_writable()
        table = (
            frame
            if isinstance(frame, pa.Table)
            else pa.Table.from_pandas(frame, preserve_index=False)
        )
        with self._write_lock:
            try:
                self._con.register("_incoming_ids", table)
                try:
                    with self._atomic():
                        self._run(
                            """CREATE OR REPLACE TEMP TABLE _ids AS
                               SELECT series_id, ts, value,
                                   CASE WHEN value IS NULL OR NOT isfinite(value)
                                        THEN 'non_finite'
                                        WHEN ts IS NULL THEN 'bad_timestamp'
                                        WHEN series_id NOT IN (SELECT series_id FROM series)
                                        THEN 'unknown_series' END AS reject
                               FROM _incoming_ids"""
                        )
                        rejected = dict(
                            self._run(
                                "SELECT reject, count(*) FROM _ids WHERE reject IS NOT NULL "
                                "GROUP BY 1"
                            )
                        )
                        self._run("DELETE FROM _ids WHERE reject IS NOT NULL")
                        valid = _first(self._con.execute("SELECT count(*) FROM _ids").fetchall())
                        stored = self._insert_samples("_ids")
                        if rejected:
                            self._count_rejects(rejected, _now())
                finally:
                    self._con.unregister("_incoming_ids")
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: write failed: {one_line(exc)}") from exc
        total_valid = int(valid[0]) if valid else 0
        return WriteResult(stored, total_valid - stored, rejected)

    def _insert_samples(self, source: str) -> int:
        # any_value: a duplicate inside one batch keeps one of its values; the anti-join
        # keeps whatever is stored already, which makes re-sending a batch a no-op.
        row = _first(
            self._con.execute(
                f"""INSERT INTO samples
                SELECT n.series_id, n.ts, n.value FROM (
                    SELECT series_id, ts, any_value(value) AS value FROM {source}
                    GROUP BY series_id, ts) n
                ANTI JOIN samples s ON s.series_id = n.series_id AND s.ts = n.ts"""
            ).fetchall()
        )
        return int(row[0]) if row else 0

    def _update_capacity(self, ids: str = "_ids") -> None:
        # A change of capacity (a disk grown) is kept as history; series.capacity holds
        # the value at the newest timestamp seen.
        self._run(
            f"""INSERT OR IGNORE INTO series_capacity
               SELECT c.series_id, c.ts, c.capacity FROM (
                   SELECT series_id, capacity, min(ts) AS ts FROM {ids}
                   WHERE capacity IS NOT NULL GROUP BY series_id, capacity) c
               JOIN series s USING (series_id)
               WHERE s.capacity IS DISTINCT FROM c.capacity"""
        )
        self._run(
            f"""UPDATE series SET capacity = l.capacity, capacity_ts = l.ts
               FROM (SELECT series_id, arg_max(capacity, ts) AS capacity, max(ts) AS ts
                     FROM {ids} WHERE capacity IS NOT NULL GROUP BY series_id) l
               WHERE series.series_id = l.series_id
                 AND (series.capacity_ts IS NULL OR l.ts >= series.capacity_ts)"""
        )

    def _count_rejects(self, rejected: dict[str, int], now: datetime) -> None:
        for reason, count in rejected.items():
            self._run(
                """INSERT INTO rejected_samples VALUES (?, ?, ?)
                   ON CONFLICT (reason) DO UPDATE
                   SET count = count + excluded.count, last_at = excluded.last_at""",
                [reason, count, now],
            )

    # -- reading -----------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a read query and return a DataFrame (for notebooks and reports)."""
        try:
            # One connection serves every thread of the service: reads take the lock too.
            with self._write_lock:
                return self._con.execute(sql, params or []).df()
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: query failed: {one_line(exc)}") from exc

    def series(self) -> pd.DataFrame:
        """Every series with its sample count, time range and latest value."""
        return self.query(
            """SELECT s.series_id, s.host, s.metric, s.labels, s.unit, s.capacity,
                      coalesce(a.samples, 0) AS samples, a.first_ts, a.last_ts, a.last_value
               FROM series s LEFT JOIN (
                   SELECT series_id, count(*) AS samples, min(ts) AS first_ts,
                          max(ts) AS last_ts, arg_max(value, ts) AS last_value
                   FROM samples GROUP BY series_id) a USING (series_id)
               ORDER BY s.host, s.metric, s.labels"""
        )

    def samples(
        self,
        series_ids: Sequence[int] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Raw samples as a long frame ``series_id, ts, value`` sorted by series and time."""
        clauses, params = _range_filter(series_ids, start, end)
        return self.query(
            f"SELECT series_id, ts, value FROM samples {clauses} ORDER BY series_id, ts",
            params,
        )

    def rollups(
        self,
        series_ids: Sequence[int] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """5-minute rollups ``series_id, ts, count, mean, min, max, last``."""
        clauses, params = _range_filter(series_ids, start, end, column="bucket")
        return self.query(
            f"""SELECT series_id, bucket AS ts, count, sum / count AS mean, min, max, last
                FROM samples_5m {clauses} ORDER BY series_id, bucket""",
            params,
        )

    def capacity_history(self, series_id: int) -> pd.DataFrame:
        """When a series' capacity changed (a disk grown, RAM added)."""
        return self.query(
            "SELECT ts, capacity FROM series_capacity WHERE series_id = ? ORDER BY ts",
            [series_id],
        )

    def rejected_counts(self) -> dict[str, int]:
        """Rejected rows by reason since the store was created."""
        if self._snapshot is not None:
            return {}
        rows = self._run("SELECT reason, count FROM rejected_samples")
        return {str(reason): int(count) for reason, count in rows}

    def count_samples(self) -> int:
        row = _first(self._run("SELECT count(*) FROM samples"))
        return int(row[0]) if row else 0

    def fill_history(
        self,
        lookback: timedelta,
        end: datetime | None = None,
        step: timedelta = ROLLUP_STEP,
        series_ids: Sequence[int] | None = None,
    ) -> pd.DataFrame:
        """Series with a capacity as ``series_id, ts, value, capacity`` (all, or ``series_ids``).

        Each series contributes its last ``lookback`` before its newest sample (at or
        before ``end``), so a forecast always starts from the freshest data there is.
        Samples are bucketed to ``step`` by their maximum (exhaustion happens at peaks),
        from raw samples where they exist and from 5-minute rollups before that;
        ``capacity`` is the capacity in force at each bucket (a grown disk counts from
        the time it was grown).
        """
        sql, params = _fill_sql(lookback, end, step, series_ids)
        frame = self.query(f"{sql} ORDER BY 1, 2", params)
        return patch_capacity(frame, self.capacity_changes())

    def capacity_changes(self) -> pd.DataFrame:
        """``series_id, ts, capacity`` of the series whose capacity ever changed."""
        return self.query(
            "SELECT series_id, ts, capacity FROM series_capacity WHERE series_id IN "
            "(SELECT series_id FROM series_capacity GROUP BY 1 HAVING count(*) > 1) "
            "ORDER BY series_id, ts"
        )

    def export_partitions(
        self,
        directory: Path,
        sql: str,
        params: Sequence[Any],
        partitions: int,
    ) -> list[Path]:
        """Write the rows of ``sql`` as Parquet files, one per series partition.

        Rows go to partition ``series_id % partitions`` (``directory/part=N/*.parquet``),
        so a worker reads one partition's file and never the DuckDB file. The export
        runs on a cursor of its own: other threads go on reading and writing meanwhile.
        Returns the partition directories that have rows, in partition order.
        """
        directory.mkdir(parents=True, exist_ok=True)
        with self._write_lock:
            cursor = self._con.cursor()
        previous = None
        try:
            # The fleet's history passes through here: DuckDB spills past the cap (to a
            # temp directory beside the store) instead of growing with the fleet.
            setting = cursor.execute("SELECT current_setting('memory_limit')").fetchone()
            previous = None if setting is None else str(setting[0])
            cursor.execute(f"SET memory_limit = {_sql_string(EXPORT_MEMORY_LIMIT)}")
            cursor.execute(
                f"""COPY (SELECT *, series_id % {int(partitions)} AS part FROM ({sql}))
                    TO {_sql_string(directory)}
                    (FORMAT parquet, PARTITION_BY (part), COMPRESSION zstd,
                     OVERWRITE_OR_IGNORE true)""",
                list(params),
            ).fetchall()
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: export to {directory} failed: {one_line(exc)}") from exc
        except OSError as exc:
            raise StoreError(f"{directory}: export failed: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(duckdb.Error):
                if previous is not None:
                    cursor.execute(f"SET memory_limit = {_sql_string(previous)}")
            cursor.close()
        found = [p for p in directory.glob("part=*") if p.is_dir()]
        return sorted(found, key=lambda p: int(p.name.split("=", 1)[1]))

    def export_fill_history(
        self,
        directory: Path,
        partitions: int,
        lookback: timedelta,
        end: datetime | None = None,
        step: timedelta = ROLLUP_STEP,
        series_ids: Sequence[int] | None = None,
        down_ids: Sequence[int] = (),
    ) -> list[Path]:
        """``fill_history`` as partitioned Parquet (``export_partitions``), capacity unpatched.

        Rows carry ``down`` (the series counts what is left: ``down_ids``); apply
        ``patch_capacity`` with ``capacity_changes()`` to each partition after reading it.
        """
        sql, params = _fill_sql(lookback, end, step, series_ids)
        down = "series_id IN (SELECT unnest(?::BIGINT[]))"
        return self.export_partitions(
            directory,
            f"SELECT *, {down} AS down FROM ({sql})",
            [[int(i) for i in down_ids], *params],
            partitions,
        )

    def write_predictions(self, frame: pd.DataFrame, made_at: datetime) -> int:
        """Append a forecast frame (``FORECAST_COLUMNS`` + threshold, model_version)."""
        self._require_writable()
        columns = list(PREDICTION_COLUMNS)
        table = pa.Table.from_pandas(frame[columns], preserve_index=False)
        with self._write_lock:
            self._con.register("_predictions", table)
            try:
                self._run(
                    f"INSERT INTO predictions SELECT ?, {', '.join(columns)} FROM _predictions",
                    [_utc_naive(made_at)],
                )
            finally:
                self._con.unregister("_predictions")
        return len(frame)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[Any]:
        """One write statement of the service's own tables; a DuckDB error is a StoreError."""
        self._require_writable()
        try:
            return self._run(sql, params)
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: write failed: {one_line(exc)}") from exc

    def append(self, table: str, frame: pd.DataFrame) -> int:
        """Append ``frame`` (columns in the table's order) to one of the service's tables."""
        self._require_writable()
        if table not in APPENDABLE:
            raise ValueError(f"not an appendable table: {table!r}")
        if frame.empty:
            return 0
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        with self._write_lock:
            self._con.register("_append", arrow)
            try:
                self._run(f"INSERT INTO {table} SELECT * FROM _append")
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: append to {table} failed: {one_line(exc)}") from exc
            finally:
                self._con.unregister("_append")
        return len(frame)

    def latest_predictions(self) -> pd.DataFrame:
        """The newest prediction of every series, with the series' identity."""
        return self.query(
            """SELECT s.host, s.metric, s.labels, s.capacity, p.*
               FROM predictions p JOIN series s USING (series_id)
               QUALIFY row_number() OVER (PARTITION BY p.series_id ORDER BY p.made_at DESC) = 1
               ORDER BY p.p_24h DESC, p.eta NULLS LAST"""
        )

    # -- retention and rollups ----------------------------------------------------------

    def apply_retention(
        self, now: datetime, raw_retention: timedelta, rollup_retention: timedelta
    ) -> RetentionResult:
        """Roll raw samples up into 5-minute buckets, then drop what is past retention.

        Raw samples at or after ``now - raw_retention`` are never deleted (the cutoff is
        rounded down to a bucket boundary, so a bucket is never half-deleted). Buckets
        whose raw samples are all still present — everything at or after the previous
        run's cutoff — are recomputed from them, so late samples are counted once; a
        bucket whose raw samples an earlier run deleted only has late arrivals left, and
        those are merged into it.
        """
        self._require_writable()
        now = _utc_naive(now)
        raw_cutoff = _floor(now - raw_retention, ROLLUP_STEP)
        rollup_cutoff = _floor(now - rollup_retention, ROLLUP_STEP)
        step = int(ROLLUP_STEP.total_seconds())
        with self._write_lock, self._atomic():
            con = self._con
            self._run(
                f"""CREATE OR REPLACE TEMP TABLE _rollup AS
                    SELECT series_id, time_bucket(INTERVAL '{step} seconds', ts) AS bucket,
                           count(*) AS count, sum(value) AS sum, min(value) AS min,
                           max(value) AS max, arg_max(value, ts) AS last, max(ts) AS last_ts
                    FROM samples GROUP BY ALL"""
            )
            previous = _first(self._run("SELECT max(raw_cutoff) FROM retention_runs"))
            deleted_before = previous[0] if previous and previous[0] is not None else None
            # No run deleted these buckets' raw samples yet: recompute them from raw.
            self._run(
                "INSERT OR REPLACE INTO samples_5m SELECT * FROM _rollup "
                "WHERE ? IS NULL OR bucket >= ?",
                [deleted_before, deleted_before],
            )
            # An earlier run deleted these buckets' raw samples: what is left arrived late.
            self._run(
                """INSERT INTO samples_5m SELECT * FROM _rollup WHERE bucket < ?
                   ON CONFLICT (series_id, bucket) DO UPDATE SET
                       count = samples_5m.count + excluded.count,
                       sum = samples_5m.sum + excluded.sum,
                       min = least(samples_5m.min, excluded.min),
                       max = greatest(samples_5m.max, excluded.max),
                       last = CASE WHEN excluded.last_ts >= samples_5m.last_ts
                                   THEN excluded.last ELSE samples_5m.last END,
                       last_ts = greatest(samples_5m.last_ts, excluded.last_ts)""",
                [deleted_before],
            )
            self._run("INSERT INTO retention_runs VALUES (?, ?)", [now, raw_cutoff])
            written = _first(con.execute("SELECT count(*) FROM _rollup").fetchall())
            raw_deleted = _first(
                con.execute("DELETE FROM samples WHERE ts < ?", [raw_cutoff]).fetchall()
            )
            rollups_deleted = _first(
                con.execute("DELETE FROM samples_5m WHERE bucket < ?", [rollup_cutoff]).fetchall()
            )
            predictions_deleted = _first(
                con.execute("DELETE FROM predictions WHERE made_at < ?", [raw_cutoff]).fetchall()
            )
            scores_deleted = _first(
                con.execute("DELETE FROM anomaly_scores WHERE ts < ?", [raw_cutoff]).fetchall()
            )
            self._run("DROP TABLE _rollup")
        return RetentionResult(
            predictions_deleted=int(predictions_deleted[0]) if predictions_deleted else 0,
            scores_deleted=int(scores_deleted[0]) if scores_deleted else 0,
            raw_cutoff=raw_cutoff,
            rollup_cutoff=rollup_cutoff,
            buckets_written=int(written[0]) if written else 0,
            raw_deleted=int(raw_deleted[0]) if raw_deleted else 0,
            rollups_deleted=int(rollups_deleted[0]) if rollups_deleted else 0,
        )

    # -- snapshots ---------------------------------------------------------------------

    def export_parquet(self, directory: str | Path) -> dict[str, Any]:
        """Write a consistent Parquet snapshot; readers switch to it atomically.

        The snapshot is written into a sibling temporary directory and renamed into
        place, so a reader sees either the old snapshot or the new one, never half.
        """
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{time.monotonic_ns()}"
        staging.mkdir()
        counts: dict[str, int] = {}
        try:
            # A cursor of its own: the export (seconds on a big store) reads one consistent
            # transaction while the collector, the jobs and the API go on writing and
            # reading through the shared connection.
            with self._write_lock:
                cursor = self._con.cursor()
            try:
                cursor.execute("BEGIN TRANSACTION").fetchall()
                for table, order in SNAPSHOT_TABLES:
                    file = staging / f"{table}.parquet"
                    cursor.execute(
                        f"COPY (SELECT * FROM {table} ORDER BY {order}) TO {_sql_string(file)} "
                        "(FORMAT parquet, COMPRESSION zstd)"
                    ).fetchall()
                    row = _first(cursor.execute(f"SELECT count(*) FROM {table}").fetchall())
                    counts[table] = int(row[0]) if row else 0
                cursor.execute("COMMIT").fetchall()
            finally:
                cursor.close()
            manifest = {
                "schema_version": self.schema_version(),
                "exported_at": _now().isoformat() + "Z",
                "source": self.path,
                "rows": counts,
            }
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            old = target.parent / f".{target.name}.old-{time.monotonic_ns()}"
            if target.exists():
                target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        except duckdb.Error as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(f"{self.path}: export failed: {one_line(exc)}") from exc
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(f"{target}: export failed: {exc.strerror or exc}") from exc
        return manifest


def one_line(exc: BaseException) -> str:
    """The first line of a DuckDB message (the rest is advice on SQL we wrote)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _first(rows: list[Any]) -> Any:
    # fetchone() would leave the result open, and DuckDB refuses new work until it ends.
    return rows[0] if rows else None


def _sql_string(path: Path | str) -> str:
    # COPY and CREATE VIEW cannot take parameters; quote the path as a SQL literal.
    return "'" + str(path).replace("'", "''") + "'"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


#: DuckDB memory while a partitioned export runs (``MetricStore.export_partitions``).
EXPORT_MEMORY_LIMIT = "1GB"


def _fill_sql(
    lookback: timedelta,
    end: datetime | None,
    step: timedelta,
    series_ids: Sequence[int] | None,
) -> tuple[str, list[Any]]:
    """SQL and parameters of ``MetricStore.fill_history`` (without ORDER BY or patching)."""
    until = _utc_naive(end) if end else datetime(9999, 12, 31)
    seconds = int(step.total_seconds())
    span = int(lookback.total_seconds())
    ids = "" if series_ids is None else "AND series_id IN (SELECT unnest(?::BIGINT[]))"
    params: list[Any] = [until] if series_ids is None else [until, [int(i) for i in series_ids]]
    sql = f"""WITH raw AS (
                SELECT series_id, ts, value FROM samples WHERE ts <= ? {ids}),
             old AS (
                SELECT series_id, bucket AS ts, max AS value FROM samples_5m
                WHERE bucket <= ? {ids}
                  AND bucket < coalesce(
                      (SELECT min(x.ts) FROM samples x
                       WHERE x.series_id = samples_5m.series_id),
                      TIMESTAMP '9999-12-31')),
             everything AS (SELECT * FROM raw UNION ALL SELECT * FROM old),
             lasts AS (SELECT series_id, max(ts) AS last FROM everything GROUP BY ALL)
           SELECT e.series_id, time_bucket(INTERVAL '{seconds} seconds', e.ts) AS ts,
                  max(e.value) AS value, any_value(s.capacity) AS capacity
           FROM everything e JOIN lasts l USING (series_id) JOIN series s USING (series_id)
           WHERE s.capacity IS NOT NULL AND e.ts >= l.last - INTERVAL '{span} seconds'
           GROUP BY ALL"""
    return sql, params + params


def patch_capacity(frame: pd.DataFrame, changes: pd.DataFrame) -> pd.DataFrame:
    """Set each bucket's capacity to the one in force then (``capacity_changes`` rows).

    ``frame`` is ``fill_history``-shaped. Capacity changes are rare: only the few series
    that had one are touched (an ASOF join over every bucket costs ten times the read).
    """
    if changes.empty or frame.empty:
        return frame
    capacity = frame["capacity"].to_numpy(dtype="float64", copy=True)
    sid = frame["series_id"].to_numpy()
    ts = frame["ts"].to_numpy("datetime64[ns]")
    for series_id, rows in changes.groupby("series_id"):
        mine = np.flatnonzero(sid == series_id)
        if not len(mine):
            continue
        starts = rows["ts"].to_numpy("datetime64[ns]")
        pos = np.searchsorted(starts, ts[mine], side="right") - 1
        values = rows["capacity"].to_numpy()
        capacity[mine] = np.where(pos >= 0, values[np.maximum(pos, 0)], values[0])
    frame["capacity"] = capacity
    return frame


def _range_filter(
    series_ids: Sequence[int] | None,
    start: datetime | None,
    end: datetime | None,
    column: str = "ts",
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if series_ids is not None:
        clauses.append("series_id IN (SELECT unnest(?::BIGINT[]))")
        params.append([int(i) for i in series_ids])
    if start is not None:
        clauses.append(f"{column} >= ?")
        params.append(_utc_naive(start))
    if end is not None:
        clauses.append(f"{column} < ?")
        params.append(_utc_naive(end))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _as_write_table(frame: pd.DataFrame | pa.Table) -> pa.Table:
    """Normalise a write frame to Arrow with every column present and typed."""
    table = (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    missing = [c for c in ("ts", "host", "metric", "value") if c not in table.column_names]
    if missing:
        raise StoreError(f"write frame lacks column {missing[0]!r}")
    n = table.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    ts = table.column("ts")
    if pa.types.is_timestamp(ts.type) and ts.type.tz is not None:
        ts = ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
    columns["ts"] = ts
    for name in ("host", "metric"):
        columns[name] = table.column(name).cast(pa.string())
    columns["labels"] = (
        table.column("labels").cast(pa.string())
        if "labels" in table.column_names
        else pa.array(["{}"] * n, pa.string())
    )
    columns["value"] = table.column("value").cast(pa.float64())
    columns["unit"] = (
        table.column("unit").cast(pa.string())
        if "unit" in table.column_names
        else pa.nulls(n, pa.string())
    )
    columns["capacity"] = (
        table.column("capacity").cast(pa.float64())
        if "capacity" in table.column_names
        else pa.nulls(n, pa.float64())
    )
    return pa.table({name: columns[name] for name in _WRITE_COLUMNS})
