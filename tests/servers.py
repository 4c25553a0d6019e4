"""Real servers on loopback for the test suite: PostgreSQL and a small HTTP server.

Fixtures in ``tests/conftest.py`` start them once per session. Nothing here touches the
network beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- PostgreSQL -------------------------------------------------------------------


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL binaries on this machine."""


def find_postgres_bin() -> Path:
    """Directory holding initdb and postgres: PATH first, then Debian's layout."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    raise PostgresUnavailableError(
        "PostgreSQL not found: install it (e.g. apt-get install postgresql) or put "
        "initdb and postgres on PATH"
    )


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway server; ``dsn`` logs in as the superuser with a password."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    socket_dir: Path

    @property
    def dsn(self) -> str:
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={self.dbname}"
        )


def _run_as() -> tuple[int, int] | None:
    """Who runs postgres: None when we are not root, else an unprivileged uid/gid.

    PostgreSQL refuses to run as root. The ``postgres`` account is the natural choice;
    ``nobody`` works too because everything lives in a directory we hand over to it.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    raise PostgresUnavailableError("running as root and no 'postgres' or 'nobody' user to drop to")


def _chown_tree(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    os.chown(path, *owner)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), *owner)


@contextlib.contextmanager
def postgres_server(
    startup_timeout: float = 30.0, settings: dict[str, str] | None = None
) -> Iterator[PostgresServer]:
    """initdb into a fresh temp dir, start postgres on a free loopback port, stop after.

    ``settings`` are extra server settings (``-c name=value``), e.g. a small
    ``max_connections``.

    The temp dir is made with ``tempfile.mkdtemp`` under the system temp dir (not
    pytest's tmp_path, whose parents are private to root and so closed to postgres).
    """
    bindir = find_postgres_bin()
    owner = _run_as()
    base = Path(tempfile.mkdtemp(prefix="autofix-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        password = secrets.token_hex(12)
        user = "autofix"
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n", encoding="ascii")
        data, sockets, logfile = base / "data", base / "sock", base / "postgres.log"
        sockets.mkdir()
        _chown_tree(base, owner)
        # As root, drop to the owner and shed root's supplementary groups too.
        uid, gid = owner if owner is not None else (None, None)
        groups: list[int] | None = [] if owner is not None else None
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "HOME": str(base)}
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            capture_output=True,
            env=env,
            cwd=base,
            check=False,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.decode(errors='replace')}")
        last_error = ""
        for _attempt in range(3):  # the free port can be taken in between; try another
            port = free_port()
            with open(logfile, "ab") as log:
                proc = subprocess.Popen(
                    [
                        str(bindir / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(port),
                        "-k",
                        str(sockets),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        "-c",
                        "fsync=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "synchronous_commit=off",
                        *(a for k, v in (settings or {}).items() for a in ("-c", f"{k}={v}")),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=base,
                    user=uid,
                    group=gid,
                    extra_groups=groups,
                )
            server = PostgresServer("127.0.0.1", port, user, password, "postgres", sockets)
            last_error = _wait_ready(proc, server.dsn, startup_timeout)
            if not last_error:
                yield server
                return
            _stop(proc)
            proc = None
        log_text = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
        raise RuntimeError(f"postgres did not start: {last_error}\n{log_text}")
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen[bytes], dsn: str, timeout: float) -> str:
    """Empty string once a connection works, else why it never did."""
    deadline = time.monotonic() + timeout
    error = "timed out"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"postgres exited with {proc.returncode}"
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return ""
        except psycopg.OperationalError as exc:
            error = str(exc)
        time.sleep(0.1)
    return error


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT is postgres' "fast" shutdown: disconnect clients, no waiting on them.
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- HTTP ---------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    release: threading.Event

    def handle_error(self, request: object, client_address: object) -> None:
        # A probe that timed out has hung up on the slow endpoint; that is the point.
        return


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/ok":
            self._reply(200)
        elif url.path == "/error":
            self._reply(500)
        elif url.path == "/slow":
            seconds = float(parse_qs(url.query).get("s", ["5"])[0])
            # Interruptible, so stopping the server never waits for a sleeping handler.
            self.server.release.wait(seconds)
            self._reply(200)
        else:
            self._reply(404)

    def _reply(self, status: int) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@dataclass(frozen=True)
class HttpServer:
    """Base URL of the test server: ``/ok`` 200, ``/error`` 500, ``/slow?s=N`` sleeps N s."""

    url: str
    port: int


@contextlib.contextmanager
def http_server() -> Iterator[HttpServer]:
    """A threaded HTTP server on a free loopback port, stopped and closed after."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        port = int(server.server_address[1])
        yield HttpServer(url=f"http://127.0.0.1:{port}", port=port)
    finally:
        server.release.set()
        server.shutdown()
        thread.join()
        server.server_close()


# --- Redis, supervisord and a stateful JSON endpoint (fix executor tests) ------------


class ServerUnavailableError(RuntimeError):
    """A server binary the tests need is not installed."""


def _which(name: str, hint: str) -> str:
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None
    )
    if found is None:
        raise ServerUnavailableError(f"{name} not found: install it (e.g. apt-get install {hint})")
    return found


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class RedisServer:
    """A throwaway redis-server on loopback: no persistence, database 0 at ``url``."""

    url: str
    port: int


@contextlib.contextmanager
def redis_server(startup_timeout: float = 15.0) -> Iterator[RedisServer]:
    """redis-server on a free 127.0.0.1 port in a temp dir (``--save ''``), stopped after."""
    import redis

    binary = _which("redis-server", "redis-server")
    base = Path(tempfile.mkdtemp(prefix="autofix-redis-"))
    port = free_port()
    with open(base / "redis.log", "ab") as log:
        proc = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(base),
                "--daemonize", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited: {(base / 'redis.log').read_text()[-1000:]}"
                )
            try:
                with redis.Redis.from_url(url, socket_timeout=1) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer PING") from None
                time.sleep(0.05)
        yield RedisServer(url, port)
    finally:
        _terminate(proc)
        shutil.rmtree(base, ignore_errors=True)


_DEMO_SERVICE = """
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, pidfile = int(sys.argv[1]), sys.argv[2]
reloads = 0

def on_hup(signum, frame):
    global reloads
    reloads += 1

signal.signal(signal.SIGHUP, on_hup)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": os.getpid(), "reloads": reloads}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        return

server = HTTPServer(("127.0.0.1", port), Handler)
with open(pidfile, "w") as f:
    f.write(f"{os.getpid()}\\n")
server.serve_forever()
"""


@dataclass(frozen=True)
class Supervisor:
    """supervisord with one program ``demo``: an HTTP server with ``/health`` (JSON pid and
    SIGHUP reload count) that writes ``pidfile``."""

    url: str
    program: str
    health_url: str
    pidfile: Path


@contextlib.contextmanager
def supervisord_server(
    startup_timeout: float = 20.0,
    *,
    program: str = "demo",
    source: str = _DEMO_SERVICE,
    stopwaitsecs: int = 5,
) -> Iterator[Supervisor]:
    """A real supervisord (Debian's) on a free loopback port, config in a temp dir.

    It runs one ``program``: the Python ``source`` (``demo.py`` by default), started as
    ``python <program>.py PORT PIDFILE``.
    """
    import sys
    import xmlrpc.client

    binary = _which("supervisord", "supervisor")
    base = Path(tempfile.mkdtemp(prefix="autofix-supervisor-"))
    rpc_port, demo_port = free_port(), free_port()
    (base / f"{program}.py").write_text(source)
    pidfile = base / f"{program}.pid"
    (base / "supervisord.conf").write_text(
        f"""[inet_http_server]
port = 127.0.0.1:{rpc_port}

[supervisord]
nodaemon = true
logfile = {base}/supervisord.log
pidfile = {base}/supervisord.pid
childlogdir = {base}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:{program}]
command = {sys.executable} {base}/{program}.py {demo_port} {pidfile}
autostart = true
autorestart = true
startsecs = 1
stopwaitsecs = {stopwaitsecs}
stopsignal = TERM
"""
    )
    proc = subprocess.Popen(
        [binary, "-n", "-c", str(base / "supervisord.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=base,
    )
    url = f"http://127.0.0.1:{rpc_port}/RPC2"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                log = base / "supervisord.log"
                raise RuntimeError(
                    f"supervisord exited: {log.read_text()[-1000:] if log.exists() else ''}"
                )
            # Not up yet (refused, or a fault while it starts): poll again below.
            with (
                contextlib.suppress(OSError, xmlrpc.client.Fault),
                xmlrpc.client.ServerProxy(url) as rpc,
            ):
                if rpc.supervisor.getProcessInfo(program)["statename"] == "RUNNING":
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"supervisord did not start the {program} program")
            time.sleep(0.1)
        yield Supervisor(url, program, f"http://127.0.0.1:{demo_port}/health", pidfile)
    finally:
        _terminate(proc, timeout=15)
        shutil.rmtree(base, ignore_errors=True)


class _StateHandler(BaseHTTPRequestHandler):
    server: _StateServer

    def do_GET(self) -> None:
        self._reply(200, self.server.state)

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        import json

        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.state.update(body)
        self._reply(200, self.server.state)

    def do_POST(self) -> None:
        self.server.state["reloads"] = int(self.server.state.get("reloads", 0)) + 1
        self._reply(200, self.server.state)

    def _reply(self, status: int, data: dict[str, object]) -> None:
        import json

        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class _StateServer(ThreadingHTTPServer):
    daemon_threads = True
    state: dict[str, object]


@dataclass
class StateServer:
    """A JSON control endpoint: GET returns ``state``, PUT merges a JSON body, POST counts
    ``reloads`` (a load-balancer weight / config-reload stand-in)."""

    url: str
    state: dict[str, object]


@contextlib.contextmanager
def state_server() -> Iterator[StateServer]:
    server = _StateServer(("127.0.0.1", 0), _StateHandler)
    server.state = {"weight": 10, "reloads": 0}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield StateServer(f"http://127.0.0.1:{server.server_address[1]}/pool/web-1", server.state)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
