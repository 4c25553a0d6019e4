"""The CLI side: which commands go to the service that owns the store, and sending them.

``run(root, args)`` is called by ``autofix.cli.main`` before anything else. It returns
None — run the command here — for ``--help``, ``--version``, completion, a command line
with a usage error (the local run prints it exactly as always) and the commands that
need no store (``LOCAL``). Otherwise it looks for the store's owner:

- ``AUTOFIX_URL`` set: the command goes to that service's ``POST /api/v1/cli`` with
  ``AUTOFIX_TOKEN`` (a viewer token runs the reads in ``READS`` only);
- a live owner record beside the store: the command goes to its control socket;
- no record, or a stale one: None, and the command opens the store itself.

Only when the owner is alive but cannot be reached does the CLI say so — one line naming
the PID and what to do — and exit 1. The client's terminal (width, colours, TTY), its
working directory and ``AUTOFIX_DRY_RUN`` travel with the command; everything else runs
with the service's settings.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from autofix.control import owner as _owner

#: Commands that never touch the store: always run where they are typed.
LOCAL = frozenset(
    {
        ("serve",),
        ("forecast",),
        ("backtest",),
        ("train",),
        ("actions",),
        ("anomaly", "score"),
        ("scenarios", "generate"),
        ("models", "list"),
        ("notify", "test"),
        ("config", "show"),
        ("config", "check"),
        ("config", "schema"),
    }
)
#: Commands a viewer token may run over HTTP: they read, write nothing.
READS = frozenset(
    {
        ("status",),
        ("jobs",),
        ("kpi",),
        ("series",),
        ("fix", "list"),
        ("fix", "show"),
        ("maintenance", "list"),
        ("silence", "list"),
    }
)
#: Seconds without a frame (output or keep-alive) after which the service counts as hung.
SILENCE = 30.0
#: Options that print something and exit, handled by the local process.
_LOCAL_FLAGS = frozenset({"--help", "--version", "--install-completion", "--show-completion"})


def command_path(root: Any, args: Sequence[str]) -> tuple[tuple[str, ...], Path | None] | None:
    """The command named by ``args`` (e.g. ``("fix", "approve")``) and ``--config``; None
    for a usage error. Parses exactly as the run will (Typer's own parser), calls nothing."""
    try:
        ctx = root.make_context("autofix", list(args))
        config = ctx.params.get("config")
        path: list[str] = []
        command = root
        # A group keeps the rest of the line in _protected_args (Typer's vendored Click).
        while hasattr(command, "resolve_command") and ctx._protected_args:
            rest = [*ctx._protected_args, *ctx.args]
            name, command, rest = command.resolve_command(ctx, rest)
            if command is None or name is None:
                return None
            path.append(name)
            ctx = command.make_context(name, rest, parent=ctx)
        if hasattr(command, "resolve_command"):
            return None  # a group without a command: its help, printed locally
    except Exception:  # a usage error: the local run prints it as always
        return None
    return tuple(path), Path(config) if config is not None else None


def _terminal(stderr: bool) -> dict[str, Any]:
    from rich.console import Console

    console = Console(stderr=stderr)
    return {
        "tty": console.is_terminal,
        "width": console.width,
        "color": console.color_system,
        "no_color": console.no_color,
    }


def request(args: Sequence[str], dry_run: bool) -> dict[str, Any]:
    """The request sent for ``args``: the line, where and how it was typed."""
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = "/"
    return {
        "argv": list(args),
        "cwd": cwd,
        "out": _terminal(stderr=False),
        "err": _terminal(stderr=True),
        "dry_run": dry_run,
    }


def replay(lines: Iterable[bytes | str]) -> int:
    """Write the service's frames to this process's stdout and stderr; the exit code."""
    for raw in lines:
        if not raw:
            continue
        try:
            frame = json.loads(raw)
        except ValueError:
            continue
        if "o" in frame:
            sys.stdout.write(frame["o"])
            sys.stdout.flush()
        if "e" in frame:
            sys.stderr.write(frame["e"])
            sys.stderr.flush()
        if "x" in frame:
            return int(frame["x"])
    sys.stderr.write("autofix: error: the service stopped before the command finished\n")
    return 1


def _fail(message: str) -> int:
    sys.stderr.write(f"autofix: error: {message}\n")
    return 1


def via_socket(found: _owner.Owner, db_path: Path, body: dict[str, Any]) -> int:
    """Send the request to the owner's control socket; its exit code."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        try:
            sock.connect(found.socket)
        except PermissionError:
            return _fail(
                f"{db_path} is served by autofix serve (PID {found.pid}) of another user; run "
                "this as that user, or through its API (AUTOFIX_URL and AUTOFIX_TOKEN)"
            )
        except OSError as exc:
            return _fail(
                f"{db_path} is owned by autofix serve (PID {found.pid}), but its control "
                f"socket {found.socket} does not answer ({exc.strerror or exc}); wait for it "
                "to finish starting, or restart it (systemctl restart autofix)"
            )
        # A command may run for minutes; the service sends a keep-alive every few seconds.
        sock.settimeout(SILENCE)
        sock.sendall((json.dumps(body) + "\n").encode())
        try:
            with sock.makefile("rb") as answers:
                return replay(answers)
        except TimeoutError:
            return _fail(
                f"autofix serve (PID {found.pid}) accepted the command but has not answered "
                f"for {SILENCE:.0f} s; it may be hung: check `systemctl status autofix` and its "
                "log, restart it if needed"
            )
    finally:
        sock.close()


def via_http(url: str, token: str | None, body: dict[str, Any]) -> int:
    """Send the request to ``URL/api/v1/cli``; its exit code."""
    import httpx

    if not token:
        return _fail("AUTOFIX_URL is set but AUTOFIX_TOKEN is not: the API needs a token")
    body = {**body, "cwd": None}  # this host's directories mean nothing there
    headers = {"Authorization": f"Bearer {token}"}
    endpoint = url.rstrip("/") + "/api/v1/cli"
    try:
        with httpx.stream(
            "POST", endpoint, json=body, headers=headers, timeout=httpx.Timeout(10, read=None)
        ) as response:
            if response.status_code != 200:
                response.read()
                try:
                    detail = response.json().get("detail")
                except ValueError:
                    detail = response.text[:200]
                return _fail(f"{endpoint}: {response.status_code}: {detail}")
            return replay(response.iter_lines())
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach the autofix service at {url}: {exc}")


def run(root: Any, args: Sequence[str]) -> int | None:
    """Carry out ``args`` through the service that owns the store: its exit code; None when
    the command runs in this process."""
    if not args or any(a in _LOCAL_FLAGS for a in args):
        return None
    found = command_path(root, args)
    if found is None:
        return None
    path, config_file = found
    if path in LOCAL or not path:
        return None
    from autofix.config import load_settings
    from autofix.errors import ConfigError

    try:
        current = load_settings(config_file)
    except ConfigError:
        return None  # the local run reports it, one line, exit 2
    if current.url:
        token = current.token.get_secret_value() if current.token is not None else None
        return via_http(current.url, token, request(args, current.dry_run))
    owner = _owner.read(current.db_path)
    if owner is None or not owner.alive() or owner.pid == os.getpid():
        return None
    return via_socket(owner, current.db_path, request(args, current.dry_run))


def _serving(pid: int) -> bool:
    """Whether process ``pid`` is an ``autofix serve`` (from its command line)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in argv and any(part.endswith(b"autofix") for part in argv[:3])


def after_lock(root: Any, args: Sequence[str], message: str, wait: float = 30.0) -> int | None:
    """The store was locked when this command opened it: when the holder is an
    ``autofix serve`` still starting up, wait for its owner record (up to ``wait`` s) and
    hand the command to it. None: the holder is something else (the error stands).

    Safe to repeat: a command that could not open the store has written nothing to it."""
    import re
    import time

    from autofix.config import load_settings

    found = re.search(r"PID (\d+)", message)
    if found is None or not _serving(int(found.group(1))):
        return None
    plan = command_path(root, args)
    if plan is None:
        return None
    current = load_settings(plan[1])
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        owner = _owner.read(current.db_path)
        if owner is not None and owner.alive() and owner.pid == int(found.group(1)):
            return via_socket(owner, current.db_path, request(args, current.dry_run))
        if not _serving(int(found.group(1))):
            return None
        time.sleep(0.2)
    return None


__all__ = ["LOCAL", "READS", "after_lock", "command_path", "replay", "request", "run"]
