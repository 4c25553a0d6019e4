"""The notebook API: store access beside a writer, suites, backtests, MLflow, the replay."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest

import autofix
from autofix import lab
from autofix.backtest.forecast import backtest
from autofix.collect.base import format_labels
from autofix.config import load_settings
from autofix.data.scenarios import generate
from autofix.errors import InputError, StoreError, StoreLockedError
from autofix.jobs import Service
from autofix.models.anomaly import make_scorer
from autofix.models.registry import make_forecaster
from autofix.pipeline import Pipeline
from autofix.policy import decide, score_outcome
from autofix.store import MetricStore
from autofix.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]
T0 = pd.Timestamp("2024-03-04")


def _import_frame(*names: str, days: float = 3.0) -> pd.DataFrame:
    parts = [generate(name, days=days).samples for name in names]
    return pd.concat(parts, ignore_index=True).rename(columns={"timestamp": "ts"})


@pytest.fixture(scope="module")
def small_suite() -> lab.Suite:
    return lab.scenario_suite("small")


# -- the store ---------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from autofix.store import MetricStore
store = MetricStore(sys.argv[1])
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def busy_store(tmp_path: Path) -> Iterator[tuple[Path, Path, int]]:
    """A store file held for writing by another process (as `autofix serve` holds it),
    with a snapshot exported before it started."""
    path, snapshot = tmp_path / "busy.duckdb", tmp_path / "snap"
    with MetricStore(path) as store:
        store.write(_import_frame("disk_fill_linear", days=1.0))
        store.export_parquet(snapshot)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield path, snapshot, holder.pid
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_open_store_reads_the_snapshot_while_a_writer_holds_the_file(
    busy_store: tuple[Path, Path, int],
) -> None:
    path, snapshot, _ = busy_store
    with lab.open_store(path, snapshot) as store:
        assert store.snapshot == snapshot
        assert store.read_only
        assert store.count_samples() == 2 * 288
        assert set(lab.load_series(store)["metric"]) == {"node_filesystem_avail_bytes"}


def test_open_store_without_a_snapshot_says_what_to_do(
    busy_store: tuple[Path, Path, int], tmp_path: Path
) -> None:
    path, _, pid = busy_store
    with pytest.raises(StoreLockedError) as info:
        lab.open_store(path, tmp_path / "no-snapshot")
    message = str(info.value)
    assert f"PID {pid}" in message
    assert "autofix export --parquet" in message
    assert "IO Error" not in message


def test_open_store_defaults_to_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mine.duckdb"
    with MetricStore(path) as store:
        store.write(_import_frame("disk_fill_linear", days=1.0))
    monkeypatch.setenv("AUTOFIX_DB_PATH", str(path))
    monkeypatch.setenv("AUTOFIX_SNAPSHOT_DIR", str(tmp_path / "snap"))
    with lab.open_store() as store:
        assert store.path == str(path)
        assert store.read_only
        assert store.snapshot is None


def test_open_store_falls_back_to_the_suite_only_when_asked(tmp_path: Path) -> None:
    missing, snapshot = tmp_path / "none.duckdb", tmp_path / "snap"
    with pytest.raises(StoreError, match="no metric store yet"):
        lab.open_store(missing, snapshot)
    with lab.open_store(missing, snapshot, fallback="small") as store:
        assert store.path == ":memory:"
        hosts = set(store.series()["host"])
    assert {"web-1", "db-3", "edge-1"} <= hosts
    MetricStore(tmp_path / "empty.duckdb").close()
    with lab.open_store(tmp_path / "empty.duckdb", snapshot, fallback="small") as store:
        assert store.count_samples() > 0


def test_load_series_identity_fill_and_capacity_in_force() -> None:
    store = MetricStore(":memory:")
    store.write(_import_frame("disk_step_grown", "query_slowdown"))
    frame = lab.load_series(store)
    assert list(frame.columns) == list(lab.SERIES_COLUMNS)
    disk = frame[frame["metric"] == "node_filesystem_avail_bytes"]
    # The disk is grown from 100 to 200 GiB mid-history: each sample carries its own.
    assert sorted(disk["capacity"].unique() / 2**30) == [100.0, 200.0]
    expected = 1 - disk["value"] / disk["capacity"]
    np.testing.assert_allclose(disk["fill"], expected)
    assert frame.loc[frame["metric"] == "pg_query_latency_seconds", "fill"].isna().all()
    top = lab.load_series(store, "pg_query_latency_seconds", match={"query": "top_articles"})
    assert top["labels"].unique().tolist() == ['{"datname":"news","query":"top_articles"}']
    recent = lab.load_series(store, host="db-2", since=timedelta(hours=6))
    assert recent["ts"].min() == frame["ts"].max() - pd.Timedelta(hours=6)
    assert lab.load_series(store, host=["nobody"]).empty


def test_gaps_and_capacity_changes_match_the_labels(small_suite: lab.Suite) -> None:
    store = small_suite.to_store()
    gaps = lab.find_gaps(lab.load_series(store, host="edge-1"))
    truth = small_suite.truth.set_index("scenario").loc["gaps"].iloc[0]
    step = pd.Timedelta(minutes=5)
    # A gap [a, b) in the labels: the last sample before it is at a - step, the next at b.
    labelled = [(a - step, b) for a, b in truth["gaps"]]
    for _, rows in gaps.groupby("metric"):
        assert list(zip(rows["start"], rows["end"], strict=True)) == labelled
    changes = lab.capacity_changes(store)
    assert set(changes["host"]) == {"db-2"}
    grown = changes.iloc[-1]
    grown_truth = small_suite.truth.set_index("host").loc["db-2", "capacity_changes"][0]
    assert (grown["ts"], grown["capacity"]) == grown_truth
    assert grown["previous"] == grown["capacity"] / 2


# -- labelled histories --------------------------------------------------------------------


def test_small_suite_has_every_scenario_with_its_truth(small_suite: lab.Suite) -> None:
    assert small_suite.end - small_suite.start == pd.Timedelta(days=7) - pd.Timedelta(minutes=5)
    assert small_suite.truth["scenario"].nunique() == 11
    fills = small_suite.truth[small_suite.truth["exhaustion_time"].notna()]
    assert "disk_fill_linear" in set(fills["scenario"])
    slow = small_suite.truth[small_suite.truth["slowdown_windows"].map(len) > 0]
    assert set(slow["scenario"]) == {"query_slowdown"}
    assert all(s.frame["value"].between(0, 1.001).all() for s in small_suite.series)


def test_full_suite_is_the_committed_one() -> None:
    suite = lab.scenario_suite("full")
    index = json.loads((ROOT / "data/samples/suite.json").read_text())
    assert len(suite.samples) == sum(s["rows"] for s in index["scenarios"])
    with pytest.raises(InputError, match="size must be"):
        lab.scenario_suite("huge")  # type: ignore[arg-type]


def test_recorded_suite_has_labelled_windows() -> None:
    suite = lab.recorded_suite()
    top = suite.truth[suite.truth["labels"].str.contains("top_articles")].iloc[0]
    assert len(top["slowdown_windows"]) > 5
    assert suite.samples["timestamp"].dt.tz is None


# -- models --------------------------------------------------------------------------------


def test_run_backtest_is_the_backtest(small_suite: lab.Suite) -> None:
    series = [s for s in small_suite.series if s.scenario.startswith("disk_log")]
    table, forecasts = lab.run_backtest(["predict_linear", "node_mixin"], series)
    direct, _ = backtest({"predict_linear": partial(make_forecaster, "predict_linear")}, series)
    assert list(table.index) == ["predict_linear", "node_mixin"]
    assert table.loc["predict_linear"].to_dict() == pytest.approx(
        direct["predict_linear"], nan_ok=True
    )
    assert set(forecasts) == {"predict_linear", "node_mixin"}


def test_log_run_compare_and_list(tmp_path: Path) -> None:
    good = {"false_fix_rate": 0.0, "recall_24h": 0.9, "decisions": 10.0, "eta": math.nan}
    first = lab.log_run("default", good, models_dir=tmp_path, register=True)
    assert first.metrics == {"false_fix_rate": 0.0, "recall_24h": 0.9, "decisions": 10.0}
    verdict = lab.compare_with_champion(first)
    assert verdict.promotable
    assert verdict.champion_version is None
    assert "first version" in verdict.reason
    Tracker(tmp_path).promote_if_better(first.registered_model, first.version)
    worse = lab.log_run(
        "predict_linear",
        {"false_fix_rate": 0.0, "recall_24h": 0.5},
        models_dir=tmp_path,
        register=True,
    )
    verdict = lab.compare_with_champion(worse, metrics=("recall_24h", "false_fix_rate"))
    assert not verdict.promotable
    assert verdict.champion_version == first.version
    assert verdict.table.loc["recall_24h"].tolist() == [0.5, 0.9]
    models = lab.list_models(tmp_path)
    assert models["version"].tolist() == [worse.version, first.version]
    assert models["alias"].tolist() == [None, "champion"]


def test_notebook_runs_do_not_register_in_the_real_store_unless_asked(tmp_path: Path) -> None:
    real, scratch = tmp_path / "models", tmp_path / "scratch"
    good = {"false_fix_rate": 0.0, "recall_24h": 0.9}
    run = lab.log_run("default", good, models_dir=real, scratch_dir=scratch)
    assert run.models_dir == scratch
    assert lab.list_models(real).empty  # nothing registered in the real store
    assert lab.list_models(scratch)["version"].tolist() == [run.version]
    assert lab.compare_with_champion(run).champion_version is None  # compared with real's
    kept = lab.log_run("default", good, models_dir=real, register=True)
    assert lab.list_models(real)["version"].tolist() == [kept.version]


def test_score_history_and_event_sweep(small_suite: lab.Suite) -> None:
    store = small_suite.to_store()
    history = lab.load_series(store, "pg_query_latency_seconds")
    scored = lab.score_history(history)
    direct = make_scorer("default").fit_score(history[["series_id", "ts", "value"]])
    np.testing.assert_allclose(scored["score"], direct)
    assert len(lab.anomaly_cases(scored, small_suite.truth)) == 2
    sweep = lab.event_sweep(scored, small_suite.truth, [0.5, 0.9])
    assert sweep["threshold"].tolist() == [0.5, 0.9]
    slow = small_suite.truth[small_suite.truth["metric"] == "pg_query_latency_seconds"]
    windows = int(slow["slowdown_windows"].map(len).sum())
    assert sweep["events"].tolist() == [windows, windows]
    baseline = lab.score_history(history, "zscore", window=30)
    assert not np.allclose(baseline["score"], scored["score"])
    assert 0 < lab.default_threshold("zscore") < 1


# -- the replay ----------------------------------------------------------------------------

RULES: list[dict[str, Any]] = [
    {
        "name": "disk-24h",
        "when": {
            "type": "exhaustion",
            "metric": "node_filesystem_avail_bytes",
            "within": "24h",
            "probability": 0.5,
        },
        "actions": [{"action": "files.rotate_logs", "target": "logs"}],
        "mode": "auto",
    },
    {
        "name": "memory-low",
        "when": {
            "type": "threshold",
            "metric": "node_memory_available_bytes",
            "of_capacity": True,
            "below": 0.25,
            "for": "10m",
        },
    },
    {
        "name": "query-slow",
        "when": {
            "type": "anomaly",
            "metric": "probe_query_duration_seconds",
            "match": {"target": "news-db"},
            "score": 0.5,
            "for": "10m",
        },
        "mode": "shadow",
    },
    {
        "name": "query-slower",
        "when": {
            "type": "baseline",
            "metric": "probe_query_duration_seconds",
            "window": "30m",
            "baseline": "6h",
            "performance_below": 0.5,
        },
    },
    {
        "name": "off",
        "when": {"type": "threshold", "metric": "node_load1", "above": 0},
        "mode": "off",
    },
]


def _as_probe(labels: str) -> str:
    return format_labels({**json.loads(labels), "target": "news-db"})


@dataclasses.dataclass
class ReplayCase:
    pipeline: Pipeline
    history: pd.DataFrame  # import-shaped, with ts
    store: MetricStore
    predictions: pd.DataFrame
    truth: pd.DataFrame
    start: datetime
    end: datetime
    step: timedelta
    decisions: pd.DataFrame


@pytest.fixture(scope="module")
def replay_case(tmp_path_factory: pytest.TempPathFactory) -> ReplayCase:
    logs = tmp_path_factory.mktemp("logs")
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "logs", "kind": "logdir", "path": str(logs)}], "rules": RULES}
    )
    history = _import_frame("disk_fill_linear", "memory_leak_gc_sawtooth", "query_slowdown")
    # The canary query as the service's postgres probe records it.
    latency = history["metric"] == "pg_query_latency_seconds"
    history.loc[latency, "metric"] = "probe_query_duration_seconds"
    history.loc[latency, "labels"] = history.loc[latency, "labels"].map(_as_probe)
    truth = lab.truth_frame(
        [generate(n, days=3.0).labels_truth for n in ("disk_fill_linear", "query_slowdown")]
    )
    probes = truth["metric"] == "pg_query_latency_seconds"
    truth.loc[probes, "metric"] = "probe_query_duration_seconds"
    truth.loc[probes, "labels"] = truth.loc[probes, "labels"].map(_as_probe)
    store = MetricStore(":memory:")
    store.write(history)
    start, end, step = T0 + timedelta(hours=36), T0 + timedelta(days=3), timedelta(minutes=30)
    predictions = lab.predict_history(
        store, start=start - timedelta(hours=1), end=end, model="predict_linear"
    )
    decisions = lab.replay_rules(
        pipeline,
        store,
        start=start,
        end=end,
        step=step,
        predictions=predictions,
        truth=truth,
    )
    return ReplayCase(pipeline, history, store, predictions, truth, start, end, step, decisions)


def test_replay_decides_what_decide_decides_on_the_services_frames(
    replay_case: ReplayCase, tmp_path: Path
) -> None:
    """At chosen instants, a real Service over a store holding only the history up to
    then builds its frames; decide() on them must give the replay's decisions."""
    case = replay_case
    made = case.decisions
    assert set(made["rule"]) == {"disk-24h", "memory-low", "query-slow", "query-slower"}
    busy = sorted(made.groupby("rule")["ts"].first())
    quiet = [case.start, case.start + 3 * case.step]
    instants = sorted({*busy, *(t for t in made["ts"].drop_duplicates()[::7]), *quiet})
    settings = load_settings(
        environ={
            "AUTOFIX_DB_PATH": str(tmp_path / "unused.duckdb"),
            "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
        }
    )
    store = MetricStore(":memory:")
    service = Service(settings, case.pipeline, store)
    previous = pd.Timestamp.min
    for now in instants:
        now = pd.Timestamp(now).to_pydatetime()
        ts = case.history["ts"]
        store.write(case.history[(ts > previous) & (ts <= now)])
        made_at = case.predictions["made_at"]
        new = case.predictions[(made_at > previous) & (made_at <= now)]
        for when, rows in new.groupby("made_at"):
            store.write_predictions(rows, pd.Timestamp(when).to_pydatetime())
        previous = pd.Timestamp(now)
        obs = dataclasses.replace(service.observe(now), scores=service.score_anomalies(now))
        before = made[made["ts"] < now]
        recent = {
            f"{rule}|{subject}": pd.Timestamp(t).to_pydatetime()
            for (rule, subject), t in before.groupby(["rule", "subject"])["ts"].max().items()
        }
        expected = decide(case.pipeline.rules, case.pipeline, obs, now, recent, "approve")
        got = made[made["ts"] == now]
        want = [
            (d.rule, d.subject, d.reason, d.mode, pd.Timestamp(d.detected_at)) for d in expected
        ]
        columns = [got[c] for c in ("rule", "subject", "reason", "mode", "detected_at")]
        assert sorted(want) == sorted(zip(*columns, strict=True)), now
    service.close()


def test_replay_scores_outcomes_with_score_outcome_and_the_labels(
    replay_case: ReplayCase,
) -> None:
    case = replay_case
    made = case.decisions
    assert list(made.columns) == lab.DECISION_COLUMNS
    memory = made[made["rule"] == "memory-low"].iloc[0]
    rule = case.pipeline.rule("memory-low")
    assert rule is not None
    samples = lab.load_series(case.store, "node_memory_available_bytes")
    after = samples[(samples["ts"] > memory["ts"]) & (samples["ts"] <= memory["score_at"])]
    verdict = score_outcome(rule, memory["ts"], after[["ts", "value", "metric", "capacity"]])
    assert verdict is not None
    assert (memory["real"], memory["outcome"]) == verdict
    assert pd.isna(memory["truth"])  # the labels say nothing about a threshold rule
    assert memory["false_fix"] == (not verdict[0])
    disk = made[made["rule"] == "disk-24h"]
    when = disk.merge(case.truth, on=["host", "metric", "labels"])["exhaustion_time"]
    expected = when <= disk["ts"].reset_index(drop=True) + pd.Timedelta(hours=24)
    assert disk["truth"].tolist() == expected.tolist()
    assert disk["candidates"].map(tuple).unique().tolist() == [("files.rotate_logs@logs",)]
    slow = made[made["rule"] == "query-slow"]
    assert slow["truth"].notna().all()
    assert slow["mode"].eq("shadow").all()
    late = made[made["score_at"] > case.end]
    assert late["real"].isna().all()


def test_replay_needs_predictions_for_frames(replay_case: ReplayCase) -> None:
    frame = lab.load_series(replay_case.store)
    with pytest.raises(InputError, match="predictions"):
        lab.replay_rules(replay_case.pipeline, frame, start=replay_case.start, end=replay_case.end)
    rules = [r for r in replay_case.pipeline.rules if r.when.type == "threshold"]
    made = lab.replay_rules(
        replay_case.pipeline,
        frame,
        start=replay_case.start,
        end=replay_case.end,
        step=replay_case.step,
        rules=rules,
    )
    expected = replay_case.decisions[replay_case.decisions["rule"] == "memory-low"]
    assert made["ts"].tolist() == expected["ts"].tolist()


def test_observe_shows_one_step(replay_case: ReplayCase) -> None:
    now = replay_case.decisions["ts"].iloc[0]
    obs = lab.observe(
        replay_case.pipeline, replay_case.store, now, predictions=replay_case.predictions
    )
    assert obs.samples["ts"].max() <= now
    assert set(obs.samples["metric"]) <= {
        "node_memory_available_bytes",
        "probe_query_duration_seconds",
    }
    assert (obs.predictions["made_at"] <= now).all()
    assert obs.scores["score"].between(0, 1).all()


def test_replay_summary_sweep_and_suggestion(replay_case: ReplayCase) -> None:
    case = replay_case
    summary = lab.replay_summary(
        case.decisions,
        case.pipeline,
        start=case.start,
        end=case.end,
        step=case.step,
        truth=case.truth,
    )
    assert list(summary.index) == ["disk-24h", "memory-low", "query-slow", "query-slower", "off"]
    disk = summary.loc["disk-24h"]
    assert disk["events"] == 1
    assert disk["basis"] == "truth"
    assert 1 <= disk["fixes"] <= disk["decisions"]
    assert summary.loc["off", "decisions"] == 0
    rule = case.pipeline.rule("disk-24h")
    assert rule is not None
    sweep = lab.threshold_sweep(
        rule,
        case.store,
        [0.2, 0.5, 0.99],
        pipeline=case.pipeline,
        start=case.start,
        end=case.end,
        step=case.step,
        predictions=case.predictions,
        truth=case.truth,
    )
    assert sweep["threshold"].tolist() == [0.2, 0.5, 0.99]
    at_rule = sweep.set_index("threshold").loc[0.5]
    assert at_rule["decisions"] == disk["decisions"]
    assert at_rule["false_fix_rate"] == disk["false_fix_rate"]
    text = lab.suggest_rule_change(rule, lab.best_threshold(sweep), sweep)
    assert text.startswith("# pipelines/news-delivery.yaml: rule disk-24h")


def test_threshold_helpers() -> None:
    pipeline = lab.load_rules(ROOT / "pipelines/news-delivery.yaml")
    table = lab.rules_table(pipeline)
    assert "disk-exhaustion-24h" in set(table["rule"])
    rule = pipeline.rule("disk-exhaustion-24h")
    assert rule is not None
    assert lab.threshold_field(rule) == "probability"
    assert lab.with_threshold(rule, 0.6).when.probability == 0.6  # type: ignore[union-attr]
    with pytest.raises(pydantic.ValidationError):
        lab.with_threshold(rule, 1.5)
    disk_high = pipeline.rule("disk-high")
    assert disk_high is not None
    assert lab.threshold_field(disk_high) == "below"


SWEEP = pd.DataFrame(
    {
        "threshold": [0.5, 0.6, 0.8, 0.9, 0.99],
        "decisions": [40, 30, 20, 10, 5],
        "fixes_per_week": [4.0, 3.0, 3.0, 2.0, 1.0],
        "false_fix_rate": [0.05, 0.0, 0.0, 0.0, 0.0],
        "events": [2, 2, 2, 2, 2],
        "detected": [2, 2, 2, 1, 0],
        "recall": [1.0, 1.0, 1.0, 0.5, 0.0],
        "lead_time_median_min": [600.0, 500.0, 400.0, 100.0, math.nan],
    }
)


def test_best_threshold_and_the_suggested_change() -> None:
    pipeline = lab.load_rules(ROOT / "pipelines/news-delivery.yaml")
    rule = pipeline.rule("disk-exhaustion-24h")
    assert rule is not None
    best = lab.best_threshold(SWEEP)
    assert best is not None
    assert best["threshold"] == 0.6  # the best recall, then the longest lead time
    text = lab.suggest_rule_change(rule, best, SWEEP)
    when = "when: {type: exhaustion, metric: node_filesystem_avail_bytes, within: 24h, "
    assert f"-    {when}probability: 0.8}}" in text
    assert f"+    {when}probability: 0.6}}" in text
    assert "at probability 0.8: recall 1.00, false-fix rate 0.0%, 3.0 fixes/week" in text
    keep = lab.suggest_rule_change(rule, SWEEP.iloc[2], SWEEP)
    assert "keep probability: 0.8" in keep
    assert lab.best_threshold(SWEEP.assign(false_fix_rate=0.5)) is None
    # Catching nothing is no answer, however few false fixes it makes.
    assert lab.best_threshold(SWEEP.iloc[[0, 4]]) is None
    approve = lab.suggest_rule_change(rule, None, SWEEP.iloc[[0, 4]])
    assert "no probability in the sweep keeps the false-fix rate below 1%" in approve
    assert "keep probability: 0.8 and mode: approve" in approve  # approve already
    four_hours = pipeline.rule("disk-exhaustion-4h")
    assert four_hours is not None
    auto = lab.suggest_rule_change(four_hours, None)
    assert auto.endswith("-    mode: auto\n+    mode: approve")
    disk_high = pipeline.rule("disk-high")
    assert disk_high is not None
    change = lab.suggest_rule_change(disk_high, SWEEP.iloc[1])
    assert "for: 5m" in change
    assert "below: 0.6" in change


# -- notebook plumbing ---------------------------------------------------------------------


def test_use_project_dir_finds_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert lab.use_project_dir() == tmp_path
    assert Path.cwd() == tmp_path
    monkeypatch.chdir("/")
    assert lab.use_project_dir() == Path("/")


def test_settings_carry_the_notebook_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOFIX_NOTEBOOK_SIZE", "small")
    assert lab.settings().notebook_size == "small"


def test_lab_is_an_attribute_of_the_package() -> None:
    assert autofix.lab is importlib.import_module("autofix.lab")
    assert "lab" in autofix.__all__
    with pytest.raises(AttributeError):
        _ = autofix.nothing  # type: ignore[attr-defined]
