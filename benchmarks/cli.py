"""CLI start-up benchmark: how long `autofix` takes as a whole process, 20 starts each.

    .venv/bin/python benchmarks/cli.py [--runs 20]

Times `autofix --help`, `autofix fix --help`, and `autofix status` / `autofix fix list`
over a store with the sample histories: once opening the store itself, once carried out
by a running `autofix serve` (the control socket). Each figure is the wall time of the
process from start to exit and its CPU time (user + system, from the kernel's accounting
of the reaped child): on a shared machine the CPU time says what the command costs, the
wall time what a person waits. Target: `--help` median < 0.5 s. Writes
benchmarks/results/cli.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).parents[1]
AUTOFIX = shutil.which("autofix", path=str(Path(sys.executable).parent)) or "autofix"
OUT = ROOT / "benchmarks" / "results" / "cli.json"
TARGET_HELP_S = 0.5


def once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + sys) and exit code of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=env["HOME"]
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def measure(name: str, argv: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    once(argv, env)  # warm-up: the page cache, .pyc files
    walls, cpus, codes = [], [], set()
    for _ in range(runs):
        wall, cpu, code = once(argv, env)
        walls.append(wall)
        cpus.append(cpu)
        codes.add(code)
    return {
        "command": name,
        "runs": runs,
        "exit_codes": sorted(codes),
        "wall_median_s": round(statistics.median(walls), 4),
        "wall_max_s": round(max(walls), 4),
        "cpu_median_s": round(statistics.median(cpus), 4),
        "cpu_max_s": round(max(cpus), 4),
    }


def _serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    db = Path(env["AUTOFIX_DB_PATH"])
    proc = subprocess.Popen(
        [AUTOFIX, "serve", "--no-api", "--jobs", "snapshot"],
        env=env,
        cwd=env["HOME"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not Path(f"{db}.owner").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("autofix serve did not start")
        time.sleep(0.2)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="autofix-cli-bench-"))
    (base / "logs").mkdir()
    pipeline = base / "pipeline.yaml"
    pipeline.write_text(f"targets:\n  - {{name: logs, kind: logdir, path: {base / 'logs'}}}\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base),
        "COLUMNS": "100",
        "AUTOFIX_DB_PATH": str(base / "autofix.duckdb"),
        "AUTOFIX_SNAPSHOT_DIR": str(base / "snapshot"),
        "AUTOFIX_MODELS_DIR": str(base / "models"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_HOSTNAME": "bench",
    }
    console = Console()
    try:
        subprocess.run(
            [AUTOFIX, "import", str(ROOT / "data" / "samples"), "--json"],
            env=env,
            check=True,
            capture_output=True,
        )
        results = [
            measure("autofix --help", [AUTOFIX, "--help"], env, args.runs),
            measure("autofix fix --help", [AUTOFIX, "fix", "--help"], env, args.runs),
            measure("autofix status (own store)", [AUTOFIX, "status"], env, args.runs),
            measure("autofix fix list (own store)", [AUTOFIX, "fix", "list"], env, args.runs),
        ]
        served = _serve(env)
        try:
            results += [
                measure("autofix status (through serve)", [AUTOFIX, "status"], env, args.runs),
                measure(
                    "autofix fix list (through serve)", [AUTOFIX, "fix", "list"], env, args.runs
                ),
            ]
        finally:
            served.send_signal(signal.SIGTERM)
            served.wait(timeout=60)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    help_median = results[0]["wall_median_s"]
    report = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "target_help_median_s": TARGET_HELP_S,
        "help_meets_target": help_median < TARGET_HELP_S,
        "results": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    load = report["load_average"][0]
    table = Table(title=f"CLI start-up, {args.runs} process starts each (load {load:.1f})")
    for column in ("command", "wall median", "wall max", "CPU median", "CPU max", "exit"):
        table.add_column(column, justify="left" if column == "command" else "right")
    for r in results:
        table.add_row(
            r["command"],
            f"{r['wall_median_s']:.3f} s",
            f"{r['wall_max_s']:.3f} s",
            f"{r['cpu_median_s']:.3f} s",
            f"{r['cpu_max_s']:.3f} s",
            ",".join(map(str, r["exit_codes"])),
        )
    console.print(table)
    verdict = "meets" if report["help_meets_target"] else "misses"
    console.print(f"--help median {help_median:.3f} s {verdict} the {TARGET_HELP_S} s target")
    console.print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
