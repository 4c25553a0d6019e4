"""Record a REAL query-latency dataset on this machine, with injected, logged slowdowns.

    .venv/bin/python benchmarks/record_latency.py [--out data/real] [--scale 1.0]

Starts a throwaway PostgreSQL (``tests/servers.py``), loads an ``articles`` table
(300,000 rows, ~60 MB), runs pgbench as background load (a point read + a view-counter
update per transaction, rate-limited), and probes two canary queries every 0.5 s while
sampling CPU (the database's process tree, the whole host, the rest) and load every
second. The tree runs at nice -10: this is a shared machine and other jobs run on it.
After a quiet warm-up it injects
real slowdowns, one at a time with quiet gaps between them, and logs when each began and
ended:

- ``lock``: a session holds ``LOCK TABLE articles IN ACCESS EXCLUSIVE MODE``; canaries
  block until their 2 s ``lock_timeout`` (their latency is then censored at ~2 s);
- ``cpu_hog``: three busy-loop processes on a 2-core host;
- ``drop_index``: the index serving the canary is dropped, held off, and rebuilt;
- ``seq_scans``: four sessions run full-table aggregates in a loop;
- ``blip`` (NOT a labelled slowdown): one ~1 s burst of scans, the kind of noise that
  should not page anybody.

Writes ``recorded_pg.csv`` (import format ``timestamp,host,metric,value,labels``) and
``recorded_pg.labels.json`` (the scenario truth format: ``slowdown_windows`` per series,
plus ``injections`` with every event, blips included). ``--scale`` shrinks every
duration (``--scale 0.1`` is a two-minute smoke run). Wall time at scale 1: ~19 min.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import PostgresServer, find_postgres_bin, postgres_server  # noqa: E402

HOST = "pg-recorded"
DATNAME = "postgres"
ROWS = 300_000
CATEGORIES = 50
PROBE_EVERY = 0.5
SAMPLE_EVERY = 1.0
LATENCY = "pg_query_latency_seconds"
CANARIES = {
    # Served by articles_category_published; slows down when that index is gone.
    "top_articles": (
        "SELECT id, title FROM articles WHERE category = %s ORDER BY published_at DESC LIMIT 20"
    ),
    "article_by_id": "SELECT title, views FROM articles WHERE id = %s",
}
PGBENCH_SCRIPT = """\\set id random(1, {rows})
SELECT title, views FROM articles WHERE id = :id;
UPDATE articles SET views = views + 1 WHERE id = :id;
"""
# (kind, seconds) in order; quiet gaps between them are drawn from GAP_RANGE.
SCHEDULE: list[tuple[str, float]] = [
    ("lock", 20),
    ("blip", 1),
    ("drop_index", 30),
    ("seq_scans", 40),
    ("cpu_hog", 45),
    ("blip", 1),
    ("lock", 30),
    ("seq_scans", 30),
    ("drop_index", 45),
    ("blip", 1),
    ("cpu_hog", 35),
    ("lock", 15),
    ("seq_scans", 50),
    ("blip", 1),
    ("drop_index", 25),
]
WARMUP = 100.0
GAP_RANGE = (35.0, 50.0)
TAIL = 30.0
# Which injections each recorded series is labelled with: those whose mechanism can reach
# it. Every injection reaches both canaries (blocking, CPU or I/O contention) except the
# dropped index, which only the query it served uses. A CPU hog moves a sub-millisecond
# query little on an idle host but a lot on a busy one (seen in a first recording on this
# shared machine), so it is labelled: ground truth is what we did, not what we saw.
# Host-wide CPU and load1 carry no labels: other jobs on a shared machine move them, and
# load1 lags and tails every event.
LABELS_FOR: dict[str, tuple[str, ...]] = {
    "top_articles": ("lock", "drop_index", "seq_scans", "cpu_hog"),
    "article_by_id": ("lock", "seq_scans", "cpu_hog"),
    "db_cpu": ("cpu_hog", "seq_scans"),
    "host_cpu": (),
    "external_cpu": (),
    "load1": (),
}
# Our whole process tree runs at this niceness (children inherit it), so other jobs on a
# shared machine disturb the recording less; the CPU hog inherits it too and so competes
# with postgres on equal terms.
NICENESS = -10


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime, rounding: str = "floor") -> str:
    """ISO UTC with a Z at whole seconds (the scenario format), rounded outward."""
    seconds = ts.timestamp()
    whole = math.floor(seconds) if rounding == "floor" else math.ceil(seconds)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Recorder:
    """Thread-safe rows of the import format."""

    rows: list[tuple[str, str, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ts: datetime, metric: str, value: float, labels: dict[str, str]) -> None:
        text = json.dumps(labels, sort_keys=True, separators=(",", ":")) if labels else "{}"
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        with self.lock:
            self.rows.append((stamp, metric, value, text))


def load_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            CREATE TABLE articles (
                id bigserial PRIMARY KEY,
                author_id int NOT NULL,
                category int NOT NULL,
                published_at timestamptz NOT NULL,
                title text NOT NULL,
                body text NOT NULL,
                views int NOT NULL DEFAULT 0
            )"""
        )
        conn.execute(
            """
            INSERT INTO articles (author_id, category, published_at, title, body)
            SELECT (random() * 5000)::int, (random() * %s)::int,
                   now() - random() * interval '730 days',
                   'Article ' || i || ' ' || md5(i::text),
                   repeat(md5((i * 7)::text), 6)
            FROM generate_series(1, %s) AS i""",
            (CATEGORIES - 1, ROWS),
        )
        conn.execute(
            "CREATE INDEX articles_category_published ON articles (category, published_at)"
        )
        conn.execute("CREATE INDEX articles_author ON articles (author_id)")
        conn.execute("VACUUM ANALYZE articles")


def probe_loop(dsn: str, name: str, stop: threading.Event, rec: Recorder, seed: int) -> None:
    """Run one canary on a fixed 0.5 s grid; a late probe skips the slots it missed."""
    rng = random.Random(seed)
    sql = CANARIES[name]
    labels = {"datname": DATNAME, "query": name}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '2s'")
        conn.execute("SET statement_timeout = '5s'")
        start = time.monotonic()
        slot = 0
        while not stop.is_set():
            arg = rng.randrange(CATEGORIES) if name == "top_articles" else rng.randrange(1, ROWS)
            ts = _now()
            t0 = time.perf_counter()
            # On a lock or statement timeout the wait itself is the latency we record.
            with contextlib.suppress(psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable):
                conn.execute(sql, (arg,)).fetchall()
            rec.add(ts, LATENCY, round(time.perf_counter() - t0, 6), labels)
            slot = max(slot + 1, math.ceil((time.monotonic() - start) / PROBE_EVERY))
            stop.wait(max(0.0, start + slot * PROBE_EVERY - time.monotonic()))


def _tree_cpu_seconds(me: psutil.Process) -> dict[int, float]:
    """CPU seconds so far of this script and everything it started (postgres, pgbench, hogs)."""
    out: dict[int, float] = {}
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            out[proc.pid] = times.user + times.system
    return out


def host_loop(stop: threading.Event, rec: Recorder) -> None:
    """Every second: host CPU and load, and the CPU of our own process tree vs the rest.

    This is a shared machine: other people's jobs load it too. ``process_cpu_usage_ratio
    {group="db"}`` is what a dedicated database host would show (postgres, pgbench, the
    probes and the injected hogs); ``node_cpu_external_ratio`` is everything else, kept
    as a record of how noisy the neighbours were.
    """
    me = psutil.Process()
    cpus = psutil.cpu_count() or 1
    psutil.cpu_percent(interval=None)
    before = _tree_cpu_seconds(me)
    start = time.monotonic()
    last = start
    slot = 0
    while not stop.is_set():
        slot += 1
        stop.wait(max(0.0, start + slot * SAMPLE_EVERY - time.monotonic()))
        ts = _now()
        host = psutil.cpu_percent(interval=None) / 100
        now_cpu = _tree_cpu_seconds(me)
        elapsed = max(time.monotonic() - last, 1e-3)
        last = time.monotonic()
        used = sum(v - before.get(pid, 0.0) for pid, v in now_cpu.items())
        before = now_cpu
        own = min(max(used / elapsed / cpus, 0.0), 1.0)
        rec.add(ts, "node_cpu_usage_ratio", round(host, 4), {})
        rec.add(ts, "process_cpu_usage_ratio", round(own, 4), {"group": "db"})
        rec.add(ts, "node_cpu_external_ratio", round(max(host - own, 0.0), 4), {})
        rec.add(ts, "node_load1", round(os.getloadavg()[0], 3), {})


# -- injections ------------------------------------------------------------------------


def inject_lock(dsn: str, seconds: float) -> tuple[datetime, datetime, str]:
    with psycopg.connect(dsn) as conn:
        conn.execute("LOCK TABLE articles IN ACCESS EXCLUSIVE MODE")
        start = _now()
        time.sleep(seconds)
        conn.commit()
        end = _now()
    return start, end, "LOCK TABLE articles IN ACCESS EXCLUSIVE MODE held"


def inject_cpu_hog(dsn: str, seconds: float) -> tuple[datetime, datetime, str]:
    n = 3
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    start = _now()
    try:
        time.sleep(seconds)
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
    return start, _now(), f"{n} busy-loop processes on {os.cpu_count()} CPUs"


def inject_drop_index(dsn: str, seconds: float) -> tuple[datetime, datetime, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX articles_category_published")
        start = _now()
        time.sleep(seconds)
        conn.execute(
            "CREATE INDEX articles_category_published ON articles (category, published_at)"
        )
        end = _now()
    return start, end, "index articles_category_published dropped, held off, rebuilt"


def _scan_burst(dsn: str, seconds: float, sessions: int) -> tuple[datetime, datetime]:
    deadline = time.monotonic() + seconds

    def scan() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                conn.execute(
                    "SELECT category, count(*), avg(length(body)) FROM articles GROUP BY 1"
                ).fetchall()

    threads = [threading.Thread(target=scan) for _ in range(sessions)]
    start = _now()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return start, _now()


def inject_seq_scans(dsn: str, seconds: float) -> tuple[datetime, datetime, str]:
    start, end = _scan_burst(dsn, seconds, 4)
    return start, end, "4 sessions running full-table GROUP BY scans in a loop"


def inject_blip(dsn: str, seconds: float) -> tuple[datetime, datetime, str]:
    start, end = _scan_burst(dsn, seconds, 4)
    return start, end, "one ~1 s scan burst: noise, deliberately NOT a labelled slowdown"


INJECT: dict[str, Callable[[str, float], tuple[datetime, datetime, str]]] = {
    "lock": inject_lock,
    "cpu_hog": inject_cpu_hog,
    "drop_index": inject_drop_index,
    "seq_scans": inject_seq_scans,
    "blip": inject_blip,
}


# -- main ------------------------------------------------------------------------------


def pgbench(server: PostgresServer, seconds: float, script: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("pgbench") or str(find_postgres_bin() / "pgbench")
    env = {**os.environ, "PGPASSWORD": server.password}
    return subprocess.Popen(
        [binary, "-n", "-f", str(script), "-c", "4", "-j", "2", "-R", "150",
         "-T", str(math.ceil(seconds)), "-h", server.host, "-p", str(server.port),
         "-U", server.user, server.dbname],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def record(out: Path, scale: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    gaps = [rng.uniform(*GAP_RANGE) * scale for _ in SCHEDULE]
    total = (WARMUP + TAIL) * scale + sum(gaps) + sum(max(1.0, s * scale) for _, s in SCHEDULE)
    rec = Recorder()
    injections: list[dict[str, Any]] = []
    try:
        niceness = os.nice(NICENESS - os.nice(0))
    except PermissionError:
        niceness = os.nice(0)
        print(f"not allowed to renice to {NICENESS}; recording at {niceness}", file=sys.stderr)
    with postgres_server() as server, tempfile.TemporaryDirectory() as tmp:
        t_load = time.monotonic()
        load_table(server.dsn)
        print(f"loaded {ROWS} rows in {time.monotonic() - t_load:.1f} s", flush=True)
        script = Path(tmp) / "load.sql"
        script.write_text(PGBENCH_SCRIPT.format(rows=ROWS), encoding="ascii")
        bench = pgbench(server, total + 30, script)
        stop = threading.Event()
        threads = [
            threading.Thread(target=probe_loop, args=(server.dsn, name, stop, rec, seed + i))
            for i, name in enumerate(CANARIES)
        ]
        threads.append(threading.Thread(target=host_loop, args=(stop, rec)))
        for t in threads:
            t.start()
        began = _now()
        try:
            time.sleep(WARMUP * scale)
            for (kind, seconds), gap in zip(SCHEDULE, gaps, strict=True):
                duration = seconds if kind == "blip" else max(1.0, seconds * scale)
                start, end, detail = INJECT[kind](server.dsn, duration)
                injections.append(
                    {"kind": kind, "start": _iso(start), "end": _iso(end, "ceil"),
                     "seconds": round((end - start).total_seconds(), 1),
                     "detail": detail}
                )  # fmt: skip
                print(f"{_iso(start)} {kind:<10} {injections[-1]['seconds']:>5} s", flush=True)
                time.sleep(gap)
            time.sleep(TAIL * scale)
        finally:
            stop.set()
            for t in threads:
                t.join()
            bench.terminate()
            _, bench_err = bench.communicate(timeout=30)
        ended = _now()
    if bench.returncode not in (0, -15) and bench_err:
        print(f"pgbench: {bench_err.decode(errors='replace')[-500:]}", file=sys.stderr)
    return write(out, rec, injections, began, ended, scale, seed, niceness)


def write(
    out: Path,
    rec: Recorder,
    injections: list[dict[str, Any]],
    began: datetime,
    ended: datetime,
    scale: float,
    seed: int,
    niceness: int,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(rec.rows)
    csv_path = out / "recorded_pg.csv"
    with csv_path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("timestamp,host,metric,value,labels\n")
        for stamp, metric, value, labels in rows:
            quoted = '"' + labels.replace('"', '""') + '"'
            fh.write(f"{stamp},{HOST},{metric},{value:g},{quoted}\n")
    series = []
    for key, metric, labels, unit, desc in [
        ("top_articles", LATENCY, {"datname": DATNAME, "query": "top_articles"}, "seconds",
         "Canary served by the (category, published_at) index."),
        ("article_by_id", LATENCY, {"datname": DATNAME, "query": "article_by_id"}, "seconds",
         "Primary-key lookup canary; drop_index does not touch it."),
        ("db_cpu", "process_cpu_usage_ratio", {"group": "db"}, "ratio",
         "CPU of postgres, pgbench, the probes and the hogs / CPUs: a dedicated DB host."),
        ("host_cpu", "node_cpu_usage_ratio", {}, "ratio",
         "Whole-host CPU (shared machine: other jobs included), every second."),
        ("external_cpu", "node_cpu_external_ratio", {}, "ratio",
         "Host CPU not used by the recording: how busy the neighbours were."),
        ("load1", "node_load1", {}, "count",
         "Host 1-minute load average, every second; lags events, so not labelled."),
    ]:  # fmt: skip
        kinds = LABELS_FOR[key]
        series.append(
            {"host": HOST, "metric": metric,
             "labels": json.dumps(labels, sort_keys=True, separators=(",", ":")) if labels
             else "{}", "unit": unit, "type": "gauge", "direction": "none",
             "labelled": bool(kinds), "labelled_kinds": list(kinds),
             "slowdown_windows": [[i["start"], i["end"]] for i in injections
                                  if i["kind"] in kinds],
             "gaps": [], "description": desc}
        )  # fmt: skip
    truth: dict[str, Any] = {
        "schema_version": 1,
        "scenario": "recorded_pg",
        "kind": "latency",
        "description": (
            "Real PostgreSQL canary latency under pgbench load on one host, with injected "
            "lock, CPU-hog, dropped-index and sequential-scan slowdowns; blips are noise."
        ),
        "host": HOST,
        "seed": seed,
        "start": _iso(began),
        "end": _iso(ended, "ceil"),
        "step": f"{PROBE_EVERY}s",
        "step_seconds": PROBE_EVERY,
        "parameters": {"rows": ROWS, "categories": CATEGORIES, "scale": scale,
                       "pgbench_rate_tps": 150, "pgbench_clients": 4},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "postgres_bin": str(find_postgres_bin()), "niceness": niceness,
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "injections": injections,
        "series": series,
    }  # fmt: skip
    (out / "recorded_pg.labels.json").write_text(
        json.dumps(truth, sort_keys=True, indent=2) + "\n", encoding="utf-8"
    )
    print(f"wrote {len(rows)} rows to {csv_path} ({csv_path.stat().st_size / 1e6:.2f} MB)")
    return truth


def relabel(out: Path) -> None:
    """Recompute every series' windows from the logged injections and ``LABELS_FOR``."""
    path = out / "recorded_pg.labels.json"
    truth = json.loads(path.read_text(encoding="utf-8"))
    keys = {json.dumps({"datname": DATNAME, "query": q}, sort_keys=True, separators=(",", ":")): q
            for q in CANARIES}  # fmt: skip
    keys.update({"process_cpu_usage_ratio": "db_cpu", "node_cpu_usage_ratio": "host_cpu",
                 "node_cpu_external_ratio": "external_cpu", "node_load1": "load1"})  # fmt: skip
    for entry in truth["series"]:
        kinds = LABELS_FOR[keys.get(entry["labels"]) or keys[entry["metric"]]]
        entry["labelled"], entry["labelled_kinds"] = bool(kinds), list(kinds)
        entry["slowdown_windows"] = [
            [i["start"], i["end"]] for i in truth["injections"] if i["kind"] in kinds
        ]
    path.write_text(json.dumps(truth, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    print(f"relabelled {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "real")
    parser.add_argument("--scale", type=float, default=1.0, help="Shrink every duration.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--relabel", action="store_true", help="Only recompute windows of an existing recording."
    )
    args = parser.parse_args()
    if args.relabel:
        relabel(args.out)
    else:
        record(args.out, args.scale, args.seed)


if __name__ == "__main__":
    main()
