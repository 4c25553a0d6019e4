"""Scenario generator benchmark: time to draw N series x 14 days at 5 minutes in memory.

    .venv/bin/python benchmarks/scenarios.py [--sizes 500,10000] [--runs 3]

``generate_fleet`` feeds the forecast benchmark's speed section and the 10,000-series
figure of issue 15, so it must stay a small part of it. Target: 10,000 series x 14 days
(40 M rows) well under a minute (the forecast benchmark's whole budget is 60 s); 500
series, the size a test would draw, under 3 s. The best of ``--runs`` draws, and the
rows per second, per size. Writes benchmarks/results/scenarios.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autofix.data.scenarios import generate_fleet

OUT = Path(__file__).parent / "results" / "scenarios.json"
TARGETS_S = {500: 3.0, 10000: 60.0}


def measure(n: int, runs: int) -> dict[str, Any]:
    seconds = []
    rows = 0
    for _ in range(runs):
        began = time.perf_counter()
        fleet = generate_fleet(n, days=14.0)
        seconds.append(time.perf_counter() - began)
        rows = len(fleet)
        del fleet
    best = min(seconds)
    target = TARGETS_S.get(n)
    return {
        "series": n,
        "rows": rows,
        "seconds": seconds,
        "best_seconds": best,
        "rows_per_second": rows / best,
        "target_seconds": target,
        "pass": None if target is None else best <= target,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    console = Console()
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        with console.status(f"generating {n} series x 14 days, {args.runs} times"):
            results.append(measure(n, args.runs))
    out = {
        "benchmark": "fleet",
        "at": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    table = Table(title="generate_fleet: N series x 14 days at 5 minutes")
    for column in ("series", "rows", "best s", "rows/s", "target s", "ok"):
        table.add_column(column, justify="right")
    for r in results:
        ok = "-" if r["pass"] is None else ("[green]yes[/]" if r["pass"] else "[red]NO[/]")
        target = "-" if r["target_seconds"] is None else f"{r['target_seconds']:g}"
        table.add_row(str(r["series"]), f"{r['rows']:,}", f"{r['best_seconds']:.2f}",
                      f"{r['rows_per_second']:,.0f}", target, ok)  # fmt: skip
    console.print(table)
    console.print(f"written {args.out}")


if __name__ == "__main__":
    main()
