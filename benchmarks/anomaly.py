"""Anomaly benchmark: the default scorer vs a rolling z-score, at event level, plus speed.

    .venv/bin/python benchmarks/anomaly.py [--seeds 5] [--series 1000] [--points 10000]

(a) the generator's ``query_slowdown`` scenario (14 days at 5 min, several seeds; the
healthy query has no windows, so every alert on it is a false positive); (b) the real
recording in ``data/real`` (``benchmarks/record_latency.py``): two canary latencies and
host CPU, each with the injections that reach it. Event-level precision/recall/F1
without point-adjust (``autofix.backtest.anomaly``), at each scorer's documented
``default_threshold`` and, for reference, at the threshold with the best F1 in hindsight
(an oracle: it flatters both, the baseline more). (c) scoring throughput on
``--series`` x ``--points`` synthetic latency points.

Writes benchmarks/results/anomaly.json, benchmarks/results/anomaly_real.png, and prints
a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from autofix.backtest.anomaly import ScoredSeries, evaluate, threshold_sweep
from autofix.data.recorded import load_recorded, series_frame
from autofix.data.scenarios import generate
from autofix.models.anomaly import RobustScorer, RollingZScore

RESULTS = Path(__file__).parent / "results"
SWEEP = np.round(np.arange(0.05, 1.0, 0.05), 2)
TOP = ("pg_query_latency_seconds", '{"datname":"postgres","query":"top_articles"}')
DB_CPU = ("process_cpu_usage_ratio", '{"group":"db"}')
SHORT = {"process_cpu_usage_ratio": "db_cpu", "node_cpu_usage_ratio": "host_cpu"}


def scorers() -> dict[str, Any]:
    """The two contenders at their defaults, plus the baseline at other window lengths."""
    return {
        "default": RobustScorer(),
        "zscore": RollingZScore(),  # 120-point window
        "zscore_w30": RollingZScore(window=30),
        "zscore_w600": RollingZScore(window=600),
    }


def score_cases(frames: list[tuple[pd.DataFrame, list[Any]]]) -> dict[str, list[ScoredSeries]]:
    """Each scorer over all series in one batch; one ScoredSeries per (series, windows)."""
    out: dict[str, list[ScoredSeries]] = {}
    long = pd.concat([f for f, _ in frames], ignore_index=True)
    bounds = np.cumsum([0] + [len(f) for f, _ in frames])
    for name, model in scorers().items():
        scores = model.fit_score(long)
        out[name] = [
            ScoredSeries.of(f["ts"], scores[a:b], windows)
            for (f, windows), a, b in zip(frames, bounds[:-1], bounds[1:], strict=True)
        ]
    return out


def summarise(cases: dict[str, list[ScoredSeries]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, series in cases.items():
        threshold = scorers()[name].default_threshold
        at_default = evaluate(series, threshold).as_dict()
        sweep = threshold_sweep(series, SWEEP)
        best = sweep.loc[sweep["f1"].idxmax()].to_dict()
        result[name] = {
            "threshold": threshold,
            **at_default,
            "best_f1_threshold": best["threshold"],
            "best_f1": best["f1"],
            "best_precision": best["precision"],
            "best_recall": best["recall"],
            "sweep": sweep.to_dict(orient="records"),
        }
    return result


def generator_cases(seeds: int) -> dict[str, list[ScoredSeries]]:
    frames = []
    for seed in range(seeds):
        data = generate("query_slowdown", seed=seed, days=14)
        for truth in data.labels_truth["series"]:
            rows = data.samples[data.samples["labels"] == truth["labels"]]
            frame = pd.DataFrame(
                {"series_id": f"{seed}:{truth['labels']}", "ts": rows["timestamp"],
                 "value": rows["value"]}
            )  # fmt: skip
            frames.append((frame, truth["slowdown_windows"]))
    return score_cases(frames)


def real_cases(
    directory: Path | None = None,
) -> tuple[dict[str, list[ScoredSeries]], dict[str, Any], list[str]]:
    """Every labelled series of the recording (those with windows), scored in one batch."""
    data = load_recorded(directory=directory)
    frames, names = [], []
    for truth in data.labels_truth["series"]:
        if not truth["slowdown_windows"]:
            continue
        frames.append((series_frame(data.samples, truth["metric"], truth["labels"]),
                       truth["slowdown_windows"]))  # fmt: skip
        query = json.loads(truth["labels"]).get("query")
        names.append(query or SHORT.get(truth["metric"], truth["metric"]))
    return score_cases(frames), data.labels_truth, names


def per_series(cases: dict[str, list[ScoredSeries]], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in ("default", "zscore"):
        series = cases[model]
        threshold = scorers()[model].default_threshold
        out[model] = {
            n: evaluate([s], threshold).as_dict() for n, s in zip(names, series, strict=True)
        }
    return out


def throughput(n_series: int, n_points: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    hours = np.arange(n_points) * 5 / 60
    base = 0.04 * (1 + 0.35 * np.cos(2 * np.pi * hours / 24))
    values = (base[None, :] * np.exp(rng.standard_normal((n_series, n_points)) * 0.12)).ravel()
    ts = pd.date_range("2024-01-01", periods=n_points, freq="5min").to_numpy()
    frame = pd.DataFrame(
        {"series_id": np.repeat(np.arange(n_series), n_points), "ts": np.tile(ts, n_series),
         "value": values}
    )  # fmt: skip
    out: dict[str, Any] = {"series": n_series, "points_per_series": n_points}
    for name in ("default", "zscore"):
        model = scorers()[name]
        started = time.perf_counter()
        model.fit_score(frame)
        seconds = time.perf_counter() - started
        out[name] = {"seconds": round(seconds, 2), "points_per_s": round(frame.shape[0] / seconds)}
    # Streaming: one new point per series per tick, the service's steady state.
    model = RobustScorer().fit(frame[frame["ts"] < ts[-50]])
    tail = frame[frame["ts"] >= ts[-50]]
    started = time.perf_counter()
    for _, tick in tail.groupby("ts", sort=True):
        model.score_new(tick)
    seconds = time.perf_counter() - started
    out["default_streaming"] = {
        "ticks": 50,
        "ms_per_tick_all_series": round(seconds / 50 * 1000, 2),
        "points_per_s": round(len(tail) / seconds),
    }
    return out


def plot_real(
    cases: dict[str, list[ScoredSeries]], names: list[str], directory: Path | None, path: Path
) -> None:
    data = load_recorded(directory=directory)
    truth = data.labels_truth
    fig, axes = plt.subplots(4, 1, figsize=(14, 10), sharex=True,
                             gridspec_kw={"height_ratios": [2, 1, 1, 1]})  # fmt: skip
    top = series_frame(data.samples, *TOP)
    cpu = series_frame(data.samples, *DB_CPU)
    i_top = names.index("top_articles")
    start = top["ts"].iloc[0]

    def minutes(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        return np.asarray((pd.DatetimeIndex(ts) - start).total_seconds() / 60)

    colors = {"lock": "tab:red", "drop_index": "tab:purple", "seq_scans": "tab:orange",
              "cpu_hog": "tab:brown", "blip": "tab:gray"}  # fmt: skip
    for ax in axes:
        for inj in truth["injections"]:
            a = minutes(pd.DatetimeIndex([pd.Timestamp(inj["start"]).tz_localize(None)]))[0]
            b = minutes(pd.DatetimeIndex([pd.Timestamp(inj["end"]).tz_localize(None)]))[0]
            ax.axvspan(a, max(b, a + 0.05), color=colors[inj["kind"]], alpha=0.15, lw=0)
    axes[0].semilogy(minutes(top["ts"]), top["value"] * 1000, lw=0.6, color="black")
    axes[0].set_ylabel("top_articles\nlatency (ms, log)")
    for kind, color in colors.items():
        axes[0].plot(
            [],
            [],
            color=color,
            lw=6,
            alpha=0.3,
            label=kind + (" (unlabelled)" if kind == "blip" else ""),
        )
    axes[0].legend(loc="upper right", ncol=5, fontsize=8)
    for ax, name in ((axes[1], "default"), (axes[2], "zscore")):
        scored = cases[name][i_top]
        ax.plot(minutes(scored.ts), scored.scores, lw=0.7)
        ax.axhline(scorers()[name].default_threshold, color="red", lw=0.8, ls="--")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(f"{name}\nscore")
    axes[3].plot(minutes(cpu["ts"]), cpu["value"], lw=0.6, color="black")
    axes[3].set_ylabel("database\nCPU ratio")
    axes[3].set_xlabel("minutes since start of recording")
    fig.suptitle("Real PostgreSQL canary latency with injected slowdowns (shaded): "
                 "default scorer vs rolling z-score")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json_safe(value: Any) -> Any:
    """NaN (no detection, so no delay) becomes null: the file stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--real-dir", type=Path, default=None, help="Default: data/real.")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    console = Console(width=150)

    gen = summarise(generator_cases(args.seeds))
    real, truth, names = real_cases(args.real_dir)
    real_summary = summarise(real)
    real_series = per_series(real, names)
    plot_real(real, names, args.real_dir, RESULTS / "anomaly_real.png")
    speed = throughput(args.series, args.points)

    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "generator_query_slowdown": {"seeds": args.seeds, "days": 14, **gen},
        "real_recorded_pg": {"series": names, "injections": truth["injections"],
                             "machine": truth.get("machine"), **real_summary,
                             "per_series": real_series},
        "throughput": speed,
    }  # fmt: skip
    (RESULTS / "anomaly.json").write_text(
        json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )

    table = Table(title="anomaly scorers, event level (no point-adjust)")
    for col in ("data", "model", "thr", "events", "detected", "false ep.", "precision",
                "recall", "F1", "delay min", "best F1 (thr)"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("data", "model") else "right")
    for label, block in (("generator", gen), ("real pg", real_summary)):
        for name in scorers():
            r = block[name]
            table.add_row(
                label, name, f"{r['threshold']:.2f}", str(r["events"]), str(r["detected"]),
                str(r["false_episodes"]), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                f"{r['f1']:.3f}", f"{r['median_delay_min']:.2f}",
                f"{r['best_f1']:.3f} ({r['best_f1_threshold']:.2f})",
            )  # fmt: skip
    console.print(table)
    per = Table(title="real data per series at the default threshold")
    for col in ("series", "model", "events", "detected", "false ep.", "precision", "recall",
                "delay min"):  # fmt: skip
        per.add_column(col)
    for name, rows in real_series.items():
        for series, r in rows.items():
            per.add_row(series, name, str(r["events"]), str(r["detected"]),
                        str(r["false_episodes"]), f"{r['precision']:.3f}", f"{r['recall']:.3f}",
                        f"{r['median_delay_min']:.2f}")  # fmt: skip
    console.print(per)
    console.print(
        f"throughput ({speed['series']} series x {speed['points_per_series']} points): "
        f"default {speed['default']['seconds']} s ({speed['default']['points_per_s']:,} pts/s), "
        f"zscore {speed['zscore']['seconds']} s ({speed['zscore']['points_per_s']:,} pts/s); "
        f"streaming {speed['default_streaming']['ms_per_tick_all_series']} ms per tick of "
        f"{speed['series']} series"
    )


if __name__ == "__main__":
    main()
