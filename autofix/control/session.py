"""What a command carried out for a client sees: the live service, settings, consoles.

``autofix.cli._app`` consults ``current()``: inside a session its ``settings()``,
``writer()``, ``reader()`` and consoles answer with the service's objects and the
client's terminal, so command code is the same whether it runs in the ``autofix``
process or inside ``autofix serve``. Import-light on purpose (the CLI imports it for
``--help``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class Session:
    """One client request being carried out by the service."""

    #: The live ``autofix.jobs.Service`` (typed Any: no heavy import here).
    service: Any
    #: The settings the command runs with: the service's, or a dry-run copy of them.
    settings: Any
    #: Who the audit log records: ``cli:<unix user>`` or ``api:<token name>``.
    actor: str
    #: The client's working directory: relative paths on its command line mean this.
    cwd: Path
    stdout: IO[str]
    stderr: IO[str]
    #: The client's consoles (its width, colours, whether it is a terminal).
    out: Any
    err: Any
    #: Set when the client went away: long commands (collect --duration) stop early.
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: Over HTTP from another host: paths on the command line are refused.
    remote: bool = False

    @property
    def dry_run(self) -> bool:
        return bool(self.settings.dry_run) and not bool(self.service.settings.dry_run)


_current: ContextVar[Session | None] = ContextVar("autofix_session", default=None)


def current() -> Session | None:
    """The session of the command running in this thread, or None (a local command)."""
    return _current.get()


@contextmanager
def serving(session: Session) -> Iterator[Session]:
    token = _current.set(session)
    try:
        yield session
    finally:
        _current.reset(token)


__all__ = ["Session", "current", "serving"]
