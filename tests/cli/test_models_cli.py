"""`autofix forecast / backtest / predict / train / models list` through the real command."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.clirun import run_autofix

ROOT = Path(__file__).parents[2]


def run(args: list[str], env: dict[str, str], check: int = 0) -> subprocess.CompletedProcess[str]:
    return run_autofix(args, env, check, cwd=ROOT, timeout=300)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
        "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
        "AUTOFIX_HOSTNAME": "test-host",
    }


@pytest.fixture
def fill_csv(tmp_path: Path) -> Path:
    ts = pd.date_range("2026-01-01", periods=7 * 288, freq="5min")
    used = np.linspace(40.0, 95.0, len(ts))
    path = tmp_path / "disk.csv"
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": used}).to_csv(
        path, index=False
    )
    return path


def test_forecast_json_fields(env: dict[str, str], fill_csv: Path) -> None:
    out = run(["forecast", "--input", str(fill_csv), "--capacity", "100", "--json"], env)
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert {"eta", "eta_lo", "eta_hi", "p_within", "model"} <= set(result)
    assert set(result["p_within"]) == {"1h", "4h", "24h", "4d"}
    assert result["model"] == "default"
    eta = pd.Timestamp(result["eta"])
    # 55 points in 7 days: the last 5 take ~15 h.
    assert pd.Timestamp("2026-01-08T08:00Z") < eta < pd.Timestamp("2026-01-08T22:00Z")
    assert pd.Timestamp(result["eta_lo"]) <= eta <= pd.Timestamp(result["eta_hi"])
    # Calibrated (autofix/models/calibration.json): an ETA ~15 h out is an alert at 24 h
    # and at 4 days, with the confidence the tuning backtest earned (not a certainty).
    assert result["p_within"]["24h"] > 0.5
    assert result["p_within"]["4d"] > 0.5


def test_forecast_many_series_one_line_each(env: dict[str, str], tmp_path: Path) -> None:
    ts = pd.date_range("2026-01-01", periods=3 * 288, freq="5min")
    rows = [
        pd.DataFrame({"series_id": sid, "timestamp": ts, "value": values})
        for sid, values in (("a", np.linspace(50, 99, len(ts))), ("b", np.full(len(ts), 20.0)))
    ]
    path = tmp_path / "many.csv"
    pd.concat(rows).to_csv(path, index=False)
    out = run(
        [
            "forecast",
            "--input",
            str(path),
            "--capacity",
            "100",
            "--json",
            "--model",
            "predict_linear",
        ],
        env,
    )
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["series_id"] for r in results] == ["a", "b"]
    assert results[0]["eta"] is not None
    assert results[1]["eta"] is None
    assert all(r["model"] == "predict_linear" for r in results)


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("timestamp,value\n2026-01-01,1\nnot-a-time,2\n", [], "line 3, column timestamp"),
        ("timestamp,value\n2026-01-01,lots\n", [], "line 2, column value: not a number"),
        ("time,value\n2026-01-01,1\n", [], "missing column 'timestamp'"),
        ("timestamp,value\n2026-01-01,1\n", ["--model", "magic"], "unknown model 'magic'"),
        ("timestamp,value\n2026-01-01,1\n", ["--horizon", "soon"], "--horizon"),
    ],
)
def test_forecast_bad_input(
    env: dict[str, str], tmp_path: Path, content: str, args: list[str], message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    proc = run(["forecast", "--input", str(path), "--capacity", "100", *args], env, check=2)
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "direction"),
    [("node_filesystem_free_bytes", "down"), ("process_resident_memory_bytes", "up")],
)  # fmt: skip
def test_forecast_infers_the_direction_from_the_metric_name(
    env: dict[str, str], tmp_path: Path, name: str, direction: str
) -> None:
    ts = pd.date_range("2026-01-01", periods=7 * 288, freq="5min")
    used = np.linspace(40.0, 95.0, len(ts))
    value = 100 - used if direction == "down" else used  # the same fill, either way
    path = tmp_path / f"{name}.csv"
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": value}).to_csv(
        path, index=False
    )
    out = run(["forecast", "--input", str(path), "--capacity", "100", "--json"], env)
    assert f"assuming --direction {direction} for {name!r}" in out.stderr
    result = json.loads(out.stdout)
    assert result["eta"] is not None
    assert result["p_within"]["24h"] > 0.5  # calibrated: cautious, not certain
    # Said only when assumed; --metric names a file that does not.
    other = tmp_path / "values.csv"
    path.rename(other)
    flipped = "up" if direction == "down" else "down"
    out = run(["forecast", "--input", str(other), "--capacity", "100", "--json",
               "--direction", flipped], env)  # fmt: skip
    assert out.stderr == ""
    assert json.loads(out.stdout)["eta"] is None  # read the wrong way round: never full
    out = run(["forecast", "--input", str(other), "--capacity", "100", "--json",
               "--metric", name], env)  # fmt: skip
    assert json.loads(out.stdout)["eta"] == result["eta"]


def test_forecast_bad_capacity(env: dict[str, str], fill_csv: Path) -> None:
    proc = run(["forecast", "--input", str(fill_csv), "--capacity", "-5"], env, check=2)
    assert "--capacity" in proc.stderr


def test_backtest_json(env: dict[str, str]) -> None:
    out = run(
        [
            "backtest",
            "--models",
            "default,predict_linear",
            "--scenarios",
            str(ROOT / "data" / "samples"),
            "--json",
        ],
        env,
    )
    result = json.loads(out.stdout)
    assert set(result["models"]) == {"default", "predict_linear"}
    for metrics in result["models"].values():
        assert {
            "recall_24h",
            "precision_24h",
            "false_fix_rate",
            "lead_time_median_min",
            "flaps_per_series_day",
            "interval_coverage_80",
        } <= set(metrics)
    assert result["models"]["default"]["false_fix_rate"] < 0.01


def test_train_promotes_then_predict_uses_champion(env: dict[str, str]) -> None:
    first = json.loads(run(["train", "--json"], env).stdout)
    assert first["promoted"] is True
    assert first["false_fix_rate"] < 0.01
    second = json.loads(run(["train", "--json"], env).stdout)
    assert second["version"] == first["version"] + 1
    assert second["promoted"] is True  # same recall, same false-fix rate: not worse
    listed = [json.loads(x) for x in run(["models", "list", "--json"], env).stdout.splitlines()]
    assert {row["version"] for row in listed} == {first["version"], second["version"]}
    sample = str(ROOT / "data" / "samples" / "disk_fill_linear.parquet")
    run(["import", sample, "--shift-to-now"], env)
    summary = json.loads(run(["predict", "--json"], env).stdout)
    assert summary["model_version"] == str(second["version"])
    assert summary["written"] == 2
    assert (Path(env["AUTOFIX_MODELS_DIR"]) / "mlflow.db").is_file()
