"""The demo's news-delivery stack, started in one temporary directory and removed after.

Two workers of the news app (``autofix.demo.app``) under supervisord, a PostgreSQL with
the ``news`` database (the app's role has a connection limit), a Redis with a memory
limit and no eviction, a small capacity-limited log directory (a 64 MiB tmpfs when we
may mount one, else a plain directory with a quota the app and the injectors respect),
and the users (``autofix.demo.traffic``: a steady load and a prober).

    >>> with Stack(StackOptions()) as stack:          # doctest: +SKIP
    ...     stack.workers[0].health_url
    'http://127.0.0.1:41234/health'

``stop`` (also on leaving the ``with``) ends every process it started and removes the
directory, whatever state the demo left things in; it is safe to call twice.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from autofix.demo.app import dir_bytes
from autofix.demo.servers import (
    Postgres,
    Process,
    Program,
    Redis,
    Servers,
    StackError,
    Supervisor,
    free_port,
    start_postgres,
    start_redis,
    start_supervisord,
)

log = logging.getLogger(__name__)

MiB = 2**20


@dataclass(frozen=True)
class StackOptions:
    """What the stack looks like; the defaults are the demo's."""

    workers: int = 2
    servers: Servers = "auto"
    log_capacity: int = 64 * MiB
    redis_maxmemory: int = 32 * MiB
    app_connection_limit: int = 12
    load_rate: float = 5.0
    seed: int = 0
    program: str = "news-web"  # supervisord program names: news-web-1, news-web-2, …
    parent: Path | None = None  # where the temporary directory goes (default: the system's)
    mount: bool = True  # try a real tmpfs for the logs when running as root


@dataclass(frozen=True)
class Worker:
    """One web worker: its target name in the demo pipeline and its supervisord program."""

    name: str
    program: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/health"

    @property
    def cmdline(self) -> str:
        """A regular expression over the worker's argv that matches it and no other."""
        return rf"autofix\.demo\.app {re.escape(self.program)}( |$)"


@dataclass
class Stack:
    """The running stack. Build with ``Stack(options)``; ``start`` / ``stop`` or ``with``."""

    options: StackOptions
    base: Path = field(init=False)
    logs: Path = field(init=False)
    tmp: Path = field(init=False)
    quarantine: Path = field(init=False)
    probes: Path = field(init=False)
    mounted: bool = False
    postgres: Postgres | None = None
    redis: Redis | None = None
    supervisor: Supervisor | None = None
    workers: list[Worker] = field(default_factory=list)
    app_password: str = field(default_factory=lambda: secrets.token_hex(12))
    processes: list[Process] = field(default_factory=list)
    extra_dirs: list[Path] = field(default_factory=list)
    _stopped: bool = False

    def __post_init__(self) -> None:
        parent = self.options.parent
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        self.base = Path(tempfile.mkdtemp(prefix="autofix-demo-", dir=parent))
        # Traversable by the unprivileged user postgres runs as; nothing here is listable.
        self.base.chmod(0o711)
        self.logs = self.base / "logs"
        self.tmp = self.base / "tmp"
        self.quarantine = self.base / "quarantine"
        self.probes = self.base / "probes.jsonl"

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the rest of the demo reads -------------------------------------------------

    @property
    def log_capacity(self) -> int:
        return self.options.log_capacity

    @property
    def quota(self) -> float | None:
        """The log directory's quota when it is not a filesystem of its own."""
        return None if self.mounted else float(self.options.log_capacity)

    def log_usage(self) -> int:
        """Bytes used in the log directory (its filesystem's, when it is a tmpfs)."""
        if self.mounted:
            st = os.statvfs(self.logs)
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        return dir_bytes(self.logs)

    @property
    def app_dsn(self) -> str:
        assert self.postgres is not None
        return self.postgres.dsn("news", self.app_password)

    def worker(self, name: str) -> Worker:
        return next(w for w in self.workers if w.name == name)

    def pids(self) -> dict[str, int]:
        """Every process the stack started that runs now: servers, workers, users."""
        out = {p.name: p.pid for p in self.processes if p.running()}
        if self.supervisor is not None and self.supervisor.process.running():
            for worker in self.workers:
                with contextlib.suppress(Exception):
                    pid = self.supervisor.pid(worker.program)
                    if pid:
                        out[worker.program] = pid
        return out

    def describe(self) -> list[str]:
        pg, rd = self.postgres, self.redis
        assert pg is not None
        assert rd is not None
        assert self.supervisor is not None
        logs = (
            f"a {self.log_capacity // MiB} MiB tmpfs"
            if self.mounted
            else f"a directory with a {self.log_capacity // MiB} MiB quota (no tmpfs: not root)"
        )
        return [
            f"PostgreSQL {pg.version} ({pg.source}) on :{pg.port}, "
            f"Redis {rd.version} ({rd.source}) on :{rd.port}, "
            f"supervisord {self.supervisor.version} (PyPI) on :{self.supervisor.port}",
            f"{len(self.workers)} news-app workers "
            + ", ".join(f"{w.name} :{w.port}" for w in self.workers)
            + f"; logs on {logs}; {self.options.load_rate:g} requests/s of load",
        ]

    def spawn_users(self, rate: float, duration: float, seed: int) -> Process:
        """Extra users for ``duration`` seconds (a traffic spike); stopped by ``stop`` too."""
        argv = [sys.executable, "-m", "autofix.demo.traffic", "--rate", str(rate),
                "--duration", str(duration), "--seed", str(seed)]  # fmt: skip
        for worker in self.workers:
            argv += ["--url", worker.url]
        process = Process("users", self._popen(argv, self.base / "spike.log"), grace=5)
        self.processes.append(process)
        return process

    # -- start -----------------------------------------------------------------------------

    def start(self) -> Stack:
        opts = self.options
        started = time.monotonic()
        self._log_dir()
        self.tmp.mkdir()
        self.quarantine.mkdir()
        self.postgres = start_postgres(self._postgres_dir(), opts.servers)
        self.processes.append(self.postgres.process)
        self._news_database()
        self.redis = start_redis(self.base / "redis", opts.servers, opts.redis_maxmemory)
        self.processes.append(self.redis.process)
        self._seed_logs()
        self.workers = [
            Worker(f"web-{i}", f"{opts.program}-{i}", free_port())
            for i in range(1, opts.workers + 1)
        ]
        programs = [Program(w.program, self._app_argv(w)) for w in self.workers]
        self.supervisor = start_supervisord(self.base / "supervisor", programs)
        self.processes.append(self.supervisor.process)
        for worker in self.workers:
            self._wait_healthy(worker)
        argv = [sys.executable, "-m", "autofix.demo.traffic", "--rate", str(opts.load_rate),
                "--probe", str(self.probes), "--seed", str(opts.seed)]  # fmt: skip
        for worker in self.workers:
            argv += ["--url", worker.url]
        self.processes.append(Process("users", self._popen(argv, self.base / "users.log"), grace=5))
        log.info("demo stack up in %.1fs in %s", time.monotonic() - started, self.base)
        return self

    def _postgres_dir(self) -> Path:
        # As root, postgres runs as an unprivileged user who must be able to reach its
        # directory: a parent chosen with --tmp (pytest's, say) may be closed to it.
        if os.geteuid() != 0:
            return self.base / "postgres"
        path = Path(tempfile.mkdtemp(prefix="autofix-demo-pg-"))
        self.extra_dirs.append(path)
        return path

    def dirs(self) -> list[Path]:
        """Every directory the stack made (all removed by ``stop``)."""
        return [self.base, *self.extra_dirs]

    def _popen(self, argv: list[str], logfile: Path) -> subprocess.Popen[bytes]:
        with open(logfile, "ab") as out:
            return subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.base,
            )  # fmt: skip

    def _log_dir(self) -> None:
        self.logs.mkdir()
        if not (self.options.mount and os.geteuid() == 0):
            return
        mount = shutil.which("mount")
        if mount is None:
            return
        done = subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={self.options.log_capacity},mode=0755",
             "tmpfs", str(self.logs)],
            capture_output=True, check=False,
        )  # fmt: skip
        self.mounted = done.returncode == 0
        if not self.mounted:
            log.info("no tmpfs for the logs (%s): a directory with a quota instead",
                     done.stderr.decode(errors="replace").strip())  # fmt: skip

    def _news_database(self) -> None:
        import psycopg

        assert self.postgres is not None
        with psycopg.connect(self.postgres.dsn(dbname="postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE news")
            conn.execute(
                f"CREATE ROLE news LOGIN PASSWORD '{self.app_password}' "
                f"CONNECTION LIMIT {int(self.options.app_connection_limit)}"
            )
        rng = random.Random(self.options.seed)  # noqa: S311  (sample data)
        words = [
            "election",
            "storm",
            "market",
            "football",
            "science",
            "city",
            "river",
            "budget",
            "festival",
            "court",
        ]
        with psycopg.connect(self.postgres.admin_dsn, autocommit=True) as conn:
            conn.execute(
                """CREATE TABLE articles (id serial PRIMARY KEY, title text NOT NULL,
                   body text NOT NULL, published_at timestamptz NOT NULL)"""
            )
            conn.execute("CREATE INDEX ON articles (published_at)")
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO articles (title, body, published_at) "
                    "VALUES (%s, %s, now() - %s * interval '1 minute')",
                    [
                        (
                            " ".join(rng.choice(words) for _ in range(4)).capitalize(),
                            " ".join(rng.choice(words) for _ in range(120)),
                            i,
                        )
                        for i in range(40)
                    ],
                )
            conn.execute("GRANT SELECT ON articles TO news")

    def _seed_logs(self) -> None:
        """Last week's rotated archives and today's logs: the directory a third full."""
        now = time.time()
        rng = random.Random(self.options.seed)  # noqa: S311  (sample data)
        for day in range(1, 7):
            archive = self.logs / f"access.log.{day}.gz"
            with gzip.open(archive, "wb", compresslevel=1) as handle:
                handle.write(rng.randbytes(int(1.5 * MiB)))
            os.utime(archive, (now - day * 86400, now - day * 86400))
        block = "".join(
            f"127.0.0.1 - user-{i % 40} [01/Jan/2026:00:{i % 60:02d}:00 +0000] "
            f'"GET /article/{i % 40} HTTP/1.0" 200 {4000 + i} "-" "news-demo"\n'
            for i in range(600)
        ).encode()
        for i in range(1, self.options.workers + 1):
            with open(self.logs / f"access-{self.options.program}-{i}.log", "wb") as handle:
                for _ in range(6 * MiB // len(block)):
                    handle.write(block)

    def _app_argv(self, worker: Worker) -> list[str]:
        # The DSN holds the app's password: in a file only we can read, not in argv.
        dsn = self.base / "supervisor" / "app.dsn"
        if not dsn.exists():
            dsn.parent.mkdir(parents=True, exist_ok=True)
            dsn.touch(mode=0o600)
            dsn.write_text(self.app_dsn, encoding="utf-8")
        assert self.redis is not None
        argv = [sys.executable, "-m", "autofix.demo.app", worker.program,
                "--port", str(worker.port), "--dsn-file", str(dsn),
                "--redis", self.redis.url, "--logs", str(self.logs)]  # fmt: skip
        if self.quota is not None:
            argv += ["--log-capacity", str(self.quota)]
        return argv

    def _wait_healthy(self, worker: Worker, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                reply = httpx.get(worker.health_url, timeout=2)
                if reply.status_code == 200:
                    return
                last = f"HTTP {reply.status_code}: {reply.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise StackError(f"worker {worker.name} is not healthy after {timeout:g}s: {last}")

    # -- stop ------------------------------------------------------------------------------

    @staticmethod
    def _stop_one(process: Process) -> None:
        try:
            process.stop()
        except Exception as exc:  # keep stopping the others
            log.error("stopping %s (pid %d): %s", process.name, process.pid, exc)

    def stop(self) -> None:
        """End everything (users, supervisord and its workers, Redis, PostgreSQL), then
        unmount the tmpfs and remove the directory. Never raises; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        # Users first (nobody left to see the shutdown), then the rest at once: each
        # server ends on its own signal, and nothing is left to serve.
        users = [p for p in self.processes if p.name == "users"]
        rest = [p for p in self.processes if p.name != "users"]
        for process in users:
            self._stop_one(process)
        threads = [threading.Thread(target=self._stop_one, args=(p,)) for p in rest]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        umount = shutil.which("umount")
        if self.mounted and umount is not None:
            done = subprocess.run(
                [umount, str(self.logs)], capture_output=True, check=False, timeout=30
            )
            if done.returncode != 0:  # still busy: detach it now, it goes when released
                subprocess.run([umount, "-l", str(self.logs)], capture_output=True, check=False)
        for path in self.dirs():
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                log.error("could not remove %s", path)


__all__ = ["MiB", "Stack", "StackOptions", "Worker"]
