"""Import of CSV/Parquet history: counts, canonical labels, all-or-nothing on bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from autofix.collect.importer import import_files
from autofix.errors import InputError
from autofix.store import MetricStore

GOOD = """timestamp,host,metric,value,labels,capacity
2026-01-01T00:00:00Z,web-1,node_filesystem_avail_bytes,100,"{""mountpoint"":""/"",""device"":""sda""}",1000
2026-01-01T01:05:00+01:00,web-1,node_filesystem_avail_bytes,90,"{""device"":""sda"",""mountpoint"":""/""}",1000
1767226200,web-1,node_filesystem_avail_bytes,NaN,"{""device"":""sda"",""mountpoint"":""/""}",1000
2026-01-01 00:15:00,web-1,node_load1,0.5,,
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def store() -> MetricStore:
    return MetricStore(":memory:")


def test_csv_import_counts_and_normalises(store: MetricStore, tmp_path: Path) -> None:
    result = import_files(store, write(tmp_path / "h.csv", GOOD))
    assert result.rows == 4
    assert result.as_dict()["rejected_by_reason"] == {"non_finite": 1}
    assert result.result.stored == 3
    rows = store.query(
        "SELECT s.metric, s.labels, x.ts, x.value FROM samples x JOIN series s USING (series_id) "
        "ORDER BY x.ts"
    )
    # Both spellings of the label set are one series; +01:00 is converted to UTC.
    assert rows["labels"].tolist() == [
        '{"device":"sda","mountpoint":"/"}',
        '{"device":"sda","mountpoint":"/"}',
        "{}",
    ]
    assert rows["ts"].tolist() == [
        pd.Timestamp("2026-01-01 00:00"),
        pd.Timestamp("2026-01-01 00:05"),
        pd.Timestamp("2026-01-01 00:15"),
    ]
    assert store.series()["capacity"].dropna().tolist() == [1000.0]


def test_reimport_is_idempotent(store: MetricStore, tmp_path: Path) -> None:
    file = write(tmp_path / "h.csv", GOOD)
    import_files(store, file)
    before = store.samples()
    again = import_files(store, file)
    assert again.result.stored == 0
    assert again.result.duplicates == 3
    pd.testing.assert_frame_equal(store.samples(), before)


def test_parquet_with_native_timestamps(store: MetricStore, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-01-01", periods=5, freq="5min", tz="UTC"),
            "host": "db-1",
            "metric": "pg_query_latency_seconds",
            "value": [0.01, 0.02, 0.015, 0.5, 0.012],
            "labels": '{"query":"top_stories"}',
        }
    )
    frame.to_parquet(tmp_path / "h.parquet")
    result = import_files(store, tmp_path / "h.parquet")
    assert result.result.stored == 5
    assert store.samples()["ts"].iloc[0] == pd.Timestamp("2026-01-01")


def test_directory_imports_every_data_file(store: MetricStore, tmp_path: Path) -> None:
    write(tmp_path / "a.csv", GOOD)
    write(tmp_path / "b.csv", "timestamp,host,metric,value\n2026-01-02,web-2,node_load1,1\n")
    write(tmp_path / "notes.json", "{}")
    result = import_files(store, tmp_path)
    assert [Path(f).name for f in result.files] == ["a.csv", "b.csv"]
    assert result.result.stored == 4


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "timestamp,host,value\n2026-01-01,a,1\n", "missing column 'metric'"),
        (
            "t.csv",
            "timestamp,host,metric,value\n2026-01-01,a,m,1\nyesterday,a,m,2\n",
            "line 3, column timestamp: cannot parse time 'yesterday'",
        ),
        (
            "v.csv",
            "timestamp,host,metric,value\n2026-01-01,a,m,lots\n",
            "line 2, column value: not a number 'lots'",
        ),
        (
            "c.csv",
            "timestamp,host,metric,value,capacity\n2026-01-01,a,m,1,big\n",
            "line 2, column capacity: not a number 'big'",
        ),
        (
            "l.csv",
            "timestamp,host,metric,value,labels\n2026-01-01,a,m,1,{bad\n",
            "line 2, column labels: not a JSON object",
        ),
        ("h.csv", "timestamp,host,metric,value\n2026-01-01,,m,1\n", "line 2, column host: empty"),
        ("x.txt", "whatever", "unknown file type '.txt'"),
    ],
)
def test_bad_input_names_file_line_column_and_stores_nothing(
    store: MetricStore, tmp_path: Path, name: str, text: str, message: str
) -> None:
    import_files(store, write(tmp_path / "ok.csv", GOOD))
    before = store.samples()
    bad = write(tmp_path / name, text)
    with pytest.raises(InputError) as info:
        import_files(store, bad)
    assert str(info.value).startswith(str(bad))
    assert message in str(info.value)
    pd.testing.assert_frame_equal(store.samples(), before)


def test_one_bad_file_in_a_directory_imports_nothing(store: MetricStore, tmp_path: Path) -> None:
    write(tmp_path / "a.csv", GOOD)
    write(tmp_path / "b.csv", "timestamp,host,metric,value\nnot-a-time,a,m,1\n")
    with pytest.raises(InputError, match=r"b\.csv: line 2"):
        import_files(store, tmp_path)
    assert store.count_samples() == 0


def test_write_failure_mid_import_rolls_back(store: MetricStore, tmp_path: Path) -> None:
    file = write(tmp_path / "a.csv", GOOD)
    calls: list[int] = []

    def explode(done: int, total: int) -> None:
        calls.append(done)
        if done > 0:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        import_files(store, file, chunk_rows=2, progress=explode)
    assert calls == [0, 2]
    assert store.count_samples() == 0


def test_missing_path(store: MetricStore, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        import_files(store, tmp_path / "nope.csv")


# -- issue 11: a path is a path, epochs by size, lines named for every kind of bad file --


def test_a_path_with_glob_characters_reads_that_file_only(
    store: MetricStore, tmp_path: Path
) -> None:
    write(tmp_path / "g*.csv", "timestamp,host,metric,value\n2026-01-01,asked,m,1\n")
    write(tmp_path / "gother.csv", "timestamp,host,metric,value\n2026-01-01,other,m,1\n")
    write(tmp_path / "[g].csv", "timestamp,host,metric,value\n2026-01-01,bracket,m,1\n")
    assert import_files(store, tmp_path / "g*.csv").rows == 1
    assert import_files(store, tmp_path / "[g].csv").rows == 1
    assert sorted(store.series()["host"]) == ["asked", "bracket"]


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("1767225600", "2026-01-01 00:00:00"),
        ("1767225600.5", "2026-01-01 00:00:00.5"),
        ("1767225600123", "2026-01-01 00:00:00.123"),
        ("1767225600123456", "2026-01-01 00:00:00.123456"),
        ("1767225600123456789", "2026-01-01 00:00:00.123457"),
        ("-86400", "1969-12-31 00:00:00"),
    ],
)
def test_epoch_units_are_told_by_size(
    store: MetricStore, tmp_path: Path, stamp: str, expected: str
) -> None:
    import_files(store, write(tmp_path / "e.csv", f"timestamp,host,metric,value\n{stamp},h,m,1\n"))
    assert store.samples()["ts"].tolist() == [pd.Timestamp(expected)]


def test_epoch_milliseconds_in_parquet(store: MetricStore, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"timestamp": [1767225600000, 1767225660000], "host": "h", "metric": "m", "value": 1.0}
    )
    frame.to_parquet(tmp_path / "ms.parquet")
    import_files(store, tmp_path / "ms.parquet")
    assert store.samples()["ts"].tolist() == [
        pd.Timestamp("2026-01-01 00:00"),
        pd.Timestamp("2026-01-01 00:01"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "timestamp,host,metric,value\n1767225600,h,m,1\n99999999999999999999999,h,m,1\n",
            "line 3, column timestamp: epoch out of range (not s, ms, µs or ns since 1970) "
            "'99999999999999999999999'",
        ),
        (
            "timestamp,host,metric,value\n2026-01-01,h,m,1\n2026-01-02,h,m,2,extra\n",
            "line 3: expected 4 columns, found 5",
        ),
        ("timestamp,host,metric,value\n2026-01-01,h,m\n", "line 2: expected 4 columns, found 3"),
        ('timestamp,host,metric,value\n2026-01-01,h,"m,1\n', "line 2: value with unterminated"),
        (
            "timestamp,host,metric,value,value\n2026-01-01,h,m,1,2\n",
            "line 1: duplicate column 'value'",
        ),
        ("timestamp,host,metric,Value,value\n", "line 1: duplicate column 'value'"),
        ("timestamp,host,,value\n", "line 1: column 3 has no name"),
        ("", "line 1: no header"),
    ],
)
def test_bad_csv_names_the_line(
    store: MetricStore, tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(InputError) as info:
        import_files(store, write(tmp_path / "bad.csv", text))
    assert str(info.value).startswith(f"{tmp_path / 'bad.csv'}: line ")
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert store.count_samples() == 0


def test_a_byte_order_mark_and_crlf_are_fine(store: MetricStore, tmp_path: Path) -> None:
    file = tmp_path / "bom.csv"
    file.write_bytes(b"\xef\xbb\xbftimestamp,host,metric,value\r\n2026-01-01,h,m,1\r\n")
    assert import_files(store, file).result.stored == 1


def test_a_fifo_is_refused_before_anything_is_opened(store: MetricStore, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        import_files(store, fifo)
    with pytest.raises(InputError, match=r"pipe\.csv: not a regular file"):
        import_files(store, tmp_path)


def test_shift_to_now_moves_every_sample_by_one_offset(store: MetricStore, tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    text = (
        "timestamp,host,metric,value\n"
        "2024-03-17T23:50:00Z,h,m,1\n"
        "2024-03-17T23:55:30Z,h,m,2\n"
        "2024-03-18T00:00:00Z,h2,m,3\n"
    )
    now = datetime(2026, 12, 2, 13, 7, 45)
    result = import_files(store, write(tmp_path / "old.csv", text), shift_to=now)
    assert result.shifted_by is not None
    assert result.shifted_by % timedelta(minutes=1) == timedelta(0)  # whole minutes
    assert result.newest == datetime(2026, 12, 2, 13, 7)  # within the minute before now
    assert result.oldest == datetime(2026, 12, 2, 12, 57)
    ts = store.query("SELECT ts FROM samples ORDER BY ts")["ts"].tolist()
    assert [t.to_pydatetime() for t in ts] == [
        datetime(2026, 12, 2, 12, 57), datetime(2026, 12, 2, 13, 2, 30),
        datetime(2026, 12, 2, 13, 7),
    ]  # fmt: skip
    # Without it, the history is stored as it is, and the result says so.
    plain = import_files(MetricStore(":memory:"), write(tmp_path / "old.csv", text))
    assert plain.shifted_by is None
    assert plain.newest == datetime(2024, 3, 18)


# -- issue 16: bounded memory through a staging table, still all or nothing ---------------

_DIE_MID_IMPORT = """
import os, signal, sys
from pathlib import Path
from autofix.collect.importer import import_files
from autofix.store import MetricStore

def die(done, total):
    if done >= 2:  # a batch staged (and committed to the staging table): now die
        os.kill(os.getpid(), signal.SIGKILL)

store = MetricStore(sys.argv[1])
import_files(store, Path(sys.argv[2]), chunk_rows=2, progress=die)
"""


def test_an_import_killed_while_staging_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    import subprocess
    import sys

    db = tmp_path / "s.duckdb"
    with MetricStore(db) as store:
        import_files(store, write(tmp_path / "first.csv", GOOD))
        before = store.samples()
    more = "timestamp,host,metric,value\n" + "".join(
        f"2026-02-01T00:0{i}:00Z,web-2,node_load1,{i}\n" for i in range(6)
    )
    proc = subprocess.run(
        [sys.executable, "-c", _DIE_MID_IMPORT, str(db), str(write(tmp_path / "more.csv", more))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    staging = "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '_staging%'"
    with MetricStore(db, read_only=True) as store:  # what the dead import left behind
        assert len(store.query(staging)) == 1
        pd.testing.assert_frame_equal(store.samples(), before)
    with MetricStore(db) as store:  # reopened for writing: the staging table is dropped
        pd.testing.assert_frame_equal(store.samples(), before)
        assert "web-2" not in set(store.series()["host"])
        left = store.query(
            "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '_staging%'"
        )
        assert left.empty


def test_staged_batches_are_counted_as_one_write(store: MetricStore, tmp_path: Path) -> None:
    # Duplicates across batches and inside one are duplicates; rejects counted once each.
    text = "timestamp,host,metric,value\n" + "".join(
        f"2026-01-01T00:00:0{i % 3}Z,h,node_load1,{'NaN' if i == 4 else i}\n" for i in range(7)
    )
    result = import_files(store, write(tmp_path / "d.csv", text), chunk_rows=2)
    assert (result.result.stored, result.result.duplicates) == (3, 3)
    assert result.result.rejected == {"non_finite": 1}
    assert store.count_samples() == 3
