"""API benchmark: latency and throughput of GET /api/v1/forecasts and GET /metrics.

    .venv/bin/python benchmarks/api.py [--series 10000] [--rate 200] [--duration 20]

A store in a temp dir gets 10,000 exhaustible series with six hours of 5-minute samples
(720,000 samples) and a history of prediction runs (10 runs of every series: 100,000
prediction rows; a tenth of the fleet is filling up), anomaly scores, refused fixes and
job runs. The API runs as ``autofix serve`` runs it: the app on a thread of the process
that owns the store, next to the jobs, behind the API front process
(``autofix.api.front``), which answers both endpoints from what the app hands it.

Each endpoint is measured in three phases: ``idle`` (no job runs), ``jobs`` (``train``
and ``remediate`` run back to back on job threads, their model work in
AUTOFIX_MODEL_WORKERS=2 worker processes, as ``autofix serve`` does) and ``jobs_inline``
(the same jobs with the model work on the service's own interpreter,
AUTOFIX_MODEL_WORKERS=0). The interpreter's switch interval is Python's default. The
server's CPU per request is reported for the service process and the front apart.

A second process (this script with ``--load``) sends requests on loopback on a fixed
open-loop schedule (200/s: request i is due at i/200 s, whether or not earlier ones came
back) and measures latency on the client side from the moment each request was due, so a
stall is not hidden by the client waiting. Then a closed loop (16 connections, back to
back) measures the most requests per second. Target: p99 < 20 ms at 200 requests/s, idle
and with the jobs running (``jobs``).

Also reported: what rebuilding the forecasts table costs after a prediction run (done
off the request path) and one uncached /metrics render. Writes benchmarks/results/api.json and
benchmarks/results/api_latency.png, and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TOKEN = "bench-viewer-token-0123456789"
#: Samples per series: six hours every 5 minutes.
HISTORY_POINTS = 72
PHASES = {
    "idle": "no job running",
    "jobs": "train + remediate running, model work in 2 worker processes",
    "jobs_inline": "train + remediate running, model work on the service's interpreter",
}
ENDPOINTS = {
    "forecasts": "/api/v1/forecasts",
    "forecasts_filtered": "/api/v1/forecasts?metric=node_filesystem_avail_bytes&within=4h&limit=20",
    "metrics": "/metrics",
}


# -- the load generator (runs in its own process) -----------------------------------------
#
# A lean HTTP/1.1 keep-alive client on asyncio streams: on two shared cores an httpx
# AsyncClient spends more CPU per request than the server does, and would measure itself.


class _Pool:
    """Up to ``size`` keep-alive connections; a request waits for a free one."""

    def __init__(self, url: str, size: int, headers: dict[str, str]) -> None:
        rest = url.split("://", 1)[1]
        self.address, _, path = rest.partition("/")
        host, port = self.address.rsplit(":", 1)
        self.host, self.port = host, int(port)
        lines = [f"GET /{path} HTTP/1.1", f"Host: {self.address}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.size = size
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.opened = 0

    async def get(self) -> tuple[int, int]:
        """Send the request once; (status, body bytes)."""
        if self.idle.empty() and self.opened < self.size:
            self.opened += 1
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            reader, writer = await self.idle.get()
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        body = await reader.readexactly(int(found.group(1)) if found else 0)
        self.idle.put_nowait((reader, writer))
        return int(head[9:12]), len(body)


async def _open_loop(
    url: str, rate: float, seconds: float, warmup: float, headers: dict[str, str]
) -> dict[str, Any]:
    pool = _Pool(url, 64, headers)
    loop = asyncio.get_running_loop()
    total = int((warmup + seconds) * rate)
    start = loop.time() + 0.2
    latencies = np.full(total, np.nan)
    late = np.zeros(total)
    statuses: dict[int, int] = {}
    sizes: list[int] = []

    async def one(i: int, due: float) -> None:
        late[i] = loop.time() - due
        status, size = await pool.get()
        latencies[i] = loop.time() - due
        statuses[status] = statuses.get(status, 0) + 1
        if i == total - 1:
            sizes.append(size)

    cpu = time.process_time()
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    finished = loop.time()
    cpu = time.process_time() - cpu
    measured = latencies[int(warmup * rate) :] * 1000
    return {
        "mode": "open loop",
        "rate": rate,
        "requests": len(measured),
        "seconds": seconds,
        "achieved_rps": round(total / (finished - start), 1),
        "p50_ms": round(float(np.percentile(measured, 50)), 2),
        "p90_ms": round(float(np.percentile(measured, 90)), 2),
        "p99_ms": round(float(np.percentile(measured, 99)), 2),
        "max_ms": round(float(np.max(measured)), 2),
        "client_late_p99_ms": round(float(np.percentile(late, 99)) * 1000, 2),
        "client_cpu_ms_per_request": round(cpu / total * 1000, 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "response_bytes": sizes[0] if sizes else None,
        "latencies_ms": [round(float(x), 3) for x in measured],
    }


async def _closed_loop(
    url: str, connections: int, seconds: float, headers: dict[str, str]
) -> dict[str, Any]:
    pool = _Pool(url, connections, headers)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while loop.time() < end:
            sent = loop.time()
            status, _ = await pool.get()
            latencies.append(loop.time() - sent)
            errors += status != 200

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = loop.time() - started
    ms = np.array(latencies) * 1000
    return {
        "mode": f"closed loop, {connections} connections",
        "requests": len(ms),
        "rps": round(len(ms) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "errors": errors,
    }


def load_main(argv: list[str]) -> None:
    """``--load URL RATE SECONDS WARMUP CONNECTIONS SATURATE_SECONDS``: print one JSON line."""
    url, rate, seconds, warmup, connections, saturate = argv
    # Like Prometheus: ask for gzip (only /metrics compresses).
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"}
    result = asyncio.run(_open_loop(url, float(rate), float(seconds), float(warmup), headers))
    result["saturation"] = asyncio.run(
        _closed_loop(url, int(connections), float(saturate), headers)
    )
    sys.stdout.write(json.dumps(result) + "\n")


# -- the world ---------------------------------------------------------------------------------


def _fleet(store: Any, series: int, runs: int, now: datetime) -> dict[str, Any]:
    """``series`` disks on series/10 hosts, ``runs`` prediction runs; a tenth fills up."""
    rng = np.random.default_rng(0)
    hosts = [f"web-{i // 10:04d}" for i in range(series)]
    frame = pd.DataFrame(
        {
            "ts": [now] * series,
            "host": hosts,
            "metric": "node_filesystem_avail_bytes",
            "labels": [f'{{"mountpoint":"/data/{i % 10}"}}' for i in range(series)],
            "value": rng.uniform(5e9, 50e9, series),
            "unit": "bytes",
            "capacity": 100e9,
        }
    )
    store.write(frame)
    ids = store.query("SELECT series_id FROM series ORDER BY series_id")["series_id"].to_numpy()
    filling = rng.random(series) < 0.1
    hours = rng.uniform(1, 96, series)
    # Six hours of 5-minute samples: what `remediate` forecasts from (a filling disk
    # loses what it has left by its ETA, the others wander).
    start = frame["value"].to_numpy()
    for step in range(1, HISTORY_POINTS):
        ago = HISTORY_POINTS - step
        drop = np.where(filling, start / hours * ago / 12, rng.normal(0, 5e7, series))
        store.write(frame.assign(ts=now - timedelta(minutes=5 * ago), value=start + drop))
    for run in range(runs):
        made_at = now - timedelta(minutes=runs - run)
        eta = pd.Series(pd.Timestamp(now) + pd.to_timedelta(hours, unit="h")).where(filling)
        p24 = np.where(filling, np.clip(24 / hours, 0, 1), 0.0)
        predictions = pd.DataFrame(
            {
                "series_id": ids,
                "origin": made_at,
                "eta": eta,
                "eta_lo": eta - pd.Timedelta(hours=1),
                "eta_hi": eta + pd.Timedelta(hours=2),
                "p_1h": np.where(filling, np.clip(1 / hours, 0, 1), 0.0),
                "p_4h": np.where(filling, np.clip(4 / hours, 0, 1), 0.0),
                "p_24h": p24,
                "p_4d": np.where(filling, np.clip(96 / hours, 0, 1), 0.0),
                "threshold": 1.0,
                "model": "default",
                "model_version": "1",
            }
        )
        store.write_predictions(predictions, made_at)
    return {
        "series": series,
        "filling": int(filling.sum()),
        "samples": series * HISTORY_POINTS,
        "prediction_rows": series * runs,
    }


def _extras(store: Any, executor: Any, now: datetime) -> None:
    """Anomaly scores (500 latency series × 60 points), 200 refused fixes, 5,000 job runs."""
    rows = []
    for sid in range(1, 501):
        for step in range(60):
            rows.append((now, sid, now - timedelta(minutes=step), 0.01, (sid * step) % 100 / 100))
    scores = pd.DataFrame(rows, columns=["made_at", "series_id", "ts", "value", "score"])
    scores["model"] = "robust"
    store.append("anomaly_scores", scores)
    for _ in range(200):
        executor.run("files.clean_temp", "undeclared")
    jobs = pd.DataFrame(
        {
            "job": [("collect", "remediate", "health")[i % 3] for i in range(5000)],
            "started_at": [now - timedelta(seconds=15 * i) for i in range(5000)],
        }
    )
    jobs["finished_at"] = jobs["started_at"] + timedelta(milliseconds=40)
    jobs["duration_ms"] = 40.0
    jobs["ok"] = [i % 50 != 0 for i in range(5000)]
    jobs["error"] = [None if i % 50 else "boom" for i in range(5000)]
    jobs["summary"] = "{}"
    store.append("job_runs", jobs)


def _time(fn: Any, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2)


class _Jobs:
    """``train`` and ``remediate`` back to back on two threads, as the scheduler runs them."""

    def __init__(self, service: Any) -> None:
        import threading

        self.service = service
        self.stop = threading.Event()
        self.runs: dict[str, list[dict[str, Any]]] = {"train": [], "remediate": []}
        self.threads = [
            threading.Thread(target=self._loop, args=(job,), name=f"job-{job}", daemon=True)
            for job in self.runs
        ]

    def _loop(self, job: str) -> None:
        while not self.stop.is_set():
            run = self.service.run_job(job)
            self.runs[job].append({"ok": run.ok, "ms": round(run.duration_ms), "error": run.error})

    def __enter__(self) -> _Jobs:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def summary(self) -> dict[str, Any]:
        out = {}
        for job, runs in self.runs.items():
            failed = [r["error"] for r in runs if not r["ok"]]
            out[job] = {
                "runs": len(runs),
                "failed": len(failed),
                "median_ms": float(np.median([r["ms"] for r in runs])) if runs else None,
                "errors": sorted(set(failed))[:3],
            }
        return out


def _front_cpu(pid: int | None) -> float:
    """CPU seconds the API front process has used so far (0 without one)."""
    if pid is None:
        return 0.0
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _load(url: str, args: argparse.Namespace, front: int | None) -> dict[str, Any]:
    """One endpoint under load from a second process; the server's CPU per request."""
    cpu = time.process_time()  # this process: the owner's app (proxied requests), the jobs
    front_cpu = _front_cpu(front)
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--load",
            url,
            str(args.rate),
            str(args.duration),
            str(args.warmup),
            str(args.connections),
            str(args.saturate),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    run: dict[str, Any] = json.loads(proc.stdout)
    requests = _requests(run, args)
    run["process_cpu_ms_per_request"] = round((time.process_time() - cpu) * 1000 / requests, 3)
    run["front_cpu_ms_per_request"] = round((_front_cpu(front) - front_cpu) * 1000 / requests, 3)
    return run


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10, help="Prediction runs per series.")
    parser.add_argument("--rate", type=float, default=200.0, help="Requests per second.")
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds per endpoint.")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--saturate", type=float, default=5.0, help="Closed-loop seconds.")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"Comma-separated, of: {', '.join(PHASES)}."
    )
    results = Path(__file__).parent / "results"
    parser.add_argument("--out", type=Path, default=results / "api.json")
    parser.add_argument("--plot", type=Path, default=results / "api_latency.png")
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := sorted(set(phases) - set(PHASES)):
        parser.error(f"--phases: unknown phase {unknown[0]!r} (known: {', '.join(PHASES)})")

    from prometheus_client import generate_latest
    from rich.console import Console
    from rich.table import Table

    from autofix.api.app import create_app
    from autofix.api.context import PredictionCache
    from autofix.api.metrics import build_registry
    from autofix.api.server import ApiServer
    from autofix.config import load_settings
    from autofix.jobs import Service
    from autofix.pipeline import Pipeline
    from autofix.store import MetricStore
    from autofix.workers import InlineModelWork, ModelWorkers

    console = Console(width=120)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    root = Path(__file__).resolve().parents[1]
    switch_interval = sys.getswitchinterval()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            environ={
                "AUTOFIX_API_TOKENS": f"bench:viewer:{TOKEN}",
                "AUTOFIX_QUARANTINE_DIR": str(Path(tmp) / "q"),
                "AUTOFIX_MODELS_DIR": str(Path(tmp) / "models"),
                "AUTOFIX_PREDICT_LOOKBACK": "6h",
                "AUTOFIX_FIX_MODE": "shadow",
            }
        )
        # Two disk rules over the whole fleet, recorded in shadow: the policy's work too.
        pipeline = Pipeline.model_validate(
            {
                "rules": [
                    {"name": "disk-exhaustion-24h", "mode": "shadow",
                     "when": {"type": "exhaustion", "metric": "node_filesystem_avail_bytes",
                              "within": "24h", "probability": 0.8}},
                    {"name": "disk-high", "mode": "shadow",
                     "when": {"type": "threshold", "metric": "node_filesystem_avail_bytes",
                              "of_capacity": True, "below": 0.1, "for": "5m"}},
                ]
            }
        )  # fmt: skip
        store = MetricStore(Path(tmp) / "bench.duckdb")
        started = time.perf_counter()
        fleet = _fleet(store, args.series, args.runs, now)
        workers = ModelWorkers(2, log_level="WARNING", log_format="json")
        service = Service(
            settings,
            pipeline,
            store,
            clock=lambda: now,  # the samples end at `now`: every run forecasts them all
            scenarios=str(root / "data" / "samples"),
            models=workers,
        )
        _extras(store, service.executor, now)
        console.print(f"world: {fleet} in {time.perf_counter() - started:.1f}s")
        app = create_app(settings, store, service=service)
        ctx = app.state.autofix
        # What a rebuild costs when a new prediction run lands, and an uncached /metrics.
        rebuild_ms = _time(lambda: PredictionCache(store, clock=lambda: now).get())
        check_ms = _time(ctx.predictions.get, repeat=50)
        registry = build_registry(ctx)
        metrics_render_ms = _time(lambda: generate_latest(registry))
        server = ApiServer(app, "127.0.0.1", 0, front=True)  # as `autofix serve` runs it
        server.start()
        time.sleep(2)  # the front's first forecasts table
        runs: dict[str, dict[str, Any]] = {}
        jobs: dict[str, Any] = {}
        try:
            for phase in phases:
                service.models = InlineModelWork() if phase == "jobs_inline" else workers
                if phase != "idle":
                    workers.pid()  # started before the clock runs, as in a running service
                runs[phase] = {}
                with _Jobs(service) if phase != "idle" else _Nothing() as running:
                    for name, path in ENDPOINTS.items():
                        console.print(
                            f"{phase}: {name} at {args.rate:g}/s for {args.duration:g}s …"
                        )
                        runs[phase][name] = _load(server.url + path, args, server.front_pid)
                if running is not None:
                    jobs[phase] = running.summary()
                    console.print(f"  jobs during {phase}: {jobs[phase]}")
        finally:
            server.stop()
            service.models = workers
            service.close()
            store.close()
    assert sys.getswitchinterval() == switch_interval

    table = Table(title=f"API under load: {args.series:,} series, loopback, second process")
    for column in ("phase", "endpoint", "sent", "p50", "p90", "p99", "max", "not 200",
                   "bytes", "max rps"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("phase", "endpoint") else "right")
    for phase, endpoints in runs.items():
        for name, run in endpoints.items():
            table.add_row(
                phase,
                name,
                f"{run['achieved_rps']:g}/s",
                f"{run['p50_ms']:.1f} ms",
                f"{run['p90_ms']:.1f} ms",
                f"{run['p99_ms']:.1f} ms",
                f"{run['max_ms']:.0f} ms",
                str(sum(v for k, v in run["statuses"].items() if k != "200")),
                f"{run['response_bytes']:,}",
                f"{run['saturation']['rps']:,.0f}/s",
            )
    console.print(table)
    for phase in runs:
        console.print(f"  {phase}: {PHASES[phase]}")
    for name, path in ENDPOINTS.items():
        console.print(f"  {name}: GET {path}")
    console.print(
        f"forecasts table rebuild after a prediction run {rebuild_ms} ms (off the request "
        f"path); freshness check {check_ms} ms; uncached /metrics render "
        f"{metrics_render_ms} ms; switch interval {switch_interval * 1000:g} ms (default)"
    )
    judged = {p: e for p, e in runs.items() if p in ("idle", "jobs")}
    target_met = bool(judged) and all(
        r["p99_ms"] < 20 for endpoints in judged.values() for r in endpoints.values()
    )
    console.print(
        f"target p99 < 20 ms at {args.rate:g}/s (idle and with jobs): "
        f"{'met' if target_met else 'MISSED'}"
    )

    if args.plot:
        _plot(runs, args)

    for endpoints in runs.values():
        for run in endpoints.values():
            del run["latencies_ms"]
    result = {
        "benchmark": "api",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": _cpus(),
            "niceness": os.nice(0),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "world": fleet,
        "rate": args.rate,
        "duration_s": args.duration,
        "switch_interval_ms": switch_interval * 1000,
        "phases": {p: PHASES[p] for p in runs},
        "endpoints": runs,
        "jobs": jobs,
        "cache_rebuild_ms": rebuild_ms,
        "cache_check_ms": check_ms,
        "metrics_render_uncached_ms": metrics_render_ms,
        "target": "p99 < 20 ms at 200 requests/s, idle and with train + remediate running",
        "target_met": target_met,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _plot(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ENDPOINTS), figsize=(13, 4.2), sharey=True)
    ticks = [0.5, 0.9, 0.99, 0.999]
    for ax, (name, path) in zip(axes, ENDPOINTS.items(), strict=True):
        for phase, endpoints in runs.items():
            values = np.sort(np.array(endpoints[name]["latencies_ms"]))
            q = (np.arange(len(values)) + 0.5) / len(values)
            ax.plot(1 / (1 - q), values, label=f"{phase}: {PHASES[phase]}")
        ax.axhline(20, color="grey", linestyle="--", linewidth=1, label="target p99: 20 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([1 / (1 - t) for t in ticks], [f"p{t * 100:g}" for t in ticks])
        ax.set_xlabel("percentile")
        ax.set_title(f"GET {path}", fontsize=8)
    axes[0].set_ylabel("latency (ms, from the scheduled send time)")
    axes[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{args.rate:g} requests/s open loop, {args.series:,} series")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    plt.close(fig)


def _requests(run: dict[str, Any], args: argparse.Namespace) -> int:
    """Every request the server answered during one load run (open and closed loop)."""
    return int((args.warmup + args.duration) * args.rate) + int(run["saturation"]["requests"])


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    main()
