"""NAB benchmark: the project's anomaly scorers on the Numenta Anomaly Benchmark.

    .venv/bin/python benchmarks/nab.py [--nab-dir ../shared/nab] [--keep DIR]

Copies the read-only NAB snapshot (``shared/nab``: 58 series, labels, the official
scorer) to a temporary directory, scores every file in this process with each scorer —
one configuration for all files, causally, every row including repeated timestamps — and
writes ``results/<detector>/<category>/<detector>_<name>.csv``. Then runs NAB's own
scorer in the copy, as NAB documents it:

    python run.py -d <detector> --optimize --score --normalize --skipConfirmation

Detectors: ``autofix`` is the onset scorer (``OnsetScorer()``, news: what an event
detector that pages once per incident reports, which is what NAB scores); ``autofixState``
is the default state scorer (``RobustScorer(direction="both")``, what the service's
"score >= 0.9 for 5m" rules read), reported beside it for honesty. No labels are read
while scoring; NAB's scorer picks one threshold per detector for the whole corpus.

Writes benchmarks/results/nab.json (standard, reward_low_FP_rate, reward_low_FN_rate,
per category, files refused, ms per point on one core) and prints the board with the
project's entries in it.
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
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from autofix.models.anomaly import OnlineScorer, OnsetScorer, RobustScorer

RESULTS = Path(__file__).parent / "results"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def detectors() -> dict[str, OnlineScorer]:
    """NAB detector names (no underscores: NAB splits file names on them) → scorers."""
    return {"autofix": OnsetScorer(), "autofixState": RobustScorer(direction="both")}


def find_nab(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    # The snapshot sits in shared/ beside the checkout (or beside the worktrees' parent).
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "nab"
        if (candidate / "run.py").is_file():
            return candidate
    raise SystemExit("benchmarks/nab.py: no shared/nab found above this checkout; use --nab-dir")


def load_corpus(root: Path) -> list[tuple[str, pd.DataFrame]]:
    files = sorted((root / "data").glob("*/*.csv"))
    return [
        (str(p.relative_to(root / "data")), pd.read_csv(p, dtype={"timestamp": str})) for p in files
    ]


def score_corpus(
    name: str, model: OnlineScorer, corpus: list[tuple[str, pd.DataFrame]], root: Path
) -> dict[str, Any]:
    """Score every file in one batch (lock-step over files) and write NAB's result files."""
    long = pd.concat(
        [
            pd.DataFrame(
                {"series_id": rel, "ts": pd.to_datetime(d["timestamp"]), "value": d["value"]}
            )
            for rel, d in corpus
        ],
        ignore_index=True,
    )
    started = time.process_time()
    scores = model.fit_score(long)
    cpu = time.process_time() - started
    refused: list[str] = []
    at = 0
    for rel, data in corpus:
        mine = scores[at : at + len(data)]
        at += len(data)
        if len(mine) != len(data) or not np.isfinite(mine).all():
            refused.append(rel)
            mine = np.nan_to_num(mine, nan=0.0)
        category, file_name = rel.split("/")
        out = root / "results" / name / category / f"{name}_{file_name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"timestamp": data["timestamp"], "value": data["value"], "anomaly_score": mine}
        ).to_csv(out, index=False)
    return {
        "points": len(long),
        "cpu_seconds": round(cpu, 3),
        "ms_per_point": round(cpu / len(long) * 1000, 5),
        "files": len(corpus),
        "files_refused": len(refused),
        "refused": refused,
        "params": {k: v for k, v in model.get_params().items()},
    }


def run_official(root: Path, name: str) -> str:
    """NAB's own optimize → score → normalize, in the copy (its output is returned)."""
    proc = subprocess.run(
        [sys.executable, "run.py", "-d", name, "--optimize", "--score", "--normalize",
         "--skipConfirmation", "-n", "1"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"NAB's run.py failed for {name}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def per_category(root: Path, name: str) -> dict[str, dict[str, float]]:
    """Normalised score per category, NAB's formula applied to the category's files."""
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    out: dict[str, dict[str, Any]] = {}
    for profile in PROFILES:
        ours = pd.read_csv(root / "results" / name / f"{name}_{profile}_scores.csv")
        null = pd.read_csv(root / "results" / "null" / f"null_{profile}_scores.csv")
        cost = json.loads((root / "config" / "profiles.json").read_text())[profile]
        tp_weight = cost["CostMatrix"]["tpWeight"]
        for frame in (ours, null):
            frame.drop(frame[frame["Detector"] == "Totals"].index, inplace=True)
            frame["category"] = frame["File"].str.split("/").str[0]
        got = ours.groupby("category")["Score"].sum()
        base = null.groupby("category")["Score"].sum()
        for category in sorted(got.index):
            n_windows = sum(len(w) for f, w in windows.items() if f.startswith(category + "/"))
            perfect = n_windows * tp_weight
            value = (
                100 * (got[category] - base[category]) / (perfect - base[category])
                if perfect != base[category]
                else float("nan")
            )
            # A category without windows (no anomaly to find) has no normalised score.
            out.setdefault(category, {})[profile] = (
                round(float(value), 2) if np.isfinite(value) else None
            )
            out[category]["windows"] = n_windows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab-dir", type=Path, default=None, help="Default: shared/nab.")
    parser.add_argument("--keep", type=Path, default=None, help="Copy the scored NAB tree here.")
    args = parser.parse_args()
    source = find_nab(args.nab_dir)
    console = Console(width=130)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "nab",
        "nab_snapshot": "upstream ea702d7 (shared/nab/README.md)",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "command": "python run.py -d <detector> --optimize --score --normalize --skipConfirmation",
        "detectors": {},
    }
    with tempfile.TemporaryDirectory(prefix="autofix-nab-") as tmp:
        root = Path(tmp) / "nab"
        shutil.copytree(source, root)
        for path in [root, *root.rglob("*")]:  # the snapshot is read-only; the copy is not
            path.chmod(path.stat().st_mode | 0o200)
        corpus = load_corpus(root)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("NAB", total=2 * len(detectors()))
            for name, model in detectors().items():
                progress.update(task, description=f"scoring 58 files with {name}")
                info = score_corpus(name, model, corpus, root)
                progress.advance(task)
                progress.update(task, description=f"NAB's scorer on {name}")
                log = run_official(root, name)
                progress.advance(task)
                board = json.loads((root / "results" / "final_results.json").read_text())
                info["scores"] = {p: round(board[name][p], 2) for p in PROFILES}
                info["per_category"] = per_category(root, name)
                info["nab_log_tail"] = log.strip().splitlines()[-4:]
                result["detectors"][name] = info
        board = json.loads((root / "results" / "final_results.json").read_text())
        if args.keep:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
    main_entry = result["detectors"]["autofix"]
    result["standard"] = main_entry["scores"]["standard"]
    result["reward_low_FP_rate"] = main_entry["scores"]["reward_low_FP_rate"]
    result["reward_low_FN_rate"] = main_entry["scores"]["reward_low_FN_rate"]
    result["files_refused"] = main_entry["files_refused"]
    result["ms_per_point"] = main_entry["ms_per_point"]
    result["board"] = {k: {p: round(v[p], 2) for p in PROFILES} for k, v in board.items()}
    result["pass"] = {
        "standard_ge_50": result["standard"] >= 50,
        "standard_ge_70": result["standard"] >= 70,
        "files_refused_0": result["files_refused"] == 0,
        "ms_per_point_le_1": result["ms_per_point"] <= 1.0,
    }
    (RESULTS / "nab.json").write_text(
        json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )

    table = Table(title="NAB scoreboard (normalised; null = 0, perfect = 100)")
    for col in ("detector", *PROFILES):
        table.add_column(col, justify="left" if col == "detector" else "right")
    ranked = sorted(result["board"].items(), key=lambda kv: -kv[1]["standard"])
    for name, scores in ranked:
        style = "bold green" if name in result["detectors"] else None
        table.add_row(name, *[f"{scores[p]:.2f}" for p in PROFILES], style=style)
    console.print(table)
    cats = Table(title="autofix (onset) per category, standard profile")
    cats.add_column("category")
    cats.add_column("windows", justify="right")
    for name in result["detectors"]:
        cats.add_column(name, justify="right")
    for category, row in result["detectors"]["autofix"]["per_category"].items():
        values = [
            result["detectors"][n]["per_category"][category]["standard"]
            for n in result["detectors"]
        ]
        cats.add_row(
            category, str(row["windows"]), *["—" if v is None else f"{v:.2f}" for v in values]
        )
    console.print(cats)
    for name, info in result["detectors"].items():
        console.print(
            f"{name}: {info['points']:,} points, {info['cpu_seconds']} s CPU "
            f"({info['ms_per_point']:.4f} ms per point, one process), "
            f"{info['files_refused']} of {info['files']} files refused"
        )


if __name__ == "__main__":
    main()
