"""`autofix anomaly score` through the real command: files in, scores out, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autofix.models.anomaly import RobustScorer, RollingZScore
from tests.clirun import run_autofix


def run(args: list[str], env: dict[str, str], check: int = 0) -> subprocess.CompletedProcess[str]:
    return run_autofix(args, env, check)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
        "AUTOFIX_HOSTNAME": "test-host",
        "COLUMNS": "200",
    }


def latency_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = 0.04 * np.exp(rng.standard_normal(n) * 0.12)
    values[400:420] *= 5
    ts = pd.date_range("2024-03-04", periods=n, freq="5min")
    return pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": values})


def test_score_one_series_matches_the_library_and_is_causal(
    env: dict[str, str], tmp_path: Path
) -> None:
    data = latency_frame()
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    data.to_csv(src, index=False)
    proc = run(["anomaly", "score", "--input", str(src), "--output", str(dst), "--json"], env)
    summary = json.loads(proc.stdout)
    assert summary["points"] == 600
    assert summary["above_default_threshold"] > 0
    result = pd.read_csv(dst)
    assert list(result.columns) == ["timestamp", "value", "anomaly_score"]
    assert result["timestamp"].tolist() == data["timestamp"].tolist()
    scores = result["anomaly_score"].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    expected = RobustScorer().fit_score(
        pd.DataFrame(
            {"series_id": "", "ts": pd.to_datetime(data["timestamp"]), "value": data["value"]}
        )
    )
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert scores[405:420].min() > 0.5
    # Causal: scoring only the first 410 rows gives the same first 410 scores.
    data.iloc[:410].to_csv(src, index=False)
    run(["anomaly", "score", "--input", str(src), "--output", str(dst)], env)
    np.testing.assert_array_equal(pd.read_csv(dst)["anomaly_score"].to_numpy(), scores[:410])


def test_series_id_column_scores_each_series_separately(
    env: dict[str, str], tmp_path: Path
) -> None:
    a, b = latency_frame(seed=1), latency_frame(seed=2)
    b["value"] *= 100  # a very different level must not leak into series a
    data = pd.concat([a.assign(series_id="a"), b.assign(series_id="b")]).sample(
        frac=1.0, random_state=0
    )
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    data.to_csv(src, index=False)
    run(["anomaly", "score", "--input", str(src), "--output", str(dst), "--model", "zscore"], env)
    result = pd.read_csv(dst)
    assert list(result.columns) == ["series_id", "timestamp", "value", "anomaly_score"]
    assert result["series_id"].tolist() == data["series_id"].tolist()  # input order kept
    alone = RollingZScore().fit_score(
        pd.DataFrame({"series_id": "a", "ts": pd.to_datetime(a["timestamp"]), "value": a["value"]})
    )
    got = result[result["series_id"] == "a"].assign(ts=lambda f: pd.to_datetime(f["timestamp"]))
    np.testing.assert_allclose(got.sort_values("ts")["anomaly_score"], alone, atol=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,value\n2024-01-01T00:00:00Z,1\n", "in.csv: line 1: missing column 'timestamp'"),
        ("timestamp\n2024-01-01T00:00:00Z\n", "in.csv: line 1: missing column 'value'"),
        (
            "timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,1\nyesterday,2\n",
            "in.csv: line 4, column timestamp: cannot parse time 'yesterday'",
        ),
        (
            "timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,fast\n",
            "in.csv: line 3, column value: not a finite number 'fast'",
        ),
        ("timestamp,value\n", "in.csv: no data rows"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    env: dict[str, str], tmp_path: Path, content: str, message: str
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(content)
    proc = run(
        ["anomaly", "score", "--input", str(src), "--output", str(tmp_path / "o.csv")], env, 2
    )
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_unknown_model_and_unreadable_file(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    latency_frame(50).to_csv(src, index=False)
    out = str(tmp_path / "o.csv")
    proc = run(["anomaly", "score", "--input", str(src), "--output", out, "--model", "x"], env, 2)
    assert "unknown model 'x'" in proc.stderr
    proc = run(["anomaly", "score", "--input", str(tmp_path / "nope.csv"), "--output", out], env, 2)
    assert "nope.csv: no such file" in proc.stderr
    src.write_bytes(b"\xff\xfe\x00garbage\x00\n\x00")
    proc = run(["anomaly", "score", "--input", str(src), "--output", out], env, 2)
    assert "in.csv" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_repeated_times_are_scored_not_refused(env: dict[str, str], tmp_path: Path) -> None:
    data = latency_frame(300)
    # A DST-like repeat of 12 rows and a re-sent row, as NAB files and real exports have.
    data = pd.concat([data.iloc[:200], data.iloc[188:200], data.iloc[200:], data.iloc[[5]]])
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    data.to_csv(src, index=False)
    run(["anomaly", "score", "--input", str(src), "--output", str(dst), "--model", "onset"], env)
    result = pd.read_csv(dst)
    assert len(result) == len(data)
    assert result["timestamp"].tolist() == data["timestamp"].tolist()
    assert result["anomaly_score"].between(0, 1).all()
    proc = run(
        ["anomaly", "score", "--input", str(src), "--output", str(dst), "--direction", "x"],
        env,
        2,
    )
    assert "--direction: 'x' is not up, down or both" in proc.stderr
