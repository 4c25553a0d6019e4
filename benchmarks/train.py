"""`autofix train` benchmark: a cold and warm training run as a whole process.

    .venv/bin/python benchmarks/train.py [--runs 3]

`autofix train` backtests the default forecaster on the sample scenarios (decisions every
2 h), draws its plots, logs the run to the local MLflow store and moves the champion alias
when the gate passes. Cold: the first run on an empty models directory (MLflow creates
its database, Python writes the bytecode of the modules it imports). Warm: every later
run (the store exists, the page and bytecode caches are warm) — what an operator waits
for each day. The runs never inherit PYTHONDONTWRITEBYTECODE: with it, every run
compiles some 2,700 modules from source again (10 s more CPU; `uv pip install` does not
precompile). Target (issue 15): warm under 10 s. Each figure is the process's wall time
and its CPU time (user + system of the reaped child); then, in this process, where a
warm run spends its time (imports, load, backtest, plots, MLflow log, promote).
Writes benchmarks/results/train.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).parents[1]
AUTOFIX = shutil.which("autofix", path=str(Path(sys.executable).parent)) or "autofix"
OUT = ROOT / "benchmarks" / "results" / "train.json"
SCENARIOS = ROOT / "data" / "samples"
TARGET_WARM_S = 10.0


def once(env: dict[str, str]) -> dict[str, Any]:
    """Wall and CPU seconds of one `autofix train --json`, with what it printed."""
    argv = [AUTOFIX, "train", "--scenarios", str(SCENARIOS), "--json"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"autofix train exited {code}")
    result = json.loads(out)
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "version": result["version"],
            "promoted": result["promoted"]}  # fmt: skip


def phases(models_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Wall and CPU seconds per step of a warm training run, in this process."""
    from autofix import training

    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        started, used = time.perf_counter(), time.process_time()
        yield
        wall[name] = time.perf_counter() - started
        cpu[name] = time.process_time() - used

    with step("imports"):
        training._load_training_modules()  # pandas, scikit-learn, matplotlib, MLflow

    from autofix.backtest.forecast import backtest, load_scenarios
    from autofix.backtest.plots import forecast_plots
    from autofix.models.registry import make_forecaster
    from autofix.tracking import Tracker
    from autofix.training import REGISTERED_MODEL, TRAIN_STEP

    with step("load_scenarios"):
        series = load_scenarios(SCENARIOS)
    with step("backtest"):
        results, forecasts = backtest(
            {"default": partial(make_forecaster, "default")}, series, step=TRAIN_STEP
        )
    with step("plots"):
        plots = forecast_plots(forecasts["default"], series, models_dir / "plots")
    with step("mlflow_log"):
        tracker = Tracker(models_dir)
        estimator = make_forecaster("default")
        run = tracker.log_training_run(
            model_name=REGISTERED_MODEL,
            estimator=estimator,
            params={k: str(v) for k, v in estimator.get_params().items()},
            metrics={k: v for k, v in results["default"].items() if v == v},
            plots=plots,
            tags={"scenarios": str(SCENARIOS), "model": "default"},
        )
    with step("promote"):
        tracker.promote_if_better(REGISTERED_MODEL, run.version)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="Warm runs after the cold one.")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="autofix-train-") as tmp:
        env = {**os.environ, "HOME": tmp, "AUTOFIX_MODELS_DIR": str(Path(tmp) / "models"),
               "AUTOFIX_DB_PATH": str(Path(tmp) / "autofix.duckdb")}  # fmt: skip
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        with console.status("cold `autofix train` (empty models directory)"):
            cold = once(env)
        warm = []
        for i in range(args.runs):
            with console.status(f"warm `autofix train` {i + 1}/{args.runs}"):
                warm.append(once(env))
        os.environ["AUTOFIX_MODELS_DIR"] = env["AUTOFIX_MODELS_DIR"]
        with console.status("where a warm run spends its time (in process)"):
            steps, steps_cpu = phases(Path(env["AUTOFIX_MODELS_DIR"]))
    median_warm = statistics.median(r["wall_s"] for r in warm)
    result = {
        "benchmark": "train",
        "at": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "scenarios": str(SCENARIOS.relative_to(ROOT)),
        "cold": cold,
        "warm": warm,
        "warm_median_wall_s": median_warm,
        "warm_median_cpu_s": statistics.median(r["cpu_s"] for r in warm),
        "phases_s": steps,
        "phases_cpu_s": steps_cpu,
        "target_warm_s": TARGET_WARM_S,
        "pass": {"warm_train_under_10s": median_warm < TARGET_WARM_S},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title="autofix train (data/samples, decisions every 2 h)")
    for column in ("run", "wall s", "cpu s", "version", "promoted"):
        table.add_column(column, justify="right")
    for name, r in [("cold", cold)] + [(f"warm {i + 1}", r) for i, r in enumerate(warm)]:
        table.add_row(name, f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}", str(r["version"]),
                      str(r["promoted"]))  # fmt: skip
    console.print(table)
    split = Table(title="a warm run, step by step (in process, s)")
    split.add_column("")
    for name in steps:
        split.add_column(name, justify="right")
    split.add_row("wall", *[f"{v:.2f}" for v in steps.values()])
    split.add_row("cpu", *[f"{v:.2f}" for v in steps_cpu.values()])
    console.print(split)
    ok = "[green]yes[/]" if result["pass"]["warm_train_under_10s"] else "[red]NO[/]"
    console.print(f"warm median {median_warm:.2f} s (target < {TARGET_WARM_S:g} s): {ok}")
    console.print(f"written {args.out}")


if __name__ == "__main__":
    main()
