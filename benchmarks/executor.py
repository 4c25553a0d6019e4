"""Executor benchmark: gate evaluations per second and audit appends per second.

    .venv/bin/python benchmarks/executor.py [--evaluations 20000] [--appends 2000]

Gates are evaluated over a realistic history (1,000 recent fixes on 50 targets); audit
appends go to a DuckDB file, each its own committed statement (as the executor does, so
the ``running`` record is durable before apply). Also times the history read the
executor does once per fix and whole dry-run fixes through ``Executor.run``. Writes
benchmarks/results/executor.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from autofix.audit import AuditLog
from autofix.config import load_settings
from autofix.executor import Executor
from autofix.gates import PastFix, Policy, Request, evaluate
from autofix.pipeline import Pipeline
from autofix.store import MetricStore

T0 = datetime(2026, 3, 2, 12, 0)
ACTIONS = ["files.clean_temp", "files.rotate_logs", "service.restart", "redis.delete_keys"]
STATES = ["succeeded", "succeeded", "succeeded", "failed", "refused", "noop", "rolled_back"]


def _history(rng: random.Random, n: int, targets: int) -> list[PastFix]:
    out = []
    for i in range(n):
        at = T0 - timedelta(seconds=rng.uniform(0, 86400))
        state = rng.choice(STATES)
        applied = state not in {"refused", "noop"}
        out.append(
            PastFix(
                i,
                rng.choice(ACTIONS),
                f"t{rng.randrange(targets)}",
                f"g{rng.randrange(5)}",
                state,
                at,
                at if applied else None,
                at + timedelta(seconds=30) if applied else None,
            )
        )
    return out


def bench_gates(evaluations: int) -> dict[str, Any]:
    rng = random.Random(0)
    history = _history(rng, 1000, 50)
    members = {
        g: tuple(f"t{i}" for i in range(50) if i % 5 == int(g[1:]))
        for g in ("g0", "g1", "g2", "g3", "g4")
    }
    requests = []
    for _ in range(evaluations):
        group = f"g{rng.randrange(5)}"
        requests.append(
            Request(rng.choice(ACTIONS), rng.choice(members[group]), group, members[group])
        )
    # A generous budget so evaluations run through every gate, not stop at the budget.
    policy = Policy(mode="auto", hourly_budget=10_000, flap_count=10_000)
    allowed = 0
    started = time.perf_counter()
    for req in requests:
        allowed += evaluate(req, history, policy, T0).allowed
    seconds = time.perf_counter() - started
    return {"evaluations": evaluations, "history": len(history), "seconds": round(seconds, 4),
            "per_second": round(evaluations / seconds), "allowed": allowed}  # fmt: skip


def bench_audit(appends: int, directory: Path) -> dict[str, Any]:
    with MetricStore(directory / "audit.duckdb") as store:
        audit = AuditLog(store, lambda: T0)
        fixes = [
            audit.create("files.clean_temp", f"t{i % 50}", None, {}, "bench", {})
            for i in range(appends // 2)
        ]
        plan = [{"op": "quarantine", "detail": "move a.tmp", "args": {"path": "a.tmp", "size": 10}}]
        started = time.perf_counter()
        for fix in fixes:
            audit.append(
                fix, "running", "apply", plan=plan, facts={"total_bytes": 10}, actor="bench"
            )
            audit.append(
                fix, "succeeded", "verify", output="freed 10 bytes", undo={"quarantine": "/q"}
            )
        seconds = time.perf_counter() - started
        reads = 50
        read_started = time.perf_counter()
        for _ in range(reads):
            audit.history(T0 - timedelta(days=1))
        read_ms = (time.perf_counter() - read_started) / reads * 1000
    return {"appends": 2 * len(fixes), "seconds": round(seconds, 4),
            "per_second": round(2 * len(fixes) / seconds),
            "history_read_ms": round(read_ms, 3)}  # fmt: skip


def bench_runs(runs: int, directory: Path) -> dict[str, Any]:
    root = directory / "tmp"
    root.mkdir()
    for i in range(20):
        (root / f"f{i}.tmp").write_bytes(b"x" * 100)
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "tmp", "kind": "logdir", "path": str(root)}]}
    )
    settings = load_settings(
        environ={"AUTOFIX_QUARANTINE_DIR": str(directory / "q"), "AUTOFIX_FIX_FLAP_COUNT": "100000"}
    )
    with MetricStore(directory / "runs.duckdb") as store:
        executor = Executor(store, pipeline, settings)
        started = time.perf_counter()
        for _ in range(runs):
            executor.run("files.clean_temp", "tmp", {"older_than": "0s"}, dry_run=True)
        seconds = time.perf_counter() - started
    return {"runs": runs, "seconds": round(seconds, 4), "per_second": round(runs / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=20_000)
    parser.add_argument("--appends", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "executor.json"
    )
    args = parser.parse_args()
    gates = bench_gates(args.evaluations)
    with tempfile.TemporaryDirectory(prefix="autofix-bench-") as tmp:
        audit = bench_audit(args.appends, Path(tmp))
        runs = bench_runs(args.runs, Path(tmp))
    result = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "ran_at": datetime.now().isoformat(timespec="seconds"),
        "gates": gates,
        "audit": audit,
        "dry_run_fixes": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title="executor")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(f"gate evaluations/s (history {gates['history']:,})", f"{gates['per_second']:,}")
    table.add_row("audit appends/s (committed each)", f"{audit['per_second']:,}")
    table.add_row("history read (ms)", f"{audit['history_read_ms']:.2f}")
    table.add_row("dry-run fixes/s (facts + plan + audit)", f"{runs['per_second']:,}")
    Console().print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
