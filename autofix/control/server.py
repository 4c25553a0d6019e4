"""The service side: carry out a client's command line inside ``autofix serve``.

``ControlServer`` listens on the Unix socket named in the owner record (mode 0600, and
every peer's uid is checked: the service's own user or root), one thread per request.
A request is one JSON line — argv, the client's directory and terminal (width, colours,
whether it is a TTY), whether it asked for a dry run — and the answer is JSON lines:
``{"o": text}`` for stdout, ``{"e": text}`` for stderr, then ``{"x": exit_code}``.

``run_request`` is what both this socket and ``POST /api/v1/cli`` call: it builds the
session (``autofix.control.session``) — the live service, its settings (a dry-run copy
when the client asked for one), consoles writing to the client, the actor — and runs
the same Typer command the ``autofix`` process would have run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pwd
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

from autofix.control.session import Session, current, serving

log = logging.getLogger(__name__)

#: Largest request line accepted (argv of a real command is far smaller).
MAX_REQUEST = 256 * 1024
#: Seconds between keep-alive frames while a command runs (``autofix.control.client``
#: gives up on a service that sends nothing for ``client.SILENCE`` seconds).
KEEPALIVE = 5.0
Send = Callable[[dict[str, Any]], None]


class _ClientStream(io.TextIOBase):
    """A text stream whose writes become frames to the client (``o`` or ``e``)."""

    def __init__(self, send: Send, key: str, tty: bool) -> None:
        self._send, self._key, self._tty = send, key, tty

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # as a real text stream: Click probes with b""
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self._send({self._key: text})
        return len(text)

    def isatty(self) -> bool:
        return self._tty

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout`` / ``sys.stderr`` in the service: a write from a thread
    serving a client goes to that client, any other write to the process's own stream."""

    def __init__(self, own: IO[str], stderr: bool) -> None:
        self.own, self._stderr = own, stderr

    def _target(self) -> IO[str]:
        session = current()
        if session is None:
            return self.own
        return session.stderr if self._stderr else session.stdout

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        if current() is not None:
            raise io.UnsupportedOperation("a client's stream has no file descriptor")
        return self.own.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.own, "encoding", "utf-8") or "utf-8"


@contextlib.contextmanager
def routed_std_streams() -> Iterator[None]:
    """Route ``sys.stdout`` / ``sys.stderr`` per session while the service runs (Typer and
    ``print_json`` write there)."""
    saved = sys.stdout, sys.stderr
    sys.stdout = _Router(saved[0], stderr=False)
    sys.stderr = _Router(saved[1], stderr=True)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _ensure_routed() -> None:
    """Route the std streams if nothing has yet (a process serving only the API): Typer
    and Click write usage errors there, and they belong to the client too."""
    if not isinstance(sys.stdout, _Router):
        sys.stdout = _Router(sys.stdout, stderr=False)
    if not isinstance(sys.stderr, _Router):
        sys.stderr = _Router(sys.stderr, stderr=True)


def _console(stream: IO[str], term: Mapping[str, Any]) -> Any:
    from rich.console import Console

    width = term.get("width")
    color = term.get("color")
    return Console(
        file=stream,
        width=int(width) if isinstance(width, int) and 20 <= width <= 1000 else 80,
        color_system=color if color in ("standard", "256", "truecolor") else None,
        force_terminal=bool(term.get("tty")),
        no_color=bool(term.get("no_color")),
        legacy_windows=False,
        _environ={},  # the service's environment is not the client's terminal
    )


def run_request(
    request: Mapping[str, Any],
    service: Any,
    send: Send,
    *,
    actor: str,
    remote: bool = False,
    cancelled: threading.Event | None = None,
) -> int:
    """Run one client request in a session on ``service``; frames go to ``send``."""
    from autofix.cli import invoke

    argv = request.get("argv")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        send({"e": "autofix: error: bad request: argv must be a list of strings\n"})
        return 2
    cwd = request.get("cwd")
    where = Path(cwd) if isinstance(cwd, str) and cwd.startswith("/") else Path("/")
    terms: dict[str, Mapping[str, Any]] = {}
    for key in ("out", "err"):
        given = request.get(key)
        terms[key] = given if isinstance(given, dict) else {}
    stdout = cast(IO[str], _ClientStream(send, "o", bool(terms["out"].get("tty"))))
    stderr = cast(IO[str], _ClientStream(send, "e", bool(terms["err"].get("tty"))))
    settings = service.settings
    if request.get("dry_run") is True and not settings.dry_run:
        settings = settings.model_copy(update={"dry_run": True})  # only ever safer
    session = Session(
        service=service,
        settings=settings,
        actor=actor,
        cwd=where,
        stdout=stdout,
        stderr=stderr,
        out=_console(stdout, terms["out"]),
        err=_console(stderr, terms["err"]),
        cancelled=cancelled or threading.Event(),
        remote=remote,
    )
    log.debug("control: %s runs %s", actor, argv[:3])
    _ensure_routed()
    with serving(session):
        try:
            return invoke(argv)
        except Exception as exc:  # a bug: the client gets one line, the log the traceback
            log.exception("control: %s failed", " ".join(argv[:3]))
            message = " ".join(str(exc).split()) or type(exc).__name__
            session.err.print(
                f"autofix: error: internal error in the service: {message} (see its log)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            return 1


def _peer(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        pid, uid = _peer(self.connection)
        lock = threading.Lock()
        cancelled = threading.Event()

        def send(frame: dict[str, Any]) -> None:
            if cancelled.is_set():
                return
            data = (json.dumps(frame) + "\n").encode()
            with lock:
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                except OSError:  # the client went away (Ctrl-C): stop talking, tell the command
                    cancelled.set()

        if uid not in {os.getuid(), 0}:
            log.warning("control: refused a client of uid %d (pid %d)", uid, pid)
            send({"e": "autofix: error: this service runs as another user\n", "x": 1})
            return
        line = self.rfile.readline(MAX_REQUEST + 1)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            send({"e": "autofix: error: bad request to the control socket\n", "x": 2})
            return
        done = threading.Event()

        def keepalive() -> None:  # the client tells a busy service from a hung one
            while not done.wait(KEEPALIVE):
                send({"k": 1})

        threading.Thread(target=keepalive, name="autofix-control-keepalive", daemon=True).start()
        try:
            with self.server.tracking(cancelled):
                code = run_request(
                    request,
                    self.server.service,
                    send,
                    actor=f"cli:{_user(uid)}",
                    cancelled=cancelled,
                )
        finally:
            done.set()
        send({"x": code})


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    service: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.active: set[threading.Event] = set()
        self.idle = threading.Condition()

    @contextlib.contextmanager
    def tracking(self, cancelled: threading.Event) -> Iterator[None]:
        with self.idle:
            self.active.add(cancelled)
        try:
            yield
        finally:
            with self.idle:
                self.active.discard(cancelled)
                self.idle.notify_all()

    def drain(self, timeout: float) -> int:
        """Ask running commands to stop; wait up to ``timeout`` s; how many still run."""
        with self.idle:
            for cancelled in self.active:
                cancelled.set()
            self.idle.wait_for(lambda: not self.active, timeout)
            return len(self.active)


class ControlServer:
    """The service's control socket: started once the store is open, stopped before it
    closes."""

    def __init__(self, path: Path, service: Any) -> None:
        self.path = path
        self.service = service
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a service that died (its record is stale)
        old = os.umask(0o177)  # created 0600: no moment where others could connect
        try:
            server = _Server(str(self.path), _Handler, bind_and_activate=True)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        server.service = self.service
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="autofix-control", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """No new requests; running ones are asked to stop and given ``timeout`` seconds
        (the store closes after this)."""
        if self._server is not None:
            self._server.shutdown()
            left = self._server.drain(timeout)
            if left:
                log.warning("control: %d client command(s) still running at shutdown", left)
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


__all__ = ["ControlServer", "routed_std_streams", "run_request"]
