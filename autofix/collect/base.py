"""What every collector shares: the Sample type, the Collector protocol and the cycle runner.

A collector reads one source and returns samples. It never raises into the loop: the
runner gives each collector a deadline, and a failure or a timeout becomes an
``autofix_collector_up 0`` sample plus a logged reason, so one slow NFS mount or a hung
probe never stalls the others.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd

log = logging.getLogger(__name__)

#: Columns of the frame a cycle produces; ``MetricStore.write`` takes exactly this shape.
FRAME_COLUMNS = ("ts", "host", "metric", "labels", "value", "unit", "capacity")

#: Service series whose capacity is a limit the service runs out of (Redis refuses writes
#: at maxmemory, PostgreSQL refuses connections when its pool is full). Forecast beside
#: the names ``autofix.models.base.is_exhaustible`` knows by suffix.
EXHAUSTIBLE_METRICS = frozenset(
    {
        "redis_memory_used_bytes",
        "redis_memory_used_rss_bytes",
        "redis_connected_clients",
        "pg_connections_in_use",
        "pg_roles_connections",
        "pg_database_connections",
    }
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation. ``ts`` None means "the time of the cycle"."""

    metric: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    unit: str = ""
    capacity: float | None = None
    ts: datetime | None = None


class Collector(Protocol):
    """Anything with a name that returns samples; it should honour its own timeouts."""

    name: str

    def collect(self) -> list[Sample]: ...


def format_labels(labels: Mapping[str, str] | None) -> str:
    """Canonical JSON for a label set: sorted keys, compact; ``{}`` when empty."""
    if not labels:
        return "{}"
    return json.dumps(
        {str(k): str(v) for k, v in labels.items()}, sort_keys=True, separators=(",", ":")
    )


def parse_labels(text: Any) -> dict[str, str]:
    """A series' canonical-JSON labels as a dict of strings; ``{}`` for anything else.

    >>> parse_labels('{"target":"web"}'), parse_labels("not json")
    ({'target': 'web'}, {})
    """
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def samples_to_frame(samples: Iterable[Sample], host: str, now: datetime) -> pd.DataFrame:
    """Turn samples into the store's write frame, stamping ``now`` where ts is missing."""
    naive_now = _naive_utc(now)
    rows = [
        (
            _naive_utc(s.ts) if s.ts is not None else naive_now,
            host,
            s.metric,
            format_labels(s.labels),
            float(s.value),
            s.unit,
            s.capacity,
        )
        for s in samples
    ]
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    frame["ts"] = pd.to_datetime(frame["ts"])
    frame["capacity"] = frame["capacity"].astype("float64")
    return frame


def _naive_utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        return ts
    return ts.astimezone(UTC).replace(tzinfo=None)


@dataclass
class CycleResult:
    """What one collection cycle produced."""

    frame: pd.DataFrame
    errors: dict[str, str]
    cpu_seconds: float
    wall_seconds: float


class CycleRunner:
    """Runs collectors concurrently, each under a deadline, and never raises.

    The runner owns a small thread pool for its lifetime; use it as a context manager
    or call ``close``. A collector that overruns its deadline is reported down for that
    cycle; its thread is left to finish on its own (probes carry their own timeouts, so
    this is the last line of defence, not the normal path).
    """

    def __init__(
        self,
        collectors: Sequence[Collector],
        host: str,
        timeout: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.collectors = list(collectors)
        self.host = host
        self.timeout = timeout
        self.clock = clock
        self._pool = ThreadPoolExecutor(
            max_workers=max(2, min(16, len(self.collectors))), thread_name_prefix="collect"
        )
        self._running: dict[str, Future[list[Sample]]] = {}

    def __enter__(self) -> CycleRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run_once(self) -> CycleResult:
        now = self.clock()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        samples: list[Sample] = []
        errors: dict[str, str] = {}
        futures: dict[str, Future[list[Sample]]] = {}
        for collector in self.collectors:
            previous = self._running.get(collector.name)
            if previous is not None and not previous.done():
                # Still stuck from an earlier cycle: don't pile up threads behind it.
                errors[collector.name] = "still running from a previous cycle"
                continue
            futures[collector.name] = self._pool.submit(collector.collect)
        self._running.update(futures)
        deadline = time.monotonic() + self.timeout
        for name, future in futures.items():
            try:
                samples.extend(future.result(timeout=max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                errors[name] = f"timed out after {self.timeout:g}s"
            except Exception as exc:  # a collector bug must not kill the loop
                errors[name] = f"{type(exc).__name__}: {exc}"
        for name in (c.name for c in self.collectors):
            up = 0.0 if name in errors else 1.0
            samples.append(Sample("autofix_collector_up", up, {"collector": name}))
        for name, reason in errors.items():
            log.warning("collector %s failed: %s", name, reason)
        frame = samples_to_frame(samples, self.host, now)
        return CycleResult(
            frame=frame,
            errors=errors,
            cpu_seconds=time.process_time() - cpu0,
            wall_seconds=time.perf_counter() - wall0,
        )
