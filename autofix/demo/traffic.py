"""The demo's users: a steady request load, and a prober recording what users saw.

``python -m autofix.demo.traffic --url URL [--url URL …] --rate R [--probe FILE]`` runs in
its own process (the users are outside the system being fixed, and the demo's own
threads must not slow them down). The load sends about ``R`` requests a second, spread
over the workers, as a few dozen visitors with sessions. With ``--probe FILE`` it also
probes every worker's front page every ``--probe-interval`` seconds and appends one
JSON line per probe to FILE::

    {"t": 1767225600.25, "w": "http://127.0.0.1:8081", "s": 200, "ms": 4.1}
    {"t": 1767225600.50, "w": "http://127.0.0.1:8082", "s": 0, "ms": 1000.0, "e": "timeout"}

``s`` is the HTTP status (0: no answer), ``e`` why there was none. The file is the
demo's ground truth of user impact (``autofix.demo.truth`` reads it). It stops after
``--duration`` seconds, or on TERM / INT.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

import httpx

USERS = 40


def _get(client: httpx.Client, url: str, session: str) -> tuple[int, float, str | None]:
    start = time.perf_counter()
    try:
        reply = client.get(url, headers={"X-Session": session})
        return reply.status_code, (time.perf_counter() - start) * 1000, None
    except httpx.TimeoutException:
        return 0, (time.perf_counter() - start) * 1000, "timeout"
    except httpx.HTTPError as exc:
        return 0, (time.perf_counter() - start) * 1000, type(exc).__name__


def load(urls: list[str], rate: float, stop: threading.Event, seed: int, timeout: float) -> None:
    """About ``rate`` requests/s (Poisson arrivals) over ``urls`` until ``stop``."""
    rng = random.Random(seed)  # noqa: S311  (sample data)
    pages = ["/"] * 3 + [f"/article/{n}" for n in range(1, 41)]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    with (
        httpx.Client(timeout=timeout, limits=limits) as client,
        ThreadPoolExecutor(max_workers=32, thread_name_prefix="load") as pool,
    ):
        while not stop.is_set():
            url = rng.choice(urls) + rng.choice(pages)
            pool.submit(_get, client, url, f"user-{rng.randrange(USERS)}")
            stop.wait(rng.expovariate(rate))


def probe(
    urls: list[str], interval: float, out: TextIO, stop: threading.Event, timeout: float
) -> None:
    """Every ``interval`` s, the front page of each worker, one JSON line per answer."""
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=0)

    def one(client: httpx.Client, url: str) -> None:
        started = time.time()
        status, ms, error = _get(client, url + "/", "prober")
        record: dict[str, Any] = {"t": round(started, 3), "w": url, "s": status, "ms": round(ms, 1)}
        if error:
            record["e"] = error
        with lock:
            out.write(json.dumps(record) + "\n")
            out.flush()

    with (
        httpx.Client(timeout=timeout, limits=limits) as client,
        ThreadPoolExecutor(max_workers=2 * len(urls) + 2, thread_name_prefix="probe") as pool,
    ):
        next_at = time.monotonic()
        while not stop.is_set():
            for url in urls:
                pool.submit(one, client, url)
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autofix.demo.traffic", description=__doc__)
    parser.add_argument("--url", action="append", required=True, help="a worker's base URL")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--probe", default=None, help="append probe results to this file")
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=1.0, help="a user gives up after")
    parser.add_argument("--duration", type=float, default=None, help="stop after (s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    threads = [
        threading.Thread(
            target=load, args=(args.url, args.rate, stop, args.seed, args.timeout), daemon=True
        )
    ]
    handle = open(args.probe, "a", encoding="utf-8") if args.probe else None  # noqa: SIM115
    if handle is not None:
        threads.append(
            threading.Thread(
                target=probe,
                args=(args.url, args.probe_interval, handle, stop, args.timeout),
                daemon=True,
            )
        )
    for thread in threads:
        thread.start()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    while not stop.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            stop.set()
    for thread in threads:
        thread.join(timeout=5)
    if handle is not None:
        handle.close()


if __name__ == "__main__":
    main()
