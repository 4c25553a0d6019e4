"""Log lines: one JSON object per line for journald and ELK, or readable lines on a terminal.

``configure(level, fmt)`` installs one handler on the root logger whose formatter is
structlog's ``ProcessorFormatter``, so every ``logging`` call in autofix and in the
libraries it uses comes out the same way. Every line has ``time`` (ISO 8601, UTC),
``level``, ``logger`` and ``event``, plus its context: what the code passes as
``extra={...}`` (``fix_id``, ``decision_id``, ``rule``, ``target``, ``gate`` …) and what
``context(...)`` bound for the current thread (``job`` while a job runs).

``AUTOFIX_LOG_FORMAT``: ``json``, ``console`` or ``auto`` (console on a TTY, else JSON).
JSON lines escape every control character, so untrusted text (labels, file names)
can neither break a line nor reach a terminal as markup; the console renderer escapes
them too.

Library chatter (APScheduler's "Running job …", httpx's request lines, uvicorn's access
log) is demoted from INFO to DEBUG: it shows with ``AUTOFIX_LOG_LEVEL=DEBUG`` only. So are
the audit's event lines (fix states, approvals, escalations) when ``events`` is False: a
command that prints its own result (``autofix fix run``) does not echo them.

>>> import io, json, logging
>>> stream = io.StringIO()
>>> configure("INFO", "json", stream=stream)
>>> logging.getLogger("autofix.demo").info("fix state", extra={"fix_id": 7})
>>> line = json.loads(stream.getvalue())
>>> (line["event"], line["fix_id"], line["level"], line["logger"])
('fix state', 7, 'info', 'autofix.demo')
>>> reset()
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TextIO, cast

import structlog

Format = Literal["auto", "json", "console"]

#: Loggers whose INFO lines are routine chatter: shown at DEBUG only.
CHATTY = ("apscheduler", "httpx", "httpcore", "uvicorn", "mlflow", "alembic", "pagerduty")
#: Loggers of the event lines (decisions, fix states, escalations) a service writes.
EVENTS = ("autofix.audit", "autofix.jobs")
#: Extras some libraries attach that are not context (uvicorn's coloured copy of a line).
_DROP = ("color_message",)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """autofix's handler: found and replaced by the next ``configure``."""


class _Demote(logging.Filter):
    """INFO from a chatty library becomes DEBUG, and is dropped below ``level``."""

    def __init__(self, level: int, events: bool = True) -> None:
        super().__init__()
        self.level = level
        self.events = events

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and (
            record.name.split(".")[0] in CHATTY or (not self.events and record.name in EVENTS)
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.level


def _drop_noise(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _DROP:
        event.pop(key, None)
    return event


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), value)
    return value


def _escape_controls(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """For the console: a label holding ESC [ … cannot restyle or rewrite the terminal."""
    for key, value in event.items():
        event[key] = _escape(value)
    return event


def _renderer(fmt: Literal["json", "console"], colors: bool) -> list[Any]:
    if fmt == "json":
        return [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    return [
        _escape_controls,
        structlog.dev.ConsoleRenderer(
            colors=colors, exception_formatter=_plain_traceback, timestamp_key="time"
        ),
    ]


def _plain_traceback(sio: TextIO, exc_info: Any) -> None:
    # The standard library's formatting: no third-party pretty printer, no colours.
    import traceback

    sio.write("\n" + "".join(traceback.format_exception(*exc_info)).rstrip("\n"))


def resolve_format(fmt: Format, stream: TextIO) -> Literal["json", "console"]:
    """``auto`` is console on a terminal and JSON anywhere else (journald, a file, a pipe)."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "console" if callable(isatty) and isatty() else "json"


def configure(
    level: str = "INFO",
    fmt: Format = "auto",
    *,
    stream: TextIO | None = None,
    events: bool = True,
) -> None:
    """Send every log record of the process through one structured handler on ``stream``.

    Idempotent: a second call replaces the handler of the first (the CLI configures once
    per command). Handlers others installed (pytest's capture) are left alone.
    """
    out = stream if stream is not None else sys.stderr
    threshold = logging.getLevelNamesMapping()[level]
    handler = _Handler(out)
    _dress(handler, out, threshold, fmt, events)
    root = logging.getLogger()
    reset()
    root.addHandler(handler)
    # Chatty libraries must still create their INFO records for the filter to demote.
    root.setLevel(min(threshold, logging.INFO))


def file_handler(path: Path, level: str = "INFO", fmt: Format = "json") -> logging.Handler:
    """A handler writing the service's lines to ``path`` as ``configure`` would (JSON
    lines, library chatter demoted), for a process whose own output is elsewhere (the
    demo keeps the service's log beside its report). The caller adds and closes it."""
    handler = logging.FileHandler(path, encoding="utf-8")
    stream = cast("TextIO", handler.stream)  # opened now: no delay
    _dress(handler, stream, logging.getLevelNamesMapping()[level], fmt, True)
    return handler


def _dress(
    handler: logging.Handler, out: TextIO, threshold: int, fmt: Format, events: bool
) -> None:
    chosen = resolve_format(fmt, out)
    colors = chosen == "console" and resolve_format("auto", out) == "console"  # a real TTY
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_noise,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderer(chosen, colors),
        ],
    )
    handler.setFormatter(formatter)
    handler.addFilter(_Demote(threshold, events))


def reset() -> None:
    """Remove the handler ``configure`` installed (tests, and before re-configuring)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
        handler.close()


@contextmanager
def context(**values: Any) -> Iterator[None]:
    """Bind ``values`` (``job="collect"``) to every line this thread logs inside the block."""
    with structlog.contextvars.bound_contextvars(**values):
        yield


__all__ = [
    "CHATTY",
    "EVENTS",
    "Format",
    "configure",
    "context",
    "file_handler",
    "reset",
    "resolve_format",
]
