"""The scenario generator: import-shaped frames, determinism, and truth that matches data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autofix.data.scenarios import (
    COLUMNS,
    SCENARIOS,
    ScenarioData,
    generate,
    generate_fleet,
    write_suite,
)
from autofix.errors import InputError

STEP = pd.Timedelta("5min")
NAMES = sorted(SCENARIOS)

# What each scenario must claim at the default 14 days: a generator that silently stopped
# exhausting (or started exhausting a trap) fails here, not in a backtest weeks later.
EXPECTED_IN_WINDOW = {
    "disk_fill_linear": [True, False],
    "disk_log_rotation_sawtooth": [False],
    "disk_log_rotation_sawtooth_trend": [True],
    "disk_cleanup_burst": [False],
    "disk_step_grown": [False],
    "memory_leak_gc_sawtooth": [True],
    "memory_gc_sawtooth_healthy": [False],
    "daily_seasonality": [False, False],
    "deploy_step": [False, False],
    "gaps": [False, False],
    "query_slowdown": [False, False],
    # Held-out shapes (issue 15): not in data/samples, never tuned on.
    "disk_growth_stopped": [False],
    "disk_accelerating": [True],
    "memory_busy_stable": [False],
    "disk_weekly_cleanup": [False],
    "memory_leak_gc_near_top": [True],
    "disk_retention_full": [False],
}


@pytest.fixture(scope="module")
def generated() -> dict[str, ScenarioData]:
    return {name: generate(name) for name in NAMES}


def _ts(iso: str) -> pd.Timestamp:
    return pd.Timestamp(iso).tz_convert("UTC").tz_localize(None)


def _series(data: ScenarioData, truth: dict[str, Any]) -> tuple[pd.DataFrame, pd.Series]:
    s = data.samples
    rows = s[(s["metric"] == truth["metric"]) & (s["labels"] == truth["labels"])]
    return rows, data.clean[rows.index]


def _margin(rows: pd.DataFrame, values: pd.Series, direction: str) -> pd.Series:
    return values if direction == "down" else rows["capacity"] - values


def test_registry_covers_the_brief() -> None:
    assert set(EXPECTED_IN_WINDOW) == set(SCENARIOS)
    hosts = [s.host for s in SCENARIOS.values()]
    assert len(hosts) == len(set(hosts)), "one host per scenario, so a suite loads into one store"


@pytest.mark.parametrize("name", NAMES)
def test_columns_and_dtypes(generated: dict[str, ScenarioData], name: str) -> None:
    s = generated[name].samples
    assert tuple(s.columns) == COLUMNS
    assert s["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert s["value"].dtype == np.float64
    assert s["capacity"].dtype == np.float64
    for col in ("host", "metric", "labels"):
        assert s[col].dtype == object
        assert s[col].map(type).eq(str).all()
    assert not s.duplicated(["host", "metric", "labels", "timestamp"]).any()
    assert len(generated[name].clean) == len(s)
    assert (generated[name].clean.index == s.index).all()


@pytest.mark.parametrize("name", NAMES)
def test_values_are_physical(generated: dict[str, ScenarioData], name: str) -> None:
    data = generated[name]
    s = data.samples
    assert np.isfinite(s["value"]).all()
    assert (s["value"] >= 0).all()
    for truth in data.labels_truth["series"]:
        rows, _ = _series(data, truth)
        if truth["direction"] == "none":
            assert rows["capacity"].isna().all()
            assert truth["capacity"] is None
        else:
            assert (rows["capacity"] > 0).all()
            assert (rows["value"] <= rows["capacity"]).all()
            assert truth["capacity"] == rows["capacity"].iloc[-1]


@pytest.mark.parametrize("name", NAMES)
def test_labels_are_canonical_json(generated: dict[str, ScenarioData], name: str) -> None:
    data = generated[name]
    for labels in data.samples["labels"].unique():
        canonical = json.dumps(json.loads(labels), sort_keys=True, separators=(",", ":"))
        assert labels == canonical
    truth_keys = {(t["metric"], t["labels"]) for t in data.labels_truth["series"]}
    frame_keys = set(data.samples[["metric", "labels"]].itertuples(index=False, name=None))
    assert truth_keys == frame_keys
    json.dumps(data.labels_truth, allow_nan=False)  # serialisable, no NaN


@pytest.mark.parametrize("name", NAMES)
def test_exhaustion_truth_matches_the_noiseless_process(
    generated: dict[str, ScenarioData], name: str
) -> None:
    data = generated[name]
    end = _ts(data.labels_truth["end"])
    claims = []
    for truth in data.labels_truth["series"]:
        claims.append(truth["exhausts_in_window"])
        if truth["direction"] == "none":
            assert truth["exhaustion_time"] is None
            continue
        rows, clean = _series(data, truth)
        crossed = rows["timestamp"][_margin(rows, clean, truth["direction"]) <= 0]
        observed_crossed = rows["timestamp"][_margin(rows, rows["value"], truth["direction"]) <= 0]
        if truth["exhausts_in_window"]:
            eta = _ts(truth["exhaustion_time"])
            assert eta < end
            assert abs(crossed.iloc[0] - eta) <= STEP
            # Noise alone never crosses: the observed series is not full before the truth.
            assert observed_crossed.iloc[0] >= eta - STEP
        else:
            assert crossed.empty
            assert observed_crossed.empty, "a trap must never reach its threshold"
            if truth["exhaustion_time"] is not None:
                assert _ts(truth["exhaustion_time"]) >= end
    assert claims == EXPECTED_IN_WINDOW[name]


def test_fill_linear_exhausts_where_the_parameters_say(
    generated: dict[str, ScenarioData],
) -> None:
    data = generated["disk_fill_linear"]
    truth = data.labels_truth["series"][0]
    start = _ts(data.labels_truth["start"])
    expected = start + pd.Timedelta(
        days=14 * SCENARIOS["disk_fill_linear"].parameters["exhaust_at"]
    )
    assert _ts(truth["exhaustion_time"]) == expected
    # The cache disk fills after the end: the extrapolated time is given, not null.
    cache = data.labels_truth["series"][1]
    assert _ts(cache["exhaustion_time"]) > _ts(data.labels_truth["end"])


def test_grown_disk_was_heading_for_full_before_the_step(
    generated: dict[str, ScenarioData],
) -> None:
    data = generated["disk_step_grown"]
    truth = data.labels_truth["series"][0]
    (grown_at, new_capacity) = truth["capacity_changes"][0]
    rows, _ = _series(data, truth)
    before = rows[rows["timestamp"] < _ts(grown_at)]
    after = rows[rows["timestamp"] >= _ts(grown_at)]
    assert (before["capacity"] < new_capacity).all()
    assert (after["capacity"] == new_capacity).all()
    assert after["value"].iloc[0] - before["value"].iloc[-1] > 0.4 * new_capacity
    assert truth["exhaustion_time"] is None
    cf = _ts(truth["counterfactual_exhaustion_time"])
    assert _ts(grown_at) < cf < _ts(data.labels_truth["end"])
    # Before the step, the avail trend is steadily down (a forecaster was right to worry).
    assert before["value"].iloc[-1] < 0.5 * before["value"].iloc[0]


def test_sawtooth_trap_really_looks_like_filling(generated: dict[str, ScenarioData]) -> None:
    """Within a rotation day avail falls fast; across days it does not fall at all."""
    rows, clean = _series(
        generated["disk_log_rotation_sawtooth"],
        generated["disk_log_rotation_sawtooth"].labels_truth["series"][0],
    )
    daily_min = clean.groupby(rows["timestamp"].dt.floor("D")).min()
    assert daily_min.iloc[1:-1].std() / daily_min.mean() < 0.02
    capacity = rows["capacity"].iloc[0]
    assert (clean.max() - clean.min()) > 0.4 * capacity
    assert (clean.diff() > 0.3 * capacity).sum() >= 13  # one sharp rotation per day


def test_slowdown_windows(generated: dict[str, ScenarioData]) -> None:
    data = generated["query_slowdown"]
    slow, healthy = data.labels_truth["series"]
    assert len(slow["slowdown_windows"]) >= 3
    assert healthy["slowdown_windows"] == []
    rows, clean = _series(data, slow)
    ts = rows["timestamp"].to_numpy()
    inside = np.zeros(len(rows), dtype=bool)
    for (start, end), factor in zip(
        slow["slowdown_windows"], slow["slowdown_factors"], strict=True
    ):
        s, e = _ts(start), _ts(end)
        assert pd.Timedelta("20min") <= e - s <= pd.Timedelta("120min")
        assert 3 <= factor <= 10
        win = (ts >= s) & (ts < e)
        inside |= win
        first = int(np.flatnonzero(win)[0])
        assert clean.iloc[first] / clean.iloc[first - 1] == pytest.approx(factor, rel=0.02)
    for truth in (slow, healthy):
        rows, clean = _series(data, truth)
        mask = inside if truth is slow else np.zeros(len(rows), dtype=bool)
        baseline = clean.where(~mask)
        high = (rows["value"] >= 3 * baseline).to_numpy()
        runs = np.convolve(high.astype(int), np.ones(4, dtype=int), mode="valid")
        assert runs.max() < 4, "no 20-minute run of x3 latency outside a labelled window"
        assert (rows["value"] > 0).all()


def test_gaps_and_counter_resets(generated: dict[str, ScenarioData]) -> None:
    data = generated["gaps"]
    disk, counter = data.labels_truth["series"]
    step_count = int(pd.Timedelta(days=14) / STEP)
    for truth in (disk, counter):
        rows, _ = _series(data, truth)
        ts = rows["timestamp"]
        missing = 0
        for start, end in truth["gaps"]:
            s, e = _ts(start), _ts(end)
            assert not ts.between(s, e, inclusive="left").any()
            assert (ts == e).any()  # the collector is back exactly at the end
            missing += int((e - s) / STEP)
        assert len(rows) == step_count - missing
    rows, _ = _series(data, counter)
    drops = rows["timestamp"][rows["value"].diff() < 0]
    assert [_ts(r) for r in counter["counter_resets"]] == list(drops)
    assert counter["type"] == "counter"
    assert (rows["value"] == np.floor(rows["value"])).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_history(name: str) -> None:
    a, b = generate(name, seed=7, days=3.0), generate(name, seed=7, days=3.0)
    pd.testing.assert_frame_equal(a.samples, b.samples)
    assert a.labels_truth == b.labels_truth
    c = generate(name, seed=8, days=3.0)
    assert not a.samples["value"].equals(c.samples["value"])


def test_host_start_and_step_options() -> None:
    data = generate("deploy_step", host="api-9", days=2.0, step="1min", start="2025-01-01T10:00Z")
    assert set(data.samples["host"]) == {"api-9"}
    assert data.labels_truth["host"] == "api-9"
    assert data.samples["timestamp"].iloc[0] == pd.Timestamp("2025-01-01 10:00")
    steps = data.samples.groupby("labels")["timestamp"].diff().dropna()
    assert steps.eq(pd.Timedelta("1min")).all()
    assert data.labels_truth["start"] == "2025-01-01T10:00:00Z"


def test_bad_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown scenario"):
        generate("disk_fill_quadratic")
    with pytest.raises(InputError, match="step"):
        generate("gaps", step="often")
    with pytest.raises(InputError, match="fmt"):
        write_suite(tmp_path, fmt="xlsx")  # type: ignore[arg-type]


def test_write_suite_csv_is_byte_identical(tmp_path: Path) -> None:
    names = ["disk_cleanup_burst", "gaps"]
    first = write_suite(tmp_path / "a", names=names, days=2.0, fmt="csv")
    second = write_suite(tmp_path / "b", names=names, days=2.0, fmt="csv")
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    frame = pd.read_csv(first[0])
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == len(generate("disk_cleanup_burst", days=2.0).samples)


def test_write_suite_parquet_and_index(tmp_path: Path) -> None:
    names = ["query_slowdown", "disk_step_grown"]
    paths = write_suite(tmp_path, names=names, seed=3, days=2.0)
    assert {p.name for p in paths} == {
        "query_slowdown.parquet",
        "query_slowdown.labels.json",
        "disk_step_grown.parquet",
        "disk_step_grown.labels.json",
        "suite.json",
    }
    suite = json.loads((tmp_path / "suite.json").read_text())
    assert [s["name"] for s in suite["scenarios"]] == names
    for entry in suite["scenarios"]:
        data = generate(entry["name"], seed=3, days=2.0)
        frame = pd.read_parquet(tmp_path / entry["data"])
        pd.testing.assert_frame_equal(frame, data.samples)
        labels = json.loads((tmp_path / entry["labels"]).read_text())
        assert labels == data.labels_truth
        assert entry["rows"] == len(frame)
    again = tmp_path / "again"
    write_suite(again, names=names, seed=3, days=2.0)
    for name in names:
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / f"{name}.parquet"),
            pd.read_parquet(again / f"{name}.parquet"),
        )


def test_fleet_shape_and_determinism() -> None:
    fleet = generate_fleet(40, days=1.0, seed=1)
    assert tuple(fleet.columns) == COLUMNS
    assert len(fleet) == 40 * 288
    assert fleet["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert fleet.groupby(["host", "metric", "labels"], observed=True).ngroups == 40
    assert np.isfinite(fleet["value"]).all()
    assert (fleet["value"] >= 0).all()
    bytes_rows = fleet["capacity"].notna()
    assert (fleet.loc[bytes_rows, "value"] <= fleet.loc[bytes_rows, "capacity"]).all()
    pd.testing.assert_frame_equal(fleet, generate_fleet(40, days=1.0, seed=1))
    assert not fleet["value"].equals(generate_fleet(40, days=1.0, seed=2)["value"])


def test_fleet_of_two_weeks_has_every_sample_of_every_series() -> None:
    # Its speed (10,000 series x 14 days) is measured by benchmarks/scenarios.py.
    fleet = generate_fleet(12, days=14.0)
    per_series = fleet.groupby(["host", "metric", "labels"], observed=True)["timestamp"]
    assert per_series.size().tolist() == [4032] * 12
    assert (per_series.nunique() == 4032).all()
    steps = per_series.diff().dropna().unique()
    assert list(steps) == [np.timedelta64(5, "m")]


def test_held_out_suite_uses_other_seeds_and_other_series(tmp_path: Path) -> None:
    from autofix.data.scenarios import HELD_OUT, held_out_suite
    from autofix.data.scenarios._unseen import HELD_OUT_SEEDS, TUNING_SEEDS

    assert not set(HELD_OUT_SEEDS) & set(TUNING_SEEDS)
    dirs = held_out_suite(tmp_path, seeds=[200, 201])
    assert [d.name for d in dirs] == ["seed200", "seed201"]
    assert sorted(p.name for p in dirs[0].glob("*.labels.json")) == sorted(
        f"{n}.labels.json" for n in HELD_OUT
    )
    a = pd.read_parquet(dirs[0] / "disk_growth_stopped.parquet")["value"].to_numpy()
    b = pd.read_parquet(dirs[1] / "disk_growth_stopped.parquet")["value"].to_numpy()
    assert not np.array_equal(a, b)  # a seed draws its own shape parameters
    stopped = json.loads((dirs[0] / "disk_growth_stopped.labels.json").read_text())
    assert stopped["series"][0]["traps"] == ["stopped"]
    assert stopped["series"][0]["growth_stopped"] < stopped["end"]
