"""Fleet-scale benchmark: `autofix predict` on a LocalCluster, and imports in bounded memory.

    .venv/bin/python benchmarks/fleet.py [--sizes 10000,30000,100000] [--days 3]
        [--ratio-size 30000] [--csv-gb 1.0] [--skip-import] [--ahead 3] [--merge]
        [--workdir DIR]

For each fleet size N: N disks × ``--days`` days at 5 min are generated to Parquet,
imported into a fresh store with ``autofix import`` (samples/s and peak RSS of the
import; the history ends ``--ahead`` hours from now so that it still reports when
forecast), and forecast end to end by ``autofix predict --model default --json``
on a LocalCluster of 2 workers (``AUTOFIX_COMPUTE_LOCAL_SERIES=1``): wall time, series/s,
and the peak RSS of every process of the run (the driver — the one writer — and each
worker; target ≤ 2 GB each). At ``--ratio-size`` the same run on 1 worker gives the
1-worker / 2-worker ratio; at the smallest size the single-process path (no cluster, the
whole fleet in one partition: ``AUTOFIX_COMPUTE_PARTITION_SERIES`` = N) runs beside it.
Then a CSV of ``--csv-gb`` GB is imported: samples/s and peak RSS (target ≤ 1 GB).

Writes benchmarks/results/fleet.json and benchmarks/results/fleet.png (time and memory
against fleet size) and prints a table. Peak RSS is sampled every 0.2 s from the process
tree (psutil), so a spike shorter than that can be missed. Figures are wall-clock on a
shared machine: compare them within one run (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psutil
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).parents[1]
AUTOFIX = shutil.which("autofix", path=str(Path(sys.executable).parent)) or "autofix"
OUT = ROOT / "benchmarks" / "results" / "fleet.json"
PLOT = ROOT / "benchmarks" / "results" / "fleet.png"
STEP_S = 300
TARGET_PROCESS_GB = 2.0
TARGET_IMPORT_GB = 1.0
MB = 2**20

console = Console()


# -- measuring a process tree -----------------------------------------------------------


class TreeWatch:
    """Peak RSS of a process and every descendant, sampled until it exits."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _role(self, proc: psutil.Process) -> str:
        if proc.pid == self.root.pid:
            return "driver"
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:
            return "child"
        # LocalCluster workers are multiprocessing spawn children of the driver.
        if "spawn_main" in line or "multiprocessing" in line:
            return "worker"
        return "child"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                if rss > self.peaks.get(proc.pid, 0):
                    self.peaks[proc.pid] = rss
                    self.roles.setdefault(proc.pid, self._role(proc))
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        by_role: dict[str, list[float]] = {}
        for pid, peak in self.peaks.items():
            by_role.setdefault(self.roles.get(pid, "child"), []).append(round(peak / MB, 1))
        workers = sorted(by_role.get("worker", []), reverse=True)
        # The resource tracker of multiprocessing is a spawn child too: a worker is big.
        workers = [w for w in workers if w > 100]
        return {
            "driver_peak_rss_mb": max(by_role.get("driver", [0.0])),
            "worker_peak_rss_mb": workers,
            "other_peak_rss_mb": sorted(by_role.get("child", []), reverse=True)[:4],
        }


def run_watched(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run a command; its wall time, exit code, stdout and peak RSS per process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watch = TreeWatch(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    memory = watch.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return {"wall_s": round(wall, 2), "stdout": out, **memory}


# -- data --------------------------------------------------------------------------------


def generate_parquet(path: Path, series: int, days: float, ahead_h: float) -> int:
    """``series`` disks filling at different rates, 5-minute samples; returns the rows.

    The history ends ``ahead_h`` hours from now: a large import takes minutes, and the
    series must still report (a sample within 4 intervals, ``autofix.predict``) when
    the forecasts run; samples after a run's "now" are not read by it.
    """
    points = int(days * 86400 / STEP_S)
    end = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=ahead_h)
    start = end - timedelta(seconds=(points - 1) * STEP_S)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute(
        f"""COPY (
              SELECT TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}' + to_seconds(t.k * {STEP_S})
                       AS timestamp,
                     printf('node-%06d', s.i) AS host,
                     'node_filesystem_avail_bytes' AS metric,
                     '{{"mountpoint":"/data"}}' AS labels,
                     -- free bytes: a fill at a rate of its own, a daily cycle, noise
                     greatest(0.01, 0.7 - (0.0005 + (hash(s.i) % 1000) / 1000.0 * 0.009)
                                         * t.k / 12.0
                                 - 0.01 * sin(2 * pi() * t.k / 288.0)
                                 - 0.002 * random()) * 107374182400 AS value,
                     107374182400.0 AS capacity
              FROM range({series}) s(i), range({points}) t(k))
            TO '{path}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 262144)"""
    )
    con.close()
    return series * points


def generate_csv(path: Path, gigabytes: float) -> int:
    """A CSV of about ``gigabytes`` GB (~80 bytes a row): 10,000 series, 5-minute samples."""
    rows = int(gigabytes * 1e9 / 80)
    hosts = 10_000
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    con.execute(
        f"""COPY (
              SELECT strftime(TIMESTAMP '2026-01-01' + to_seconds((r // {hosts}) * {STEP_S}),
                              '%Y-%m-%dT%H:%M:%SZ') AS timestamp,
                     printf('node-%06d', r % {hosts}) AS host,
                     'node_filesystem_avail_bytes' AS metric,
                     round(50e9 + (r % 977) * 1e6 + random() * 1e6, 1) AS value,
                     107374182400 AS capacity
              FROM range({rows}) x(r))
            TO '{path}' (FORMAT csv, HEADER)"""
    )
    con.close()
    return rows


# -- steps -------------------------------------------------------------------------------


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AUTOFIX_DB_PATH": str(home / "autofix.duckdb"),
        "AUTOFIX_MODELS_DIR": str(home / "models"),
        "AUTOFIX_COMPUTE_DIR": str(home / "compute"),
        "AUTOFIX_HOSTNAME": "bench",
        "AUTOFIX_LOG_LEVEL": "WARNING",
        **extra,
    }


def do_import(file: Path, home: Path, rows: int, shift: bool) -> dict[str, Any]:
    argv = [AUTOFIX, "import", str(file), "--json", *(["--shift-to-now"] if shift else [])]
    got = run_watched(argv, env_for(home), home)
    counts = json.loads(got.pop("stdout").strip().splitlines()[-1])
    return {
        "file": file.name,
        "file_mb": round(file.stat().st_size / MB, 1),
        "samples": rows,
        "counts": counts,
        "samples_per_s": round(rows / got["wall_s"]),
        **got,
    }


def do_predict(home: Path, series: int, mode: str) -> dict[str, Any]:
    extra = {
        "local-2": {"AUTOFIX_COMPUTE_LOCAL_SERIES": "1", "AUTOFIX_COMPUTE_WORKERS": "2"},
        "local-1": {"AUTOFIX_COMPUTE_LOCAL_SERIES": "1", "AUTOFIX_COMPUTE_WORKERS": "1"},
        # Today's path before issue 16: one process, the whole fleet in one fit.
        "single": {
            "AUTOFIX_COMPUTE_LOCAL_SERIES": str(10**9),
            "AUTOFIX_COMPUTE_PARTITION_SERIES": str(series),
        },
    }[mode]
    got = run_watched(
        [AUTOFIX, "predict", "--model", "default", "--json"], env_for(home, **extra), home
    )
    summary = json.loads(got.pop("stdout"))
    if summary["series"] != series:
        raise SystemExit(f"{mode} at {series}: {summary['series']} series forecast, not all")
    return {
        "mode": mode,
        "series": series,
        "written": summary["written"],
        "compute": summary["compute"],
        "series_per_s": round(series / got["wall_s"], 1),
        **got,
    }


# -- report ------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, style in (("local-2", "o-"), ("local-1", "s--"), ("single", "^:")):
        runs = [r for r in results["forecast"] if r["mode"] == mode]
        if not runs:
            continue
        sizes = [r["series"] for r in runs]
        left.plot(sizes, [r["wall_s"] for r in runs], style, label=mode)
        right.plot(sizes, [r["driver_peak_rss_mb"] for r in runs], style, label=f"{mode} driver")
        if mode != "single":
            right.plot(
                sizes,
                [max(r["worker_peak_rss_mb"] or [0]) for r in runs],
                style,
                alpha=0.5,
                label=f"{mode} largest worker",
            )
    right.axhline(TARGET_PROCESS_GB * 1024, color="red", lw=0.8, label="target per process")
    left.set(xlabel="series", ylabel="wall time of autofix predict (s)", title="time")
    right.set(xlabel="series", ylabel="peak RSS (MiB)", title="memory per process")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"autofix predict over a fleet ({results['days']} days at 5 min per series)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def show(results: dict[str, Any]) -> None:
    table = Table(title="fleet benchmark")
    for column in ("step", "series", "samples", "wall s", "rate", "peak RSS MiB"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for r in results["parquet_import"]:
        table.add_row(
            "import parquet",
            f"{r['series']:,}",
            f"{r['samples']:,}",
            f"{r['wall_s']:.1f}",
            f"{r['samples_per_s']:,}/s",
            f"{r['driver_peak_rss_mb']:.0f}",
        )
    for r in results["forecast"]:
        workers = ", ".join(f"{w:.0f}" for w in r["worker_peak_rss_mb"])
        table.add_row(
            f"predict {r['mode']}",
            f"{r['series']:,}",
            f"{r['samples']:,}",
            f"{r['wall_s']:.1f}",
            f"{r['series_per_s']:,} series/s",
            f"{r['driver_peak_rss_mb']:.0f}" + (f" (workers {workers})" if workers else ""),
        )
    if results.get("csv_import"):
        r = results["csv_import"]
        table.add_row(
            f"import csv {r['file_mb']:.0f} MiB",
            "10,000",
            f"{r['samples']:,}",
            f"{r['wall_s']:.1f}",
            f"{r['samples_per_s']:,}/s",
            f"{r['driver_peak_rss_mb']:.0f}",
        )
    console.print(table)
    if results.get("ratio"):
        ratio = results["ratio"]
        console.print(
            f"1 worker / 2 workers at {ratio['series']:,} series: {ratio['wall_1_over_2']:.2f}×"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--ratio-size", type=int, default=30_000)
    parser.add_argument("--csv-gb", type=float, default=1.0)
    parser.add_argument("--skip-import", action="store_true", help="no CSV import step")
    parser.add_argument(
        "--ahead", type=float, default=3.0, help="hours the generated history runs past now"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other sizes' results already in --out (re-run some sizes only)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    base = Path(tempfile.mkdtemp(prefix="fleet-", dir=args.workdir))
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
        },
        "load_average_at_start": os.getloadavg(),
        "days": args.days,
        "step_s": STEP_S,
        "targets": {"process_peak_rss_gb": TARGET_PROCESS_GB, "import_peak_rss_gb": 1.0},
        "parquet_import": [],
        "forecast": [],
    }
    if args.merge and args.out.exists():
        kept = json.loads(args.out.read_text(encoding="utf-8"))
        for key in ("parquet_import", "forecast"):
            results[key] = [r for r in kept.get(key, []) if r["series"] not in sizes]
        if args.skip_import and "csv_import" in kept:
            results["csv_import"] = kept["csv_import"]
        results["merged_from"] = kept.get("when")
    try:
        run_all(args, sizes, base, results)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        # Whatever ran is written, also when a step failed (its error is in the file).
        results["load_average_at_end"] = os.getloadavg()
        for key in ("parquet_import", "forecast"):
            results[key].sort(key=lambda r: (r["series"], r.get("mode", "")))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        plot(results, args.plot)
        show(results)
        console.print(f"wrote {args.out} and {args.plot}")


def run_all(
    args: argparse.Namespace, sizes: list[int], base: Path, results: dict[str, Any]
) -> None:
    for size in sizes:
        try:
            one_size(args, sizes, size, base, results)
        except SystemExit as exc:  # a failed step: recorded, the next size still runs
            console.print(f"[red]{size:,} series: {exc}[/red]")
            results.setdefault("errors", []).append({"series": size, "error": str(exc)})
    one = [r for r in results["forecast"] if r["mode"] == "local-1"]
    two = {r["series"]: r for r in results["forecast"] if r["mode"] == "local-2"}
    if one and one[0]["series"] in two:
        results["ratio"] = {
            "series": one[0]["series"],
            "wall_1_worker_s": one[0]["wall_s"],
            "wall_2_workers_s": two[one[0]["series"]]["wall_s"],
            "wall_1_over_2": round(one[0]["wall_s"] / two[one[0]["series"]]["wall_s"], 2),
        }
    if not args.skip_import:
        home = base / "csv"
        home.mkdir()
        file = home / "history.csv"
        with console.status(f"generating a {args.csv_gb} GB CSV"):
            rows = generate_csv(file, args.csv_gb)
        with console.status(f"importing {rows:,} samples from CSV"):
            results["csv_import"] = do_import(file, home, rows, shift=False)
        shutil.rmtree(home, ignore_errors=True)


def one_size(
    args: argparse.Namespace, sizes: list[int], size: int, base: Path, results: dict[str, Any]
) -> None:
    home = base / f"fleet-{size}"
    home.mkdir()
    file = home / "history.parquet"
    with console.status(f"generating {size:,} series"):
        rows = generate_parquet(file, size, args.days, args.ahead)
    with console.status(f"importing {rows:,} samples"):
        imported = do_import(file, home, rows, shift=False)
    results["parquet_import"].append({"series": size, **imported})
    console.print(
        f"import {size:,}: {imported['wall_s']:.1f} s, {imported['driver_peak_rss_mb']:.0f} MiB"
    )
    file.unlink()
    modes = ["local-2"]
    if size == args.ratio_size or (args.ratio_size not in sizes and size == sizes[-1]):
        modes.append("local-1")
    if size == sizes[0]:
        modes.append("single")
    for mode in modes:
        with console.status(f"autofix predict, {mode}, {size:,} series"):
            run = do_predict(home, size, mode)
        results["forecast"].append({"samples": rows, **run})
        console.print(
            f"{mode} {size:,}: {run['wall_s']:.1f} s, driver "
            f"{run['driver_peak_rss_mb']:.0f} MiB, workers {run['worker_peak_rss_mb']}"
        )
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
