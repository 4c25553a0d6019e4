"""MetricStore: schema, batched writes, idempotence, rejection, retention, snapshots."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autofix.errors import StoreError, StoreLockedError
from autofix.store import SCHEMA_VERSION, MetricStore

T0 = datetime(2026, 3, 1)


def frame(rows: list[tuple[datetime, str, str, float]], **extra: list[object]) -> pd.DataFrame:
    data = pd.DataFrame(rows, columns=["ts", "host", "metric", "value"])
    for name, values in extra.items():
        data[name] = values
    return data


def stored(store: MetricStore) -> pd.DataFrame:
    return store.query(
        "SELECT s.host, s.metric, s.labels, x.ts, x.value FROM samples x "
        "JOIN series s USING (series_id) ORDER BY ALL"
    )


def test_new_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with MetricStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
    with MetricStore(path) as store:  # reopening does not migrate twice
        assert store.schema_version() == SCHEMA_VERSION
        versions = store.query("SELECT version FROM schema_version")["version"].tolist()
        assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_store_from_the_future_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    MetricStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (99, now())")
    con.close()
    with pytest.raises(StoreError, match="newer than this autofix"):
        MetricStore(path)


def test_write_creates_series_and_counts() -> None:
    store = MetricStore(":memory:")
    result = store.write(
        frame(
            [
                (T0, "web-1", "node_load1", 0.5),
                (T0 + timedelta(seconds=15), "web-1", "node_load1", 0.7),
            ],
            labels=['{"a":"1"}', '{"a":"1"}'],
        )
    )
    assert (result.stored, result.duplicates, result.rejected) == (2, 0, {})
    series = store.series()
    assert series[["host", "metric", "labels", "samples"]].values.tolist() == [
        ["web-1", "node_load1", '{"a":"1"}', 2]
    ]


def test_out_of_order_samples_are_accepted() -> None:
    store = MetricStore(":memory:")
    store.write(frame([(T0 + timedelta(minutes=10), "h", "m", 2.0)]))
    result = store.write(frame([(T0, "h", "m", 1.0)]))
    assert result.stored == 1
    assert store.samples()["value"].tolist() == [1.0, 2.0]


def test_rejections_are_counted_by_reason_and_persisted() -> None:
    store = MetricStore(":memory:")
    result = store.write(
        frame(
            [
                (T0, "h", "node_filesystem_avail_bytes", -1.0),
                (T0, "h", "node_network_receive_bytes_total", -3.0),
                (T0, "h", "node_load1", math.nan),
                (T0, "h", "node_load1", math.inf),
                (T0, "", "node_load1", 1.0),
                (T0, "h", "node_load1", -1.0),  # a negative load is odd but not impossible
                (T0, "h", "disk_used", 5.0),
            ],
            capacity=[np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, -10.0],
        )
    )
    assert result.rejected == {
        "negative_bytes": 1,
        "negative_counter": 1,
        "non_finite": 2,
        "missing_identity": 1,
        "bad_capacity": 1,
    }
    assert result.stored == 1
    assert store.rejected_counts() == result.rejected


def test_capacity_changes_are_kept_as_history() -> None:
    store = MetricStore(":memory:")
    rows = [
        (T0 + timedelta(hours=h), "db-1", "node_filesystem_avail_bytes", 10.0) for h in range(4)
    ]
    store.write(frame(rows, capacity=[100.0, 100.0, 200.0, 200.0]))
    series = store.series()
    assert series["capacity"].tolist() == [200.0]
    history = store.capacity_history(int(series["series_id"].iloc[0]))
    assert history["capacity"].tolist() == [100.0, 200.0]
    assert history["ts"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(hours=2))]
    # An older batch does not move the current capacity back.
    store.write(
        frame(
            [(T0 - timedelta(days=1), "db-1", "node_filesystem_avail_bytes", 5.0)], capacity=[50.0]
        )
    )
    assert store.series()["capacity"].tolist() == [200.0]


def test_timezone_aware_timestamps_are_stored_as_utc() -> None:
    store = MetricStore(":memory:")
    ts = pd.Timestamp("2026-03-01 12:00", tz="Europe/Berlin")
    store.write(frame([(ts, "h", "m", 1.0)]))
    assert store.samples()["ts"].tolist() == [pd.Timestamp("2026-03-01 11:00")]


def test_write_ids_fast_path() -> None:
    store = MetricStore(":memory:")
    store.write(frame([(T0, "h", "m", 1.0)]))
    sid = int(store.series()["series_id"].iloc[0])
    batch = pd.DataFrame(
        {
            "series_id": [sid, sid, 999],
            "ts": [T0, T0 + timedelta(minutes=1), T0],
            "value": [1.0, 2.0, 3.0],
        }
    )
    result = store.write_ids(batch)
    assert (result.stored, result.duplicates, result.rejected) == (1, 1, {"unknown_series": 1})


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    MetricStore(path).close()
    with MetricStore(path, read_only=True) as reader, pytest.raises(StoreError, match="read-only"):
        reader.write(frame([(T0, "h", "m", 1.0)]))


def test_read_only_needs_an_existing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no metric store yet"):
        MetricStore(tmp_path / "none.duckdb", read_only=True)


def test_failed_transaction_leaves_store_unchanged() -> None:
    store = MetricStore(":memory:")
    store.write(frame([(T0, "h", "m", 1.0)]))
    before = stored(store)

    def write_then_fail() -> None:
        with store.transaction():
            store.write(frame([(T0 + timedelta(minutes=1), "h", "m", 2.0)]))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_then_fail()
    pd.testing.assert_frame_equal(stored(store), before)


HOLD_LOCK = """
import sys, time
from autofix.store import MetricStore
store = MetricStore(sys.argv[1])
print("ready", flush=True)
time.sleep(30)
"""


@pytest.fixture
def locked_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "busy.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "ready"
    yield path, holder.pid
    holder.kill()
    holder.wait()
    holder.stdout.close()


def test_second_writer_gets_a_clear_message(locked_store: tuple[Path, int]) -> None:
    path, pid = locked_store
    with pytest.raises(StoreLockedError) as info:
        MetricStore(path, lock_wait=0.3)
    message = str(info.value)
    assert f"PID {pid}" in message
    assert "snapshot" in message
    assert "IO Error" not in message


def test_reader_falls_back_to_snapshot(tmp_path: Path, locked_store: tuple[Path, int]) -> None:
    path, _ = locked_store
    with pytest.raises(StoreLockedError, match="no snapshot"):
        MetricStore.open_reader(path, tmp_path / "snap")
    source = MetricStore(tmp_path / "other.duckdb")
    source.write(frame([(T0, "h", "m", 1.0)]))
    source.export_parquet(tmp_path / "snap")
    source.close()
    with MetricStore.open_reader(path, tmp_path / "snap") as reader:
        assert reader.snapshot == tmp_path / "snap"
        assert reader.samples()["value"].tolist() == [1.0]


def test_snapshot_matches_store_and_replaces_atomically(tmp_path: Path) -> None:
    store = MetricStore(tmp_path / "s.duckdb")
    store.write(frame([(T0, "h", "m", 1.0)], capacity=[10.0]))
    manifest = store.export_parquet(tmp_path / "snap")
    assert manifest["rows"]["samples"] == 1
    store.write(frame([(T0 + timedelta(minutes=1), "h", "m", 2.0)]))
    store.export_parquet(tmp_path / "snap")
    snap = MetricStore.open_snapshot(tmp_path / "snap")
    pd.testing.assert_frame_equal(snap.samples(), store.samples())
    pd.testing.assert_frame_equal(snap.series(), store.series())
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".snap")]
    assert leftovers == []


def test_retention_rolls_up_then_deletes() -> None:
    store = MetricStore(":memory:")
    now = T0 + timedelta(days=20)
    rows = [(T0 + timedelta(minutes=m), "h", "m", float(m)) for m in range(0, 10)]
    rows += [(now - timedelta(minutes=1), "h", "m", 99.0)]
    store.write(frame(rows))
    result = store.apply_retention(now, timedelta(days=14), timedelta(days=400))
    assert result.raw_deleted == 10
    assert store.samples()["value"].tolist() == [99.0]
    rollups = store.rollups()
    first = rollups.iloc[0]
    assert (first["count"], first["min"], first["max"], first["last"]) == (5, 0.0, 4.0, 4.0)
    assert first["mean"] == pytest.approx(2.0)
    # Running it again changes nothing.
    again = store.apply_retention(now, timedelta(days=14), timedelta(days=400))
    assert again.raw_deleted == 0
    pd.testing.assert_frame_equal(store.rollups(), rollups)


def test_retention_drops_old_forecasts_and_anomaly_scores() -> None:
    store = MetricStore(":memory:")
    now = T0 + timedelta(days=20)
    forecast = pd.DataFrame(
        {
            "series_id": [1],
            "origin": [T0],
            "eta": [pd.NaT],
            "eta_lo": [pd.NaT],
            "eta_hi": [pd.NaT],
            "p_1h": [0.0],
            "p_4h": [0.0],
            "p_24h": [0.0],
            "p_4d": [0.0],
            "threshold": [1.0],
            "model": ["default"],
            "model_version": ["1"],
        }
    )
    store.write_predictions(forecast, T0)  # 20 days old
    store.write_predictions(forecast, now - timedelta(hours=1))
    scores = pd.DataFrame(
        {
            "made_at": [T0, now],
            "series_id": [1, 1],
            "ts": [T0, now - timedelta(minutes=1)],
            "value": [0.1, 0.2],
            "score": [0.0, 0.9],
            "model": ["robust", "robust"],
        }
    )
    store.append("anomaly_scores", scores)
    result = store.apply_retention(now, timedelta(days=14), timedelta(days=400))
    assert (result.predictions_deleted, result.scores_deleted) == (1, 1)
    assert store.query("SELECT count(*) AS n FROM predictions")["n"].iloc[0] == 1
    assert store.query("SELECT score FROM anomaly_scores")["score"].tolist() == [0.9]


# -- properties -------------------------------------------------------------------------

METRICS = ["node_filesystem_avail_bytes", "node_load1", "http_requests_total"]
value_st = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-1e6, max_value=1e12),
)
row_st = st.tuples(
    st.integers(min_value=0, max_value=200),  # minutes after T0
    st.sampled_from(["web-1", "web-2"]),
    st.sampled_from(METRICS),
    value_st,
)
rows_st = st.lists(row_st, min_size=1, max_size=60)


def to_frame(rows: list[tuple[int, str, str, float]]) -> pd.DataFrame:
    return frame([(T0 + timedelta(minutes=m), h, metric, v) for m, h, metric, v in rows])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=rows_st, again=rows_st, picks=st.lists(st.integers(0, 59), max_size=30))
def test_duplicates_never_change_the_store(
    first: list[tuple[int, str, str, float]],
    again: list[tuple[int, str, str, float]],
    picks: list[int],
) -> None:
    store = MetricStore(":memory:")
    store.write(to_frame(first))
    before = stored(store)
    if before.empty:
        return
    # Re-send some stored (series, ts) pairs with other values, in another order.
    replay = frame(
        [
            (
                before["ts"].iloc[i % len(before)],
                before["host"].iloc[i % len(before)],
                before["metric"].iloc[i % len(before)],
                abs(again[i % len(again)][3]) if math.isfinite(again[i % len(again)][3]) else 1.0,
            )
            for i in picks
        ]
    )
    result = store.write(replay)
    pd.testing.assert_frame_equal(stored(store), before)
    assert result.stored == 0
    assert result.duplicates == len(replay)


@settings(max_examples=60, deadline=None)
@given(rows=rows_st)
def test_rejected_values_are_never_stored(rows: list[tuple[int, str, str, float]]) -> None:
    store = MetricStore(":memory:")
    result = store.write(to_frame(rows))
    values = stored(store)
    assert np.isfinite(values["value"]).all()
    bytes_or_counter = values["metric"].str.endswith(("_bytes", "_total"))
    assert (values.loc[bytes_or_counter, "value"] >= 0).all()
    assert result.stored + result.duplicates + result.rejected_total == len(rows)
    assert result.stored == len(values)


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.lists(st.integers(min_value=0, max_value=60 * 24 * 30), min_size=1, max_size=80),
    keep_hours=st.integers(min_value=1, max_value=24 * 20),
    now_minutes=st.integers(min_value=0, max_value=60 * 24 * 40),
)
def test_retention_never_drops_data_inside_the_window(
    minutes: list[int], keep_hours: int, now_minutes: int
) -> None:
    store = MetricStore(":memory:")
    store.write(to_frame([(m, "h", "node_load1", float(m)) for m in minutes]))
    before = store.samples()
    now = T0 + timedelta(minutes=now_minutes)
    keep = timedelta(hours=keep_hours)
    store.apply_retention(now, keep, timedelta(days=400))
    after = store.samples()
    inside = before[before["ts"] >= pd.Timestamp(now - keep)]
    kept = after.merge(inside, on=["series_id", "ts", "value"])
    assert len(kept) == len(inside)
    # Nothing is lost overall: rolled-up counts plus raw counts cover every sample.
    rolled = store.rollups()
    deleted = len(before) - len(after)
    old_buckets = rolled[rolled["ts"] < pd.Timestamp(after["ts"].min())] if len(after) else rolled
    assert int(old_buckets["count"].sum()) >= deleted


def test_retention_counts_each_sample_once_across_runs() -> None:
    # A bucket rolled up while still inside the raw window, then cut by a later run: its
    # samples must not be added a second time (nor a late arrival dropped).
    store = MetricStore(":memory:")
    store.write(frame([(T0 + timedelta(minutes=m), "h", "m", float(m)) for m in range(5)]))
    store.apply_retention(T0 + timedelta(minutes=30), timedelta(hours=1), timedelta(days=400))
    first = store.rollups().iloc[0]
    assert (first["count"], first["mean"]) == (5, 2.0)
    cut = store.apply_retention(T0 + timedelta(hours=2), timedelta(hours=1), timedelta(days=400))
    assert cut.raw_deleted == 5
    again = store.rollups().iloc[0]
    assert (again["count"], again["mean"]) == (5, 2.0)
    # A late sample for that old bucket arrives: merged in once.
    store.write(frame([(T0 + timedelta(seconds=30), "h", "m", 100.0)]))
    store.apply_retention(T0 + timedelta(hours=3), timedelta(hours=1), timedelta(days=400))
    late = store.rollups().iloc[0]
    assert (late["count"], late["max"]) == (6, 100.0)
    assert late["mean"] == pytest.approx(110 / 6)


# -- issue 11: a full disk and an unwritable directory are one clear error -----------------


def test_a_full_disk_at_commit_is_one_store_error_and_keeps_what_was_committed(
    tmp_path: Path,
) -> None:
    from tests.fsutil import tmpfs

    disk = tmp_path / "disk"
    with tmpfs(disk, "8m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here")
        path = disk / "s.duckdb"
        with MetricStore(path) as store:
            store.write(frame([(T0, "h", "kept", 1.0)]))
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=4k"], capture_output=True
        )
        with MetricStore(path) as store:
            rows = [(T0 + timedelta(seconds=i), "h", "lost", float(i)) for i in range(2000)]
            with pytest.raises(StoreError) as info, store.transaction():
                store.write(frame(rows))
            assert "not committed, nothing of it was stored" in str(info.value)
            assert "No space left on device" in str(info.value)
            assert "\n" not in str(info.value)
        (disk / "filler").unlink()
        with MetricStore(path) as store:
            assert stored(store)["metric"].tolist() == ["kept"]


def test_a_store_directory_that_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    from tests.fsutil import tmpfs

    readonly = tmp_path / "ro"
    with tmpfs(readonly, "1m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here")
        subprocess.run(["mount", "-o", "remount,ro", str(readonly)], check=True)
        with pytest.raises(StoreError, match="cannot create the store's directory: Read-only"):
            MetricStore(readonly / "missing" / "s.duckdb")
