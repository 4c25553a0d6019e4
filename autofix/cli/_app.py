"""The `autofix` Typer app and what every command module shares.

Commands live in sibling modules that register on ``app``; this module holds the
settings state, the consoles and the store openers.

A command runs either in the ``autofix`` process itself or, when ``autofix serve`` owns
the store, inside that service on behalf of the client (``autofix.control``). The
difference is hidden here: ``settings()``, ``writer()``, ``reader()``, ``live_service()``,
``actor()`` and the consoles ``out`` / ``err`` answer for the session being served (a
context variable), so command code is the same in both places.

Nothing heavy is imported at module level (no pandas, DuckDB, pydantic-settings, httpx):
``autofix --help`` and ``autofix CMD --help`` import only Typer, rich and these modules.
"""

from __future__ import annotations

import getpass
import json
import math
import re
import sys
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from autofix import __version__
from autofix.control.session import current as current_session
from autofix.errors import InputError

if TYPE_CHECKING:
    from rich.console import Console

    from autofix.config import Settings
    from autofix.store import MetricStore

app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich's help renderer takes ~0.5 s to import
    name="autofix",
    help="Predictive auto-remediation: collect metrics, forecast exhaustion, fix safely.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


class _ConsoleProxy:
    """``out`` / ``err``: the client's console inside a session, else this process's own.

    Module-level names that every print site already uses; what they print to is decided
    per call, so two clients served at once never share a terminal width or a stream.
    """

    def __init__(self, stderr: bool) -> None:
        object.__setattr__(self, "_stderr", stderr)
        object.__setattr__(self, "_own", None)

    def _target(self) -> Console:
        session = current_session()
        if session is not None:
            chosen: Console = session.err if self._stderr else session.out
            return chosen
        own: Console | None = self._own
        if own is None:
            from rich.console import Console

            own = Console(stderr=self._stderr)
            object.__setattr__(self, "_own", own)
        return own

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target(), name, value)

    def __enter__(self) -> Console:
        return self._target().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._target().__exit__(*exc)


out = cast("Console", _ConsoleProxy(stderr=False))
err = cast("Console", _ConsoleProxy(stderr=True))


@dataclass
class _Local:
    """Per-process command state (per request inside the service)."""

    config_file: Path | None = None
    settings: Settings | None = None
    command: str | None = None


_state: ContextVar[_Local | None] = ContextVar("autofix_cli_state", default=None)


def _local() -> _Local:
    found = _state.get()
    if found is None:
        found = _Local()
        _state.set(found)
    return found


#: Commands that run unattended: their log is the record of what autofix decided and did.
#: The others print their own result, so the audit's event lines stay at DEBUG there.
SERVICE_COMMANDS = {"serve", "run"}


def settings() -> Settings:
    """The settings: read once per process (after --config is known), or the service's."""
    session = current_session()
    if session is not None:
        return cast("Settings", session.settings)
    state = _local()
    if state.settings is None:
        from autofix.config import load_settings
        from autofix.logs import configure as configure_logs

        state.settings = load_settings(state.config_file)
        configure_logs(
            state.settings.log_level,
            state.settings.log_format,
            events=state.command in SERVICE_COMMANDS,
        )
    return state.settings


def writer(current: Settings) -> AbstractContextManager[MetricStore]:
    """The store opened for writing (waits AUTOFIX_LOCK_WAIT for another writer); inside
    the service, its live store (left open)."""
    session = current_session()
    if session is not None:
        return nullcontext(session.service.store)
    from autofix.store import MetricStore

    return MetricStore(current.db_path, lock_wait=current.lock_wait.total_seconds())


def reader(current: Settings, snapshot: Path | None = None) -> AbstractContextManager[MetricStore]:
    """The store for reading: an explicit snapshot; the service's live store; the file; or
    the automatic snapshot."""
    from autofix.store import MetricStore

    if snapshot is not None:
        return MetricStore.open_snapshot(snapshot)
    session = current_session()
    if session is not None:
        return nullcontext(session.service.store)
    return MetricStore.open_reader(current.db_path, current.snapshot_dir)


def live_service() -> Any | None:
    """The service carrying out this command (``autofix.jobs.Service``), or None."""
    session = current_session()
    return None if session is None else session.service


def actor() -> str:
    """Who the audit log records for this command: ``cli:<user>`` (the client's Unix user
    inside the service, from the socket's peer credentials) or ``api:<token name>``."""
    session = current_session()
    if session is not None:
        return str(session.actor)
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def stopped() -> bool:
    """Whether the client of this command went away (long commands stop early)."""
    session = current_session()
    return session is not None and session.cancelled.is_set()


def client_path(value: str) -> Path:
    """A path typed on the command line (the Typer ``parser=`` of every path parameter):
    relative to the directory it was typed in, also when the service carries the command
    out; refused when the command came over HTTP from another host."""
    path = Path(value)
    session = current_session()
    if session is None:
        return path
    if session.remote:
        raise typer.BadParameter(
            f"{value}: paths are not sent over HTTP; run this command on the service's host"
        )
    return path if path.is_absolute() else session.cwd / path


# -- JSON --------------------------------------------------------------------------------

_NAIVE_TS = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(\+00:00|Z)?$")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 UTC with ``Z``: the one timestamp style of every ``--json``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec) + "Z"


def plain(value: Any) -> Any:
    """``value`` made JSON-ready: timestamps (objects, or text that is one whole naive-UTC
    timestamp — the store's convention) in ISO 8601 UTC with ``Z``, NaN as null, numpy
    and pandas scalars as numbers, durations in seconds."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        if value != value:  # NaT
            return None
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        if _NAIVE_TS.match(value):
            try:
                return iso_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                return value
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / pandas scalars
        try:
            return plain(value.item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        return plain(value.to_pydatetime())
    try:
        if value != value:  # NaN-like (NaT)
            return None
    except (TypeError, ValueError):  # pd.NA has no truth value
        return None
    return str(value)


def print_json(data: Any) -> None:
    """One JSON document on one line of stdout (timestamps as ISO 8601 UTC with ``Z``)."""
    session = current_session()
    stream = session.stdout if session is not None else sys.stdout
    stream.write(json.dumps(plain(data)) + "\n")


def words(summary: Any) -> str:
    """A job's summary as words and units, not a Python repr.

    >>> words({"predictions": 12, "fixes": {"succeeded": 1}, "unhealthy": []})
    'predictions 12; fixes: 1 succeeded; unhealthy: none'
    """
    parts = []
    for key, value in dict(summary).items():
        name = str(key).replace("_", " ")
        if isinstance(value, dict):
            inner = [
                f"{v} {str(k).replace('_', ' ')}" if isinstance(v, int | float) else f"{k}: {v}"
                for k, v in value.items()
            ]
            parts.append(f"{name}: {', '.join(inner) or 'none'}")
        elif isinstance(value, list | tuple | set):
            parts.append(f"{name}: {', '.join(str(v) for v in value) or 'none'}")
        elif value is None:
            parts.append(f"{name}: none")
        elif isinstance(value, bool):
            parts.append(f"{name}: {'yes' if value else 'no'}")
        elif isinstance(value, float):
            parts.append(f"{name} {value:.4g}")
        else:
            parts.append(f"{name} {value}")
    return "; ".join(parts)


def parse_span(flag: str, value: str) -> timedelta:
    """A positive duration option (``--for 2h``), or InputError naming the flag."""
    from autofix.config import parse_duration

    try:
        span = parse_duration(value)
    except ValueError as exc:
        raise InputError(f"{flag}: {exc}") from None
    if span <= timedelta(0):
        raise InputError(f"{flag}: must be positive, not {value!r}")
    return span


def _version(value: bool) -> None:
    if value:
        out.print(f"autofix {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (else AUTOFIX_CONFIG).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    """Predictive auto-remediation for a Linux service fleet."""
    _state.set(_Local(config, None, ctx.invoked_subcommand))
