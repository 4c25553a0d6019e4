"""Import metric history from CSV or Parquet files into the store.

Columns: ``timestamp, host, metric, value`` and optionally ``labels`` (a JSON object),
``capacity`` and ``unit``. ``timestamp`` is ISO 8601 (no zone means UTC) or epoch
seconds. Every file is parsed and checked before anything is written, and the write is
one transaction: a bad file raises InputError naming file, line and column, and the
store is left exactly as it was. Empty, NaN or infinite values are not errors: they
are rejected row by row and counted, like any other write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from autofix.collect.base import format_labels
from autofix.errors import InputError
from autofix.store import MetricStore, WriteResult

REQUIRED = ("timestamp", "host", "metric", "value")
OPTIONAL = ("labels", "capacity", "unit")
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportResult:
    """What an import did, per file and in total."""

    files: list[str]
    rows: int
    result: WriteResult
    oldest: datetime | None = None  # as stored (after any shift), UTC
    newest: datetime | None = None
    shifted_by: timedelta | None = None  # --shift-to-now: what was added to every timestamp

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "rows": self.rows,
            **self.result.as_dict(),
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "newest": self.newest.isoformat() if self.newest else None,
            "shifted_by_seconds": self.shifted_by.total_seconds() if self.shifted_by else None,
        }


def find_files(path: Path) -> list[Path]:
    """The files an import of ``path`` reads: the file itself or a directory's data files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not files:
            raise InputError(f"{path}: no .csv or .parquet files in this directory")
        return files
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(
            f"{path}: unknown file type {path.suffix or '(none)'!r} (use .csv or .parquet)"
        )
    return [path]


def _timestamp_expr(column_type: str) -> str:
    """SQL turning the ``timestamp`` column into TIMESTAMPTZ (NULL where unparsable)."""
    if column_type.startswith("TIMESTAMP"):
        return 'CAST("timestamp" AS TIMESTAMPTZ)'
    if column_type in {"BIGINT", "INTEGER", "DOUBLE", "FLOAT", "HUGEINT", "UBIGINT"}:
        return 'to_timestamp(CAST("timestamp" AS DOUBLE))'
    text = 'trim(CAST("timestamp" AS VARCHAR))'
    return (
        f"CASE WHEN regexp_full_match({text}, '-?[0-9]+(\\.[0-9]+)?') "
        f"THEN to_timestamp(CAST({text} AS DOUBLE)) "
        f"ELSE try_cast({text} AS TIMESTAMPTZ) END"
    )


def _not_a_number(column: str, column_type: str) -> str:
    """SQL true where a non-empty value does not parse as a number (typed columns: never)."""
    if column_type in {"DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "HUGEINT"}:
        return "false"
    return (
        f'"{column}" IS NOT NULL AND trim(CAST("{column}" AS VARCHAR)) <> \'\' '
        f'AND try_cast("{column}" AS DOUBLE) IS NULL'
    )


def _place(kind: str, row: int) -> tuple[str, int]:
    # CSV: line 1 is the header, so data row N is on line N + 1.
    return ("line", row + 1) if kind == "csv" else ("row", row)


def _first(rows: list[Any]) -> Any:
    # fetchone() leaves the result open, and DuckDB refuses new work until it ends.
    return rows[0] if rows else None


class _Parser:
    """Parses files into typed tables in a private in-memory DuckDB."""

    def __init__(self) -> None:
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'").fetchall()

    def close(self) -> None:
        self.con.close()

    def load(self, index: int, file: Path) -> tuple[str, int]:
        """Check a file; return the query that yields its typed rows, and the row count.

        The happy path reads the file three times at most (checks, distinct labels, the
        rows themselves) and never numbers rows; only a failed check does, to name the
        line.
        """
        kind = SUFFIXES[file.suffix.lower()]
        literal = "'" + str(file).replace("'", "''") + "'"
        reader = (
            f"read_csv({literal}, header = true, all_varchar = true)"
            if kind == "csv"
            else f"read_parquet({literal})"
        )
        raw = f"raw_{index}"
        try:
            self.con.execute(f"CREATE VIEW {raw} AS SELECT * FROM {reader}").fetchall()
            described = self.con.execute(f"DESCRIBE {raw}").fetchall()
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise InputError(f"{file}: cannot read as {kind.upper()}: {first}") from None
        types = {str(row[0]): str(row[1]) for row in described}
        for column in REQUIRED:
            if column not in types:
                raise InputError(
                    f"{file}: missing column {column!r} (need {','.join(REQUIRED)}; "
                    f"optional {','.join(OPTIONAL)})"
                )
        ts_expr = _timestamp_expr(types["timestamp"])
        checks: list[tuple[str, str, str]] = [
            ("timestamp", f"({ts_expr}) IS NULL", "cannot parse time"),
            ("host", '"host" IS NULL OR trim(CAST("host" AS VARCHAR)) = \'\'', "empty"),
            ("metric", '"metric" IS NULL OR trim(CAST("metric" AS VARCHAR)) = \'\'', "empty"),
            ("value", _not_a_number("value", types["value"]), "not a number"),
        ]
        capacity_expr = "CAST(NULL AS DOUBLE)"
        if "capacity" in types:
            checks.append(
                ("capacity", _not_a_number("capacity", types["capacity"]), "not a number")
            )
            capacity_expr = 'try_cast("capacity" AS DOUBLE)'
        try:
            found = self.con.execute(
                "SELECT count(*), "
                + ", ".join(f"coalesce(bool_or({cond}), false)" for _, cond, _ in checks)
                + f" FROM {raw}"
            ).fetchall()[0]
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise InputError(f"{file}: cannot read as {kind.upper()}: {first}") from None
        for failed, (column, condition, what) in zip(found[1:], checks, strict=True):
            if failed:
                self._fail(file, kind, reader, column, condition, what)
        labels_expr, join = "'{}'", ""
        if "labels" in types:
            mapping = self._canonical_labels(raw, file, kind, reader)
            labels_expr = "coalesce(m.canon, '{}')"
            join = f"LEFT JOIN {mapping} m ON m.raw = CAST({raw}.labels AS VARCHAR)"
        unit_expr = 'CAST("unit" AS VARCHAR)' if "unit" in types else "CAST(NULL AS VARCHAR)"
        query = f"""SELECT ({ts_expr}) AT TIME ZONE 'UTC' AS ts,
                    CAST(host AS VARCHAR) AS host, CAST(metric AS VARCHAR) AS metric,
                    {labels_expr} AS labels, try_cast("value" AS DOUBLE) AS value,
                    {unit_expr} AS unit, {capacity_expr} AS capacity
                FROM {raw} {join}"""
        return query, int(found[0])

    def _fail(
        self, file: Path, kind: str, reader: str, column: str, condition: str, what: str
    ) -> None:
        row = _first(
            self.con.execute(
                f'SELECT _row, CAST("{column}" AS VARCHAR) FROM ('
                f"SELECT row_number() OVER () AS _row, * FROM {reader}) "
                f"WHERE {condition} ORDER BY _row LIMIT 1"
            ).fetchall()
        )
        place, line = _place(kind, int(row[0]) if row else 0)
        value = row[1] if row else None
        raise InputError(f"{file}: {place} {line}, column {column}: {what} {value!r}")

    def _canonical_labels(self, raw: str, file: Path, kind: str, reader: str) -> str:
        """Build a table mapping each distinct labels text to canonical JSON; return its name."""
        # Label sets repeat across millions of rows; canonicalise each distinct one once.
        distinct = self.con.execute(
            f"SELECT DISTINCT CAST(labels AS VARCHAR) FROM {raw} WHERE labels IS NOT NULL"
        ).fetchall()
        mapping: list[tuple[str, str]] = []
        for (text,) in distinct:
            stripped = text.strip()
            if stripped == "":
                mapping.append((text, "{}"))
                continue
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                value = None
            if not isinstance(value, dict) or not all(
                isinstance(v, str | int | float | bool) for v in value.values()
            ):
                row = _first(
                    self.con.execute(
                        f"SELECT min(_row) FROM (SELECT row_number() OVER () AS _row, labels "
                        f"FROM {reader}) WHERE CAST(labels AS VARCHAR) = ?",
                        [text],
                    ).fetchall()
                )
                place, line = _place(kind, int(row[0]) if row and row[0] is not None else 0)
                raise InputError(
                    f"{file}: {place} {line}, column labels: not a JSON object of strings {text!r}"
                )
            mapping.append((text, format_labels({k: str(v) for k, v in value.items()})))
        self.con.execute(
            f"CREATE OR REPLACE TABLE labels_{raw} (raw VARCHAR, canon VARCHAR)"
        ).fetchall()
        if mapping:
            self.con.executemany(f"INSERT INTO labels_{raw} VALUES (?, ?)", mapping)
        return f"labels_{raw}"

    def span(
        self, queries: Sequence[str], shift_to: datetime | None
    ) -> tuple[datetime | None, datetime | None, timedelta | None]:
        """Oldest and newest timestamp of the rows (after the shift), and the shift."""
        union = " UNION ALL ".join(f"SELECT ts FROM ({q})" for q in queries)
        oldest, newest = self.con.execute(f"SELECT min(ts), max(ts) FROM ({union})").fetchall()[0]
        if shift_to is None or newest is None:
            return oldest, newest, None
        minutes = (shift_to.replace(tzinfo=None) - newest) // timedelta(minutes=1)
        shift = timedelta(minutes=minutes)
        return oldest + shift, newest + shift, shift

    def shifted(self, query: str, shift: timedelta) -> str:
        micros = int(shift / timedelta(microseconds=1))
        return (
            f"SELECT ts + to_microseconds({micros}) AS ts, host, metric, labels, value, "
            f"unit, capacity FROM ({query})"
        )

    def batches(self, query: str, rows: int) -> pa.RecordBatchReader:
        return self.con.sql(query).to_arrow_reader(rows)


def import_files(
    store: MetricStore,
    path: Path,
    *,
    chunk_rows: int = 1_000_000,
    progress: Progress | None = None,
    shift_to: datetime | None = None,
) -> ImportResult:
    """Import a file or a directory of files as one all-or-nothing transaction.

    ``shift_to``: move every timestamp by one offset (whole minutes) so that the newest
    sample lands within the minute before ``shift_to`` — sample data made current.
    """
    files = find_files(path)
    return import_paths(store, files, chunk_rows=chunk_rows, progress=progress, shift_to=shift_to)


def import_paths(
    store: MetricStore,
    files: Sequence[Path],
    *,
    chunk_rows: int = 1_000_000,
    progress: Progress | None = None,
    shift_to: datetime | None = None,
) -> ImportResult:
    """Parse and check every file first, then write them all in one transaction."""
    parser = _Parser()
    try:
        checked = [parser.load(index, file) for index, file in enumerate(files)]
        oldest, newest, shift = parser.span([q for q, _ in checked], shift_to)
        if shift is not None:
            checked = [(parser.shifted(q, shift), n) for q, n in checked]
        total_rows = sum(count for _, count in checked)
        done = 0
        result = WriteResult()
        if progress:
            progress(0, total_rows)
        with store.transaction():
            for query, _count in checked:
                for batch in parser.batches(query, chunk_rows):
                    result = result + store.write(pa.Table.from_batches([batch]))
                    done += batch.num_rows
                    if progress:
                        progress(done, total_rows)
        return ImportResult([str(f) for f in files], total_rows, result, oldest, newest, shift)
    finally:
        parser.close()
