"""Serve the API with uvicorn beside the scheduled jobs, optionally behind the API front.

DuckDB lets one process write the store, so ``autofix serve`` keeps the app and the jobs
in one process sharing one store. The socket is bound here, on the calling thread, so a
port already in use is one clear error instead of a dying thread.

With ``front=True`` (``autofix serve``, ``autofix demo``) the port is served by the API
front, a process of its own (``autofix.api.front``): the hot read routes are answered
there, on an interpreter the jobs never hold, and everything else is passed to this
process' app on a Unix socket in a private directory. The listening socket stays open
here, so a front that dies is started again on it and no connection waiting in the
backlog is lost. Without a front, uvicorn runs the app on a thread of this process.

The interpreter's thread switch interval is left alone either way.

>>> server = ApiServer(app, "127.0.0.1", 0, front=True)  # doctest: +SKIP
>>> server.start(); server.url; server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from autofix.errors import AutofixError

log = logging.getLogger(__name__)

#: Seconds the front process may take to start (imports on a busy machine).
FRONT_START = 30.0
#: Least seconds between two restarts of a front that keeps dying.
FRONT_RESTART = 5.0


class ApiServer:
    """The app on ``host:port``; ``stop`` finishes in-flight requests."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        graceful: float = 10.0,
        front: bool = False,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.graceful = graceful
        self.front = front
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._dir: Path | None = None
        self._front: subprocess.Popen[bytes] | None = None
        self._front_config: dict[str, Any] = {}
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.front_starts = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def front_pid(self) -> int | None:
        return self._front.pid if self._front is not None else None

    def start(self, timeout: float = 10.0) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=TCP: asyncio sets TCP_NODELAY only on sockets that say so; without it,
        # Nagle and delayed ACKs add 40 ms to every keep-alive request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise AutofixError(
                f"API: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                "set AUTOFIX_API_PORT (0: no API)"
            ) from None
        self.port = sock.getsockname()[1]
        if not self.front:
            self._run_uvicorn(self.app, sock, timeout)
            return
        from autofix.api.front import Feed

        self._listener = sock
        sock.listen(2048)
        self._dir = Path(tempfile.mkdtemp(prefix="autofix-api-"))  # 0700
        path = self._dir / "owner.sock"
        inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        inner.bind(str(path))
        os.chmod(path, 0o600)
        secret = secrets.token_urlsafe(32)
        self._run_uvicorn(Feed(self.app, secret), inner, timeout)
        settings = self.app.state.autofix.settings
        self._front_config = {
            "fd": sock.fileno(),
            "upstream": str(path),
            "secret": secret,
            "tokens": settings.api_tokens.get_secret_value(),
            "metrics_auth": settings.api_metrics_auth,
            "max_body": settings.api_max_body,
            "log_level": settings.log_level,
            "log_format": settings.log_format,
            "graceful": self.graceful,
        }
        try:
            self._spawn_front()
        except AutofixError:
            self.stop()
            raise
        self._watcher = threading.Thread(
            target=self._watch_front, name="autofix-api-front", daemon=True
        )
        self._watcher.start()

    def _run_uvicorn(self, app: Any, sock: socket.socket, timeout: float) -> None:
        config = uvicorn.Config(
            app,
            log_config=None,  # autofix's logging, one line per record
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(self.graceful),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="autofix-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise AutofixError(f"API: the server on {self.url} did not start")
            time.sleep(0.02)

    def _spawn_front(self) -> None:
        assert self._listener is not None
        proc = subprocess.Popen(
            [sys.executable, "-m", "autofix.api.front"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(self._listener.fileno(),),
            # Its own session: a Ctrl-C in the terminal stops the service, and the service
            # stops the front (by closing its stdin), never the two racing each other.
            start_new_session=True,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        self._front = proc
        self.front_starts += 1
        try:  # the tokens go through the pipe, never the command line
            proc.stdin.write(json.dumps(self._front_config).encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: the wait below says so
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            line = b""
            if selector.select(FRONT_START):
                line = proc.stdout.readline()
        if line.strip() != b"ready":
            proc.kill()
            proc.wait()
            _close_pipes(proc)
            raise AutofixError(
                f"API: the front process for {self.url} did not start "
                f"(exit code {proc.returncode}; its error is logged above)"
            )

    def _watch_front(self) -> None:
        """Start the front again when it dies while the service runs."""
        while not self._stopping.is_set():
            proc = self._front
            if proc is None:
                return
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            _close_pipes(proc)
            log.error("API: the front process %d exited with code %s; starting it again",
                      proc.pid, code)  # fmt: skip
            self._stopping.wait(max(0.0, FRONT_RESTART - (time.monotonic() - started)))
            if self._stopping.is_set():
                return
            try:
                self._spawn_front()
            except AutofixError as exc:
                log.error("%s", exc)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, finish what is in flight (up to ``graceful`` s), join the thread."""
        self._stopping.set()
        wait = self.graceful + 5 if timeout is None else timeout
        proc = self._front
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()  # the front finishes in-flight requests and exits
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _close_pipes(proc)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(wait)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(wait)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()
