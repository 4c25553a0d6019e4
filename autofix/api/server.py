"""Serve the API with uvicorn on a thread of this process, beside the scheduled jobs.

DuckDB lets one process write the store, so ``autofix serve`` keeps the API and the jobs
in one process sharing one store. The socket is bound here, on the calling thread, so a
port already in use is one clear error instead of a dying thread.

The interpreter's thread switch interval is left alone: what would compete with the
requests for the GIL does not run on this interpreter (model fits, scoring and training go
to worker processes, ``autofix.workers``; the forecasts table and /metrics are rebuilt off
the request path).

>>> server = ApiServer(app, "127.0.0.1", 0)  # doctest: +SKIP
>>> server.start(); server.url; server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from autofix.errors import AutofixError


class ApiServer:
    """uvicorn running ``app`` on its own thread; ``stop`` finishes in-flight requests."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        graceful: float = 10.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.graceful = graceful
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

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
        config = uvicorn.Config(
            self.app,
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

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, finish what is in flight (up to ``graceful`` s), join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.graceful + 5 if timeout is None else timeout)
