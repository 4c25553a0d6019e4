"""The `autofix` command end to end: real subprocess, real store file, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clirun import run_autofix

ROOT = Path(__file__).parents[1]


def run(
    args: list[str], env: dict[str, str], check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    return run_autofix(args, env, check)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    pipeline = tmp_path / "pipeline.yaml"
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("x" * 1000)
    pipeline.write_text(f"targets:\n  - {{name: app-logs, kind: logdir, path: {logs}}}\n")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "data" / "autofix.duckdb"),
        "AUTOFIX_SNAPSHOT_DIR": str(tmp_path / "data" / "snapshot"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_HOSTNAME": "test-host",
        "COLUMNS": "200",
    }


def test_collect_once_then_series(env: dict[str, str]) -> None:
    report = json.loads(run(["collect", "--once", "--json"], env).stdout)
    assert report["stored"] > 10
    assert report["errors"] == {}
    lines = run(["series", "--json", "--local"], env).stdout.splitlines()
    series = [json.loads(line) for line in lines]
    metrics = {s["metric"] for s in series}
    assert {
        "node_memory_available_bytes",
        "node_filesystem_avail_bytes",
        "autofix_dir_size_bytes",
        "autofix_collector_up",
    } <= metrics
    assert all(s["host"] == "test-host" and s["samples"] == 1 for s in series)


def test_collect_interval_with_duration(env: dict[str, str]) -> None:
    proc = run(["collect", "--interval", "1s", "--duration", "2.5s", "--json"], env)
    cycles = [json.loads(line) for line in proc.stdout.splitlines()]
    assert 2 <= len(cycles) <= 4
    series = [json.loads(x) for x in run(["series", "--json"], env).stdout.splitlines()]
    up = [s for s in series if s["metric"] == "autofix_collector_up"]
    assert all(s["samples"] == len(cycles) for s in up)


def test_import_scenarios_and_export_snapshot(env: dict[str, str], tmp_path: Path) -> None:
    result = json.loads(run(["import", str(ROOT / "data" / "samples"), "--json"], env).stdout)
    assert result["stored"] > 10_000
    assert result["rejected"] == 0
    again = json.loads(run(["import", str(ROOT / "data" / "samples"), "--json"], env).stdout)
    assert again["stored"] == 0
    assert again["duplicates"] == result["stored"]
    manifest = json.loads(
        run(["export", "--parquet", str(tmp_path / "snap"), "--json"], env).stdout
    )
    assert manifest["rows"]["samples"] == result["stored"]
    from_snapshot = run(["series", "--json", "--snapshot", str(tmp_path / "snap")], env).stdout
    from_store = run(["series", "--json"], env).stdout
    assert from_snapshot == from_store


def test_human_output_has_tables(env: dict[str, str]) -> None:
    run(["import", str(ROOT / "data" / "samples" / "gaps.parquet")], env)
    text = run(["series", "--summary"], env).stdout
    assert "edge-1" in text
    assert "series" in text


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (["import", "{f}"], "timestamp,host,value\n2026-01-01,a,1\n", "missing column 'metric'"),
        (
            ["import", "{f}"],
            "timestamp,host,metric,value\nnope,a,m,1\n",
            "line 2, column timestamp",
        ),
        (["collect", "--interval", "soon"], None, "--interval: not a duration"),
        (["collect", "--once", "--duration", "1m"], None, "--once cannot be combined"),
        (["run", "nosuchjob"], None, "unknown job 'nosuchjob'"),
        (["scenarios", "generate", "--out", "{d}", "--only", "nope"], None, "unknown scenario"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    env: dict[str, str], tmp_path: Path, args: list[str], content: str | None, message: str
) -> None:
    file = tmp_path / "bad.csv"
    if content is not None:
        file.write_text(content)
    args = [a.replace("{f}", str(file)).replace("{d}", str(tmp_path / "out")) for a in args]
    proc = run(args, env, check=2)
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_bad_pipeline_file_is_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    Path(env["AUTOFIX_PIPELINE"]).write_text("targets:\n  - {name: x, kind: tcp, host: h}\n")
    proc = run(["collect", "--once"], env, check=2)
    assert f"{env['AUTOFIX_PIPELINE']}: targets[0].port: Field required" in proc.stderr


def test_bad_setting_is_exit_2(env: dict[str, str]) -> None:
    proc = run(["config", "show"], {**env, "AUTOFIX_COLLECT_INTERVAL": "often"}, check=2)
    assert "collect_interval" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_usage_error_is_exit_2(env: dict[str, str]) -> None:
    run(["collect", "--no-such-flag"], env, check=2)


def test_config_show_reports_sources(env: dict[str, str]) -> None:
    rows = json.loads(run(["config", "show", "--json"], env).stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["hostname"] == {
        "name": "hostname",
        "value": "test-host",
        "source": "env",
        "help": by_name["hostname"]["help"],
    }
    assert by_name["raw_retention"]["source"] == "default"
    assert all(r["help"] for r in rows)


def test_reading_while_another_process_writes(env: dict[str, str], tmp_path: Path) -> None:
    run(["import", str(ROOT / "data" / "samples" / "gaps.parquet")], env)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom autofix.store import MetricStore\n"
            "s = MetricStore(sys.argv[1])\nprint('ready', flush=True)\ntime.sleep(60)",
            env["AUTOFIX_DB_PATH"],
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        proc = run(["series"], env, check=1)
        assert f"PID {holder.pid}" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert "IO Error" not in proc.stderr
        proc = run(["collect", "--once"], {**env, "AUTOFIX_LOCK_WAIT": "0.5s"}, check=1)
        assert "in use by another process" in proc.stderr
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_run_retention(env: dict[str, str]) -> None:
    run(["import", str(ROOT / "data" / "samples" / "gaps.parquet")], env)
    run_record = json.loads(run(["run", "retention", "--json"], env).stdout)
    assert run_record["job"] == "retention"
    assert run_record["ok"] is True
    result = run_record["summary"]
    # The sample history is older than 14 days: it is rolled up, then dropped from raw.
    assert result["raw_deleted"] > 0
    assert result["buckets_written"] >= result["raw_deleted"] // 2


def test_scenarios_generate(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "suite"
    run(
        [
            "scenarios",
            "generate",
            "--out",
            str(out),
            "--only",
            "gaps,query_slowdown",
            "--days",
            "2",
            "--format",
            "csv",
        ],
        env,
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "gaps.csv",
        "gaps.labels.json",
        "query_slowdown.csv",
        "query_slowdown.labels.json",
        "suite.json",
    ]
    result = json.loads(run(["import", str(out), "--json"], env).stdout)
    assert result["stored"] > 0
