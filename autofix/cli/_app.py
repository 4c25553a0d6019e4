"""The `autofix` Typer app and what every command module shares.

Commands live in sibling modules (metrics, and later models, fixes …) that register on
``app``; this module holds the settings state, the consoles and the store openers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from autofix import __version__
from autofix.config import Settings, load_settings
from autofix.logs import configure as configure_logs
from autofix.store import MetricStore

app = typer.Typer(
    name="autofix",
    help="Predictive auto-remediation: collect metrics, forecast exhaustion, fix safely.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console()
err = Console(stderr=True)


class _State:
    config_file: Path | None = None
    settings: Settings | None = None
    command: str | None = None


#: Commands that run unattended: their log is the record of what autofix decided and did.
#: The others print their own result, so the audit's event lines stay at DEBUG there.
SERVICE_COMMANDS = {"serve", "run"}


def settings() -> Settings:
    """The settings, read once per process (after --config is known)."""
    if _State.settings is None:
        _State.settings = load_settings(_State.config_file)
        configure_logs(
            _State.settings.log_level,
            _State.settings.log_format,
            events=_State.command in SERVICE_COMMANDS,
        )
    return _State.settings


def writer(current: Settings) -> MetricStore:
    """The store opened for writing (waits AUTOFIX_LOCK_WAIT for another writer)."""
    return MetricStore(current.db_path, lock_wait=current.lock_wait.total_seconds())


def reader(current: Settings, snapshot: Path | None = None) -> MetricStore:
    """The store for reading: an explicit snapshot, the file, or the automatic snapshot."""
    if snapshot is not None:
        return MetricStore.open_snapshot(snapshot)
    return MetricStore.open_reader(current.db_path, current.snapshot_dir)


def print_json(data: Any) -> None:
    """One JSON document on one line of stdout."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")


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
    _State.config_file = config
    _State.settings = None
    _State.command = ctx.invoked_subcommand
