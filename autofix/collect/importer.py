"""Import metric history from CSV or Parquet files into the store.

Columns: ``timestamp, host, metric, value`` and optionally ``labels`` (a JSON object),
``capacity`` and ``unit``. ``timestamp`` is ISO 8601 (no zone means UTC) or a number
since 1970 whose unit its size tells: seconds below 10¹¹, milliseconds below 10¹⁴,
microseconds below 10¹⁷, nanoseconds below 10²⁰ (anything bigger is refused). A CSV
file is comma-separated with a header line (RFC 4180 quoting). Every file is parsed and
checked before anything is written — and before the store is even opened for writing —
and the write is one transaction: a bad file raises InputError naming file, line and
column, and the store is left exactly as it was. Memory is bounded whatever the file's
size: DuckDB parses under ``MEMORY_LIMIT`` (spilling to a temp directory past it), and
rows reach the store batch by batch through a staging table that one final transaction
moves into the store (``MetricStore.staging``). Empty, NaN or infinite values are not
errors: they are rejected row by row and counted, like any other write.

A path is a path: DuckDB only ever sees names autofix made (a symlink in a private
directory), so ``g*.csv`` is the one file of that name, never a glob.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import stat
import tempfile
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

#: DuckDB memory for parsing, and for the store while it takes an import (each; past it,
#: DuckDB spills to disk): with a batch in flight, an import of any size peaks near 1 GB.
MEMORY_LIMIT = "256MB"
#: Rows per batch unless the caller says (AUTOFIX_IMPORT_CHUNK_ROWS).
CHUNK_ROWS = 250_000


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
    """The files an import of ``path`` reads: the file itself or a directory's data files.

    Only regular files: a FIFO or a device would block the import forever (holding the
    store's writer lock), so it is refused here, before anything is opened.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        try:
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        except OSError as exc:
            raise InputError(f"{path}: cannot list: {exc.strerror}") from None
        if not files:
            raise InputError(f"{path}: no .csv or .parquet files in this directory")
        for file in files:
            _regular(file)
        return files
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(
            f"{path}: unknown file type {path.suffix or '(none)'!r} (use .csv or .parquet)"
        )
    _regular(path)
    return [path]


def _regular(file: Path) -> None:
    try:
        st = file.stat()
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{file}: not a regular file (a FIFO, device or socket); not read")


#: Epoch numbers by size: below 1e11 seconds (year 5138), then ms, µs, ns.
_EPOCH_UNITS = ((1e11, 1.0), (1e14, 1e3), (1e17, 1e6), (1e20, 1e9))
_NUMERIC = {"BIGINT", "INTEGER", "SMALLINT", "TINYINT", "DOUBLE", "FLOAT", "HUGEINT", "UBIGINT"}
_NUMBER_TEXT = "'-?[0-9]+(\\.[0-9]+)?'"


def _epoch(number: str) -> str:
    """SQL: a number since 1970 → TIMESTAMPTZ, its unit told by its size; NULL if too big."""
    cases = " ".join(
        f"WHEN abs({number}) < {limit:.0e} THEN to_timestamp({number} / {scale:.0e})"
        for limit, scale in _EPOCH_UNITS
    )
    return f"(CASE WHEN NOT isfinite({number}) THEN NULL {cases} ELSE NULL END)"


def _timestamp_exprs(column_type: str) -> tuple[str, str]:
    """SQL for the ``timestamp`` column: (TIMESTAMPTZ or NULL, true where an epoch is too big)."""
    if column_type.startswith("TIMESTAMP"):
        return 'CAST("timestamp" AS TIMESTAMPTZ)', "false"
    if column_type in _NUMERIC:
        number = 'CAST("timestamp" AS DOUBLE)'
        return _epoch(number), f"NOT (abs({number}) < 1e20)"
    text = 'trim(CAST("timestamp" AS VARCHAR))'
    number = f"try_cast({text} AS DOUBLE)"
    is_number = f"regexp_full_match({text}, {_NUMBER_TEXT})"
    return (
        f"CASE WHEN {is_number} THEN {_epoch(number)} ELSE try_cast({text} AS TIMESTAMPTZ) END",
        f"{is_number} AND NOT (abs({number}) < 1e20)",
    )


def _not_a_number(column: str, column_type: str) -> str:
    """SQL true where a non-empty value does not parse as a number (typed columns: never)."""
    if column_type in _NUMERIC:
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
    """Parses files into typed tables in a private in-memory DuckDB.

    Its memory is capped at ``memory_limit``: past it, DuckDB spills to the parser's own
    temp directory, so a file of any size is read in bounded memory.
    """

    def __init__(self, memory_limit: str = MEMORY_LIMIT) -> None:
        self.aliases = Path(tempfile.mkdtemp(prefix="autofix-import-"))
        self.con = duckdb.connect(":memory:")
        try:
            if not re.fullmatch(r"[A-Za-z0-9._/-]+", str(self.aliases)):
                raise InputError(f"{self.aliases}: set TMPDIR to a plain path (no glob characters)")
            for statement in (
                "SET TimeZone = 'UTC'",
                f"SET memory_limit = {_sql_string(memory_limit)}",
                f"SET temp_directory = {_sql_string(self.aliases / 'spill')}",
                # Rows go to the store in any order (it keys on series and time).
                "SET preserve_insertion_order = false",
            ):
                self.con.execute(statement).fetchall()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self.aliases, ignore_errors=True)

    def _alias(self, index: int, file: Path) -> Path:
        """A name for ``file`` that DuckDB cannot read as a glob, a URL or ``~``."""
        alias = self.aliases / f"{index}{file.suffix.lower()}"
        alias.symlink_to(file.absolute())
        return alias

    def load(self, index: int, file: Path) -> tuple[str, int]:
        """Check a file; return the query that yields its typed rows, and the row count.

        The happy path reads the file three times at most (checks, distinct labels, the
        rows themselves) and never numbers rows; only a failed check does, to name the
        line.
        """
        kind = SUFFIXES[file.suffix.lower()]
        literal = _sql_string(self._alias(index, file))
        if kind == "csv":
            header = _csv_header(file)
            columns = ", ".join(f"{_sql_string(name)}: 'VARCHAR'" for name in header)
            # Nothing sniffed: a ragged line or a stray quote is an error naming the line,
            # never a reason to read the file as one column or without a header.
            reader = (
                f"read_csv({literal}, header = true, auto_detect = false, delim = ',', "
                f"quote = '\"', escape = '\"', strict_mode = true, null_padding = false, "
                f"columns = {{{columns}}})"
            )
        else:
            reader = f"read_parquet({literal})"
        raw = f"raw_{index}"
        try:
            self.con.execute(f"CREATE VIEW {raw} AS SELECT * FROM {reader}").fetchall()
            described = self.con.execute(f"DESCRIBE {raw}").fetchall()
        except duckdb.Error as exc:
            raise _read_error(file, kind, exc) from None
        types = {str(row[0]): str(row[1]) for row in described}
        for column in REQUIRED:
            if column not in types:
                raise InputError(
                    f"{file}: missing column {column!r} (need {','.join(REQUIRED)}; "
                    f"optional {','.join(OPTIONAL)})"
                )
        ts_expr, too_big = _timestamp_exprs(types["timestamp"])
        checks: list[tuple[str, str, str]] = [
            ("timestamp", too_big, "epoch out of range (not s, ms, µs or ns since 1970)"),
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
            raise _read_error(file, kind, exc) from None
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


def _sql_string(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _csv_header(file: Path) -> list[str]:
    """The header line's column names; InputError for none, duplicates or empty names."""
    try:
        with file.open("rb") as handle:
            first = handle.readline(1 << 20)
    except OSError as exc:
        raise InputError(f"{file}: cannot read: {exc.strerror}") from None
    if not first.strip():
        raise InputError(f"{file}: line 1: no header (need {','.join(REQUIRED)})")
    if not first.endswith(b"\n") and len(first) >= 1 << 20:
        raise InputError(f"{file}: line 1: header longer than 1 MiB")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{file}: line 1: not UTF-8 (byte 0x{first[exc.start]:02x})") from None
    try:
        names = next(csv.reader([text.rstrip("\r\n")]))
    except (csv.Error, StopIteration) as exc:
        raise InputError(f"{file}: line 1: cannot read the header: {exc}") from None
    seen: dict[str, str] = {}
    for number, name in enumerate(names, 1):
        if not name.strip():
            raise InputError(f"{file}: line 1: column {number} has no name")
        other = seen.setdefault(name.lower(), name)
        if other is not name:
            raise InputError(f"{file}: line 1: duplicate column {name!r} (columns must be unique)")
    return names


_CSV_LINE = re.compile(r"CSV Error on Line: (\d+)")
_COLUMNS = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")


def _read_error(file: Path, kind: str, exc: duckdb.Error) -> InputError:
    """DuckDB's many-line message → one line naming the file and, for a CSV, the line."""
    text = str(exc)
    line = _CSV_LINE.search(text)
    if line:
        counts = _COLUMNS.search(text)
        if counts:
            why = f"expected {counts.group(1)} columns, found {counts.group(2)}"
        else:
            body = [part.strip() for part in text.split("\n")[2:]]
            why = next((part for part in body if part and "Possible fixes" not in part), "")
            why = why.rstrip(".") or "cannot read this line"
        return InputError(f"{file}: line {line.group(1)}: {why[:1].lower() + why[1:]}")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return InputError(f"{file}: cannot read as {kind.upper()}: {first}")


def import_files(
    store: MetricStore,
    path: Path,
    *,
    chunk_rows: int = CHUNK_ROWS,
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
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress | None = None,
    shift_to: datetime | None = None,
) -> ImportResult:
    """Parse and check every file first, then write them all in one transaction."""
    with CheckedImport(files, shift_to=shift_to) as checked:
        return checked.write(store, chunk_rows=chunk_rows, progress=progress)


class CheckedImport:
    """Files parsed and checked, no store touched yet; ``write`` imports them at once.

    The CLI checks before it opens the store for writing, so a bad file never holds
    the writer lock (nor waits for it).
    """

    def __init__(
        self,
        files: Sequence[Path],
        *,
        shift_to: datetime | None = None,
        memory_limit: str = MEMORY_LIMIT,
    ) -> None:
        self.files = list(files)
        self.memory_limit = memory_limit
        self._parser = _Parser(memory_limit)
        try:
            checked = [self._parser.load(i, file) for i, file in enumerate(self.files)]
            self.oldest, self.newest, self.shift = self._parser.span(
                [q for q, _ in checked], shift_to
            )
            if self.shift is not None:
                checked = [(self._parser.shifted(q, self.shift), n) for q, n in checked]
        except BaseException:
            self._parser.close()
            raise
        self._checked = checked
        self.rows = sum(count for _, count in checked)

    def write(
        self,
        store: MetricStore,
        *,
        chunk_rows: int = CHUNK_ROWS,
        progress: Progress | None = None,
    ) -> ImportResult:
        """Stage every row batch by batch, then store them in one transaction.

        Memory stays bounded by a batch and the DuckDB limits, not by the file: batches
        go to a staging table (``MetricStore.staging``) and the one commit at the end
        moves them into the store, so a failure anywhere stores nothing.
        """
        done = 0
        if progress:
            progress(0, self.rows)
        with store.staging(self.memory_limit) as staged:
            for query, _count in self._checked:
                for batch in self._parser.batches(query, chunk_rows):
                    staged.add(pa.Table.from_batches([batch]))
                    done += batch.num_rows
                    if progress:
                        progress(done, self.rows)
            result = staged.commit()
        return ImportResult(
            [str(f) for f in self.files], self.rows, result, self.oldest, self.newest, self.shift
        )

    def close(self) -> None:
        self._parser.close()

    def __enter__(self) -> CheckedImport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
