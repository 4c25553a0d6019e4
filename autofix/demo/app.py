"""The tiny news app of the demo: one web worker of a news site, run under supervisord.

``python -m autofix.demo.app PROGRAM --port N --dsn DSN --redis URL --logs DIR`` serves:

- ``GET /`` and ``GET /article/N``: a page built from PostgreSQL (``articles``), cached
  in Redis for a few seconds (``page:*``), with the visitor's session kept in Redis
  (``session:*``); every request appends a line to ``DIR/access-PROGRAM.log``;
- ``GET /health``: 200 ``{"status": "ok"}``, or 503 naming each failing dependency —
  ``{"status": "unhealthy", "failing": ["postgres"], "errors": {...}}`` — so a
  dependency-aware loop can tell a worker whose database is down from a hung worker
  (which answers nothing at all).

A page whose dependency fails is a 503 naming it as well: what users see. Signals: TERM
drains (stops accepting, finishes in-flight requests within ``--drain`` seconds) and
exits; HUP rotates the access log (rename, then gzip in the background, as logrotate's
``postrotate`` would have it); USR1 starts a memory leak (the demo's injected fault),
which ends the worker like the kernel's OOM killer once its resident memory passes
``--memory-budget``.

With ``--log-capacity`` the log directory has a quota instead of a filesystem of its
own: a write that would go past it fails as ENOSPC would.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gzip
import json
import os
import shutil
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: What the app calls itself in PostgreSQL (``pg_stat_activity.application_name``).
APPLICATION_NAME = "news-web"
#: Resident memory at which a worker dies, as the OOM killer would end it.
MEMORY_BUDGET = 300e6
#: The leak: 8 MiB/s, from 13 % of the budget to all of it in about 30 s (half an hour on
#: the demo's ×60 clock).
_LEAK_CHUNK = 4 * 2**20
_LEAK_TICK = 0.5


class DependencyError(Exception):
    """A dependency failed; ``name`` is what /health and the error page report."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


def dir_bytes(root: Path) -> int:
    """Bytes of the regular files below ``root`` (not following links)."""
    total = 0
    for path, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(path, name)).st_size
    return total


class AccessLog:
    """The worker's access log in the (capacity-limited) log directory."""

    def __init__(self, root: Path, program: str, capacity: float | None) -> None:
        self.root = root
        self.path = root / f"access-{program}.log"
        self.capacity = capacity
        self._lock = threading.Lock()
        self._used = 0
        self._measured = 0.0
        self.full = False

    def write(self, line: str) -> None:
        data = (line + "\n").encode()
        with self._lock:
            try:
                if self.capacity is not None and self._used_now() + len(data) > self.capacity:
                    raise OSError(errno.ENOSPC, "No space left on device (quota)")
                with open(self.path, "ab") as handle:
                    handle.write(data)
                self._used += len(data)
                self.full = False
            except OSError as exc:
                self.full = exc.errno == errno.ENOSPC
                raise DependencyError("logs", f"cannot write {self.path.name}: {exc}") from None

    def _used_now(self) -> int:
        # Measuring the directory on every request would cost more than the request.
        now = time.monotonic()
        if now - self._measured > 0.5:
            self._used, self._measured = dir_bytes(self.root), now
        return self._used

    def rotate(self) -> None:
        """Rename the log, then gzip the renamed file and remove it (in the background)."""
        with self._lock:
            if not self.path.exists():
                return
            rotated = self.path.with_name(f"{self.path.name}.{time.time():.0f}")
            os.rename(self.path, rotated)
            self._measured = 0.0
        threading.Thread(target=_gzip_away, args=(rotated,), daemon=True).start()


def _gzip_away(path: Path) -> None:
    with contextlib.suppress(OSError):
        with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        path.unlink()


class NewsApp:
    """What one worker knows: its dependencies and its state."""

    def __init__(self, args: argparse.Namespace) -> None:
        import redis

        self.program = args.program
        self.dsn = Path(args.dsn_file).read_text(encoding="utf-8").strip()
        self.redis = redis.Redis.from_url(
            args.redis, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self.log = AccessLog(Path(args.logs), args.program, args.log_capacity)
        self.memory_budget = args.memory_budget
        self.leak: list[bytearray] = []
        self.leaking = threading.Event()

    # -- dependencies ------------------------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        # A connection per request, as a small app without a pool does: when the role's
        # connections are used up, this is where users feel it.
        try:
            with psycopg.connect(
                self.dsn, connect_timeout=2, application_name=APPLICATION_NAME
            ) as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise DependencyError("postgres", " ".join(str(exc).split())) from None

    def cache(self, call: str, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return getattr(self.redis, call)(*args, **kwargs)
        except redis.RedisError as exc:
            raise DependencyError("redis", " ".join(str(exc).split())) from None

    # -- pages -------------------------------------------------------------------------

    def page(self, path: str, session: str) -> bytes:
        self.cache("set", f"session:{session}", path, ex=300)
        key = "page:front" if path == "/" else f"page:article:{path.rsplit('/', 1)[-1]}"
        cached = self.cache("get", key)
        if cached is not None:
            return bytes(cached)
        if path == "/":
            rows = self.query("SELECT id, title FROM articles ORDER BY published_at DESC LIMIT 10")
            body = "\n".join(f"<li><a href='/article/{i}'>{t}</a></li>" for i, t in rows)
        else:
            number = int(path.rsplit("/", 1)[-1])
            rows = self.query("SELECT title, body FROM articles WHERE id = %s", (number,))
            if not rows:
                raise LookupError(path)
            body = f"<h1>{rows[0][0]}</h1><p>{rows[0][1]}</p>"
        page = f"<html><body>{body}</body></html>".encode()
        self.cache("set", key, page, ex=3)
        return page

    def health(self) -> tuple[int, dict[str, Any]]:
        errors: dict[str, str] = {}
        try:
            self.query("SELECT 1")
        except DependencyError as exc:
            errors[exc.name] = exc.detail
        try:
            self.cache("set", f"health:{self.program}", "1", px=2000)
        except DependencyError as exc:
            errors[exc.name] = exc.detail
        if self.log.full:
            errors["logs"] = f"{self.log.root}: no space left"
        if errors:
            return 503, {"status": "unhealthy", "failing": sorted(errors), "errors": errors}
        return 200, {"status": "ok", "pid": os.getpid()}

    # -- the injected memory leak ----------------------------------------------------------

    def grow(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            if self.leaking.is_set():
                chunk = bytearray(_LEAK_CHUNK)
                chunk[::4096] = b"\x01" * len(chunk[::4096])  # touch every page: resident
                self.leak.append(chunk)
                if me.memory_info().rss > self.memory_budget:
                    # What the OOM killer would do; supervisord starts a fresh worker.
                    os._exit(137)
            time.sleep(_LEAK_TICK)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: NewsApp

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that gave up (a probe's timeout) is not the server's problem


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        session = self.headers.get("X-Session", "anonymous")[:64]
        status, body, kind = 200, b"", "text/html"
        try:
            if path == "/health":
                status, doc = app.health()
                body, kind = json.dumps(doc).encode(), "application/json"
            elif path == "/" or path.startswith("/article/"):
                body = app.page(path, session)
                app.log.write(
                    f"127.0.0.1 - {session} [{time.strftime('%d/%b/%Y:%H:%M:%S %z')}] "
                    f'"GET {path} HTTP/1.0" 200 {len(body)} "-" "news-demo"'
                )
            else:
                status, body = 404, b"not found"
        except (LookupError, ValueError):
            status, body = 404, b"not found"
        except DependencyError as exc:
            status, kind = 503, "application/json"
            body = json.dumps({"status": "unavailable", "failing": [exc.name]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # the access log is written above, to the log directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m autofix.demo.app", description=__doc__)
    parser.add_argument("program", help="supervisord program name of this worker")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn-file", required=True, help="file holding the app's PostgreSQL DSN")
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    parser.add_argument("--logs", required=True, help="log directory")
    parser.add_argument("--log-capacity", type=float, default=None, help="quota in bytes")
    parser.add_argument("--memory-budget", type=float, default=MEMORY_BUDGET, help="RSS that kills")
    parser.add_argument("--drain", type=float, default=2.5, help="seconds to drain on TERM")
    args = parser.parse_args(argv)

    # Listen first: a health check that arrives while the app still imports its clients
    # waits in the backlog instead of being refused (supervisord calls it RUNNING by now).
    server = _Server(("127.0.0.1", args.port), _Handler)
    app = NewsApp(args)
    server.app = app
    stop = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        stop.set()

    def on_hup(signum: int, frame: Any) -> None:
        threading.Thread(target=app.log.rotate, daemon=True).start()

    def on_usr1(signum: int, frame: Any) -> None:
        app.leaking.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGUSR1, on_usr1)
    threading.Thread(target=app.grow, daemon=True, name="leak").start()
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    serving.start()
    while not stop.wait(0.5):
        pass
    # Drain: take no new connections, let the ones in flight finish, then go.
    server.shutdown()
    server.server_close()
    time.sleep(args.drain)
    app.redis.close()


if __name__ == "__main__":
    main()
