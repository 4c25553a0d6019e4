"""The demo's seeded schedule: faults to fix, benign events to leave alone, and injectors.

A schedule is a list of ``Event`` (what, when, which targets a right fix acts on) each
with an ``Injector`` that makes it happen on a running ``Stack`` for real:

- ``disk-fill`` (fault, predictable): a restore of last week's unrotated logs (mtimes
  kept) fills the log directory towards 100 %; right fix: compress them on ``logs``
  (``files.rotate_logs``) before it is full;
- ``memory-leak`` (fault, predictable): a worker leaks 8 MiB/s (SIGUSR1) until its
  memory budget kills it (as the OOM killer would); right fix: restart it before;
- ``hung-worker`` (fault): a worker is SIGSTOPped — it accepts connections and answers
  nothing; right fix: restart that worker;
- ``db-connections`` (fault): a batch job of the app leaks idle sessions until the app's
  role has no connection left; right fix: end them on ``news-db``
  (``postgres.terminate_idle``), not a restart of the workers answering 503;
- ``cache-bloat`` (fault): oversized ``page:*`` entries fill Redis to ``maxmemory`` (no
  eviction) and writes fail; right fix: delete them on ``cache`` (``redis.delete_keys``);
- ``log-rotation``, ``backup-burst`` (a backup writes a third of the log directory, then
  deletes itself), ``traffic-spike`` (eight times the load for a few seconds),
  ``planned-restart`` (an operator's ``supervisorctl restart`` of one worker): benign,
  no fix is right.

An injector's ``cleared`` is the ground truth of recovery (the fault's condition as the
demo knows it, not as autofix sees it); ``operator_fix`` is what the on-call human does
when nobody fixed it within the manual response time; ``cleanup`` leaves nothing behind.
``schedule(seed, short)`` is deterministic for a seed: which worker leaks, hangs or is
restarted, and small offsets of the start times.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import psutil

from autofix.demo.app import MEMORY_BUDGET
from autofix.demo.stack import MiB, Stack

Kind = Literal["fault", "benign"]


class Injector(Protocol):
    """Makes one event happen on the stack, and says when its fault is gone."""

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        """Start the event (may block until it is under way; returns early on ``stop``)."""

    def cleared(self, stack: Stack) -> bool:
        """Ground truth: the fault's condition has gone (benign events: they are over)."""

    def exhausted(self, stack: Stack) -> bool:
        """The resource the fault uses up has run out (what prevention must avoid)."""

    def operator_fix(self, stack: Stack) -> None:
        """What an on-call human does when it is still there after the response time."""

    def cleanup(self, stack: Stack) -> None:
        """Undo whatever is left of the event (the demo's end, a Ctrl-C)."""


@dataclass(frozen=True)
class Event:
    """One scheduled event. ``targets``: the demo targets a right fix acts on (faults)."""

    name: str
    kind: Kind
    delay: float  # seconds to wait after the previous event and the schedule's gap
    title: str
    targets: tuple[str, ...] = ()  # benign: what a fix mistaking it for a fault would hit
    predictable: bool = False
    duration: float = 0.0  # benign: how long it lasts after it starts
    injector: Injector = field(default=None, compare=False, repr=False)  # type: ignore[assignment]


class _Base:
    def inject(self, stack: Stack, stop: threading.Event) -> None:
        raise NotImplementedError

    def cleared(self, stack: Stack) -> bool:
        return True

    def exhausted(self, stack: Stack) -> bool:
        return False

    def operator_fix(self, stack: Stack) -> None:
        return None

    def cleanup(self, stack: Stack) -> None:
        return None


# -- faults ----------------------------------------------------------------------------------


class DiskFill(_Base):
    """Last week's logs restored without rotation, filling the log directory."""

    def __init__(self, seed: int, fast_until: float = 0.9, fast: float = 8 * MiB,
                 slow: float = 0.25 * MiB) -> None:  # fmt: skip
        self.rng = random.Random(seed)  # noqa: S311  (a schedule, not a secret)
        self.fast_until, self.fast, self.slow = fast_until, fast, slow
        self.peak = 0.0
        self.full = False
        self.left: float = math.inf  # bytes the restore has still to write
        self._thread: threading.Thread | None = None

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        self._thread = threading.Thread(
            target=self._fill, args=(stack, stop), name="disk-fill", daemon=True
        )
        self._thread.start()

    def _fill(self, stack: Stack, stop: threading.Event) -> None:
        folder = stack.logs / "restored"
        folder.mkdir(exist_ok=True)
        line = (
            '10.0.{a}.{b} - - [{day:02d}/Jan/2026:{h:02d}:{m:02d}:00 +0000] "GET /article/{n} '
            'HTTP/1.1" 200 {size} "-" "Mozilla/5.0 (X11; Linux x86_64)"\n'
        )
        block = "".join(
            line.format(
                a=i % 250,
                b=i % 199,
                day=1 + i % 28,
                h=i % 24,
                m=i % 60,
                n=i % 500,
                size=3000 + i % 4000,
            )
            for i in range(8000)
        ).encode()  # about 1 MiB of access-log lines: compresses about ten to one
        capacity = stack.log_capacity
        used = stack.log_usage()
        # A restore of a fixed size: enough to fill the directory as it stands now.
        planned = capacity - used + 2 * len(block)
        fast_for = max(0.0, self.fast_until * capacity - used)
        written, index, now = 0, 0, time.time()
        self.left = planned
        while written < planned and not stop.is_set():
            usage = stack.log_usage()
            self.peak = max(self.peak, usage / capacity)
            if stack.quota is not None and usage + len(block) > capacity:
                self.full = True  # the quota is the capacity: the app's writes fail now
                return
            path = folder / f"app-2026-01-{1 + index // 24:02d}-{index % 24:02d}.log"
            try:
                with open(path, "wb") as handle:
                    handle.write(block)
            except OSError:
                self.full = True  # ENOSPC on the tmpfs
                with contextlib.suppress(OSError):
                    path.unlink()
                return
            stamp = now - (2 + self.rng.random() * 5) * 86400  # rsync -t keeps mtimes
            os.utime(path, (stamp, stamp))
            index += 1
            written += len(block)
            self.left = max(0.0, planned - written)
            stop.wait(len(block) / (self.fast if written < fast_for else self.slow))

    def cleared(self, stack: Stack) -> bool:
        # Over once what is left of the restore can no longer take the disk past 75 %:
        # space was freed (early, or after the fast part) or the restore was stopped.
        used = stack.log_usage()
        self.peak = max(self.peak, used / stack.log_capacity)
        writing = self._thread is not None and self._thread.is_alive()
        left = self.left if writing else 0
        return used + left < 0.75 * stack.log_capacity

    def exhausted(self, stack: Stack) -> bool:
        return self.full or self.peak >= 0.995

    def operator_fix(self, stack: Stack) -> None:
        self._stop_filling()
        for path in sorted((stack.logs / "restored").glob("*")):
            with contextlib.suppress(OSError):
                path.unlink()

    def cleanup(self, stack: Stack) -> None:
        self._stop_filling()

    def _stop_filling(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=0)  # the stop event ends it; never wait on it here


class MemoryLeak(_Base):
    """A worker starts leaking (SIGUSR1) until it is restarted or its budget kills it."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.pid = 0
        self.rss = 0.0

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        assert stack.supervisor is not None
        self.pid = stack.supervisor.pid(stack.worker(self.worker).program)
        os.kill(self.pid, signal.SIGUSR1)

    def cleared(self, stack: Stack) -> bool:
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
            self.rss = max(self.rss, float(proc.memory_info().rss))
            return False
        except psutil.NoSuchProcess:
            return True

    def exhausted(self, stack: Stack) -> bool:
        # The budget killed it (what the OOM killer does), rather than a restart.
        return self.rss >= 0.9 * MEMORY_BUDGET and self.cleared(stack)

    def operator_fix(self, stack: Stack) -> None:
        assert stack.supervisor is not None
        stack.supervisor.ctl("restart", stack.worker(self.worker).program)


class HungWorker(_Base):
    """A worker is SIGSTOPped: its socket accepts, nothing answers."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.pid = 0

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        assert stack.supervisor is not None
        self.pid = stack.supervisor.pid(stack.worker(self.worker).program)
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5  # the signal is delivered asynchronously
        while time.monotonic() < deadline and not stop.is_set():
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(self.pid).status() == psutil.STATUS_STOPPED:
                    return
            time.sleep(0.02)

    def cleared(self, stack: Stack) -> bool:
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_STOPPED
        except psutil.NoSuchProcess:
            return True

    def operator_fix(self, stack: Stack) -> None:
        assert stack.supervisor is not None
        stack.supervisor.ctl("restart", stack.worker(self.worker).program)

    def cleanup(self, stack: Stack) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.pid:
                os.kill(self.pid, signal.SIGCONT)


class IdleSessions(_Base):
    """A batch job of the app leaks idle sessions until the app's role has none left."""

    def __init__(self) -> None:
        self.sessions: list[Any] = []
        self.lock = threading.Lock()

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        import psycopg

        deadline = time.monotonic() + 10
        refused = 0
        while not stop.is_set() and time.monotonic() < deadline and refused < 3:
            try:
                conn = psycopg.connect(
                    stack.app_dsn, application_name="news-web", connect_timeout=2
                )
            except psycopg.OperationalError:
                refused += 1  # the role's limit is reached (a request may hold one briefly)
                time.sleep(0.05)
                continue
            with self.lock:
                self.sessions.append(conn)

    def cleared(self, stack: Stack) -> bool:
        import psycopg

        try:
            psycopg.connect(stack.app_dsn, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def exhausted(self, stack: Stack) -> bool:
        return True  # the fault is the exhaustion itself

    def operator_fix(self, stack: Stack) -> None:
        import psycopg

        assert stack.postgres is not None
        with psycopg.connect(stack.postgres.admin_dsn, autocommit=True) as conn:
            conn.execute(
                """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                   WHERE usename = 'news' AND state = 'idle'
                     AND application_name = 'news-web' AND state_change < now() - interval '1s'"""
            )

    def cleanup(self, stack: Stack) -> None:
        with self.lock:
            sessions, self.sessions = self.sessions, []
        for conn in sessions:
            with contextlib.suppress(Exception):
                conn.close()


class CacheBloat(_Base):
    """A cache warm-up job fills Redis to ``maxmemory`` (no eviction) with oversized
    ``page:*`` renders, and keeps topping it up while its entries are there."""

    def __init__(self, value_size: int = 512 * 1024, lasts: float = 120.0) -> None:
        self.value_size, self.lasts = value_size, lasts
        self.full = False
        self._index = 0

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        assert stack.redis is not None
        self._fill(stack.redis.url, (self.value_size, 16 * 1024, 512), stop)
        self.full = True
        threading.Thread(
            target=self._top_up, args=(stack.redis.url, stop), name="cache-bloat", daemon=True
        ).start()

    def _fill(self, url: str, sizes: tuple[int, ...], stop: threading.Event) -> None:
        import redis

        # Redis refuses a write only while it is over maxmemory: after one big entry is
        # refused, smaller ones still fit. Fill with ever smaller entries until even a
        # small one is refused: then the app's session writes fail too.
        with redis.Redis.from_url(url, socket_timeout=2) as client:
            for size in sizes:
                value = b"x" * size
                while not stop.is_set() and self._index < 1_000_000:
                    try:
                        client.set(f"page:render:{self._index:07d}", value)
                    except redis.ResponseError:  # OOM command not allowed
                        break
                    self._index += 1

    def _top_up(self, url: str, stop: threading.Event) -> None:
        import redis

        # Closing a connection frees its buffers, and expiring entries free some more:
        # the job takes that room again, for as long as its entries are there.
        deadline = time.monotonic() + self.lasts
        while not stop.wait(0.2) and time.monotonic() < deadline:
            try:
                with redis.Redis.from_url(url, socket_timeout=2) as client:
                    if not client.exists(f"page:render:{0:07d}"):
                        return  # its entries were deleted: the job gave up
                self._fill(url, (512,), stop)
            except redis.RedisError:
                return

    def cleared(self, stack: Stack) -> bool:
        import redis

        assert stack.redis is not None
        with redis.Redis.from_url(stack.redis.url, socket_timeout=2) as client:
            used = int(client.info("memory")["used_memory"])
            try:
                client.set("demo:probe", b"1", px=1000)
            except redis.ResponseError:
                return False
        return used < 0.7 * stack.redis.maxmemory

    def exhausted(self, stack: Stack) -> bool:
        return self.full

    def operator_fix(self, stack: Stack) -> None:
        import redis

        assert stack.redis is not None
        with redis.Redis.from_url(stack.redis.url, socket_timeout=5) as client:
            keys = list(client.scan_iter("page:render:*", count=500))
            for start in range(0, len(keys), 200):
                client.delete(*keys[start : start + 200])


# -- benign events ---------------------------------------------------------------------------


class LogRotation(_Base):
    """The app rotates its own access logs (logrotate's postrotate HUP)."""

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        assert stack.supervisor is not None
        for worker in stack.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stack.supervisor.pid(worker.program), signal.SIGHUP)


class BackupBurst(_Base):
    """A backup written into the log directory, deleted once shipped."""

    def __init__(self, share: float, hold: float) -> None:
        self.share, self.hold = share, hold

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        path = stack.logs / f"backup-{time.time():.0f}.sql.partial"
        chunk = os.urandom(MiB)  # a compressed dump: random-looking bytes
        try:
            with open(path, "wb") as handle:
                for _ in range(int(self.share * stack.log_capacity / MiB)):
                    if stop.is_set():
                        break
                    handle.write(chunk)
                    handle.flush()
                    stop.wait(0.05)
            stop.wait(self.hold)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()


class TrafficSpike(_Base):
    """Eight times the load for a few seconds."""

    def __init__(self, rate: float, duration: float, seed: int) -> None:
        self.rate, self.duration, self.seed = rate, duration, seed

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        stack.spawn_users(self.rate, self.duration, self.seed)


class PlannedRestart(_Base):
    """An operator restarts one worker with supervisorctl (a deploy, a config change)."""

    def __init__(self, worker: str) -> None:
        self.worker = worker

    def inject(self, stack: Stack, stop: threading.Event) -> None:
        assert stack.supervisor is not None
        stack.supervisor.ctl("restart", stack.worker(self.worker).program)


# -- the schedule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The events in order, and the clock they were written for."""

    events: list[Event]
    speedup: float  # one real second stands for this many
    warmup: float  # seconds of normal operation before the first event
    gap: float  # least quiet time between two events
    manual_response: float  # seconds before the on-call human fixes what is still broken
    seed: int
    short: bool

    def __iter__(self) -> Any:
        return iter(self.events)


def schedule(seed: int = 0, *, short: bool = False, workers: tuple[str, ...] = ("web-1", "web-2"),
             load_rate: float = 5.0) -> Schedule:  # fmt: skip
    """The demo's schedule for ``seed``: five faults and four benign events.

    The clock runs 60 times faster than real time — a second stands for a minute, so
    the human response time (AUTOFIX_KPI_MANUAL_MTTR's 30 minutes) is 30 s; ``short``
    (for the test suite) leaves less quiet time before and between the events and
    shortens the benign ones.
    """
    rng = random.Random(seed)  # noqa: S311  (a schedule, not a secret)
    speedup = 60.0
    warmup = 6.0 if short else 10.0
    gap = 1.5 if short else 3.0
    manual = 30 * 60 / speedup
    leaker, hung = rng.sample(list(workers), 2) if len(workers) > 1 else (workers[0],) * 2
    # Early, and not the worker that will hang: what the gates remember of earlier fixes
    # on a worker (cooldown, flapping) would decide the planned restart's outcome.
    restarted = leaker

    def jitter() -> float:
        return round(rng.uniform(0, 1.0), 2)

    spike = 4.0 if short else 8.0
    plan: list[Event] = [
        Event("traffic-spike", "benign", jitter(), "8x traffic for a few seconds",
              targets=tuple(workers), duration=spike,
              injector=TrafficSpike(8 * load_rate, spike, seed + 1)),
        Event("planned-restart", "benign", jitter(), f"supervisorctl restart {restarted}",
              targets=(restarted,), duration=3.0, injector=PlannedRestart(restarted)),
        Event("disk-fill", "fault", jitter(), "old logs restored: the log disk fills",
              targets=("logs",), predictable=True, injector=DiskFill(seed)),
        Event("log-rotation", "benign", jitter(), "the app rotates its access logs",
              targets=("logs",), duration=2.0, injector=LogRotation()),
        Event("memory-leak", "fault", jitter(), f"{leaker} leaks memory",
              targets=(leaker,), predictable=True, injector=MemoryLeak(leaker)),
        Event("backup-burst", "benign", jitter(), "a backup fills a third of the log disk",
              targets=("logs", "tmp"), duration=4.0 if short else 6.0,
              injector=BackupBurst(0.33, 3.0 if short else 5.0)),
        Event("hung-worker", "fault", jitter(), f"{hung} hangs (SIGSTOP)",
              targets=(hung,), injector=HungWorker(hung)),
        Event("db-connections", "fault", jitter(), "idle sessions use up the app's DB connections",
              targets=("news-db",), injector=IdleSessions()),
        Event("cache-bloat", "fault", jitter(), "oversized cache entries fill Redis",
              targets=("cache",), injector=CacheBloat()),
    ]  # fmt: skip
    return Schedule(plan, speedup, warmup, gap, manual, seed, short)


__all__ = [
    "BackupBurst",
    "CacheBloat",
    "DiskFill",
    "Event",
    "HungWorker",
    "IdleSessions",
    "Injector",
    "LogRotation",
    "MemoryLeak",
    "PlannedRestart",
    "Schedule",
    "TrafficSpike",
    "schedule",
]
