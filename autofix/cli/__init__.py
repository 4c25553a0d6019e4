"""The ``autofix`` command. Thin: parse, call the package, print.

Exit codes: 0 ok, 1 failed, 2 bad usage or bad input. Errors are one line on stderr.
When ``autofix serve`` owns the store, commands that use it are carried out by that
service (``autofix.control``): same output, same exit code.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer

from autofix._gc import freeze_at_exit
from autofix.cli import anomaly as _anomaly  # noqa: F401  (registers its commands)
from autofix.cli import checks as _checks  # noqa: F401  (registers its commands)
from autofix.cli import demo as _demo  # noqa: F401  (registers its commands)
from autofix.cli import fix as _fix  # noqa: F401  (registers its commands)
from autofix.cli import maintenance as _maintenance  # noqa: F401  (registers its commands)
from autofix.cli import metrics as _metrics  # noqa: F401  (registers its commands)
from autofix.cli import models as _models  # noqa: F401
from autofix.cli import notify as _notify  # noqa: F401
from autofix.cli import prometheus as _prometheus  # noqa: F401
from autofix.cli import serve as _serve  # noqa: F401
from autofix.cli import service as _service  # noqa: F401  (registers its commands)

# isort: split
# The operator's run-time switches come last in `--help`, after the service's commands.
from autofix.cli import control as _control  # noqa: F401  (registers its commands)
from autofix.cli._app import app
from autofix.cli._render import error
from autofix.errors import AutofixError, StoreLockedError

__all__ = ["app", "invoke", "main"]


@functools.cache
def _command() -> Any:
    """The Typer app as one command object, built once (the service reuses it per request)."""
    command = typer.main.get_command(app)
    # Typer converts a parameter's value through pydantic (0.2-0.5 s to import). The root's
    # options (--config, the completion flags) and every group's --help are converted on
    # every command line, `autofix CMD --help` too, before the help is printed: convert
    # those here (a path, flags), so `--help` never imports pydantic.
    groups: list[Any] = [command]
    while groups:
        group = groups.pop()
        groups += [c for c in group.commands.values() if hasattr(c, "commands")]
        help_option = group.get_help_option(group.context_class(group))  # built, then cached
        for param in [*(group.params if group is command else []), help_option]:
            setattr(param, "process_value", functools.partial(_root_value, param))  # noqa: B010
    return command


def _root_value(param: Any, ctx: Any, value: Any) -> Any:
    """A root option's value without Typer's pydantic conversion: a path or a flag."""
    if param.name == "config" and value is not None:
        value = Path(value)
    if param.callback is not None:
        value = param.callback(ctx, param, value)
    return value


def invoke(argv: Sequence[str], on_locked: Callable[[str], int | None] | None = None) -> int:
    """Run one command line in this process (or inside the service for a client); the exit
    code. Usage errors are Typer's (exit 2); an AutofixError becomes one line.

    ``on_locked`` is asked first when the store turned out to be locked: a service that was
    still starting when this command looked for it carries the command out after all."""
    try:
        _command()(args=list(argv), prog_name="autofix", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except StoreLockedError as exc:
        forwarded = on_locked(str(exc)) if on_locked is not None else None
        if forwarded is not None:
            return forwarded
        error(exc)
        return exc.exit_code
    except AutofixError as exc:
        error(exc)
        return exc.exit_code
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: through the service that owns the store when one does, else here."""
    from autofix.control import client

    freeze_at_exit()  # a one-shot process: no last walk over what its command imported
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        forwarded = client.run(_command(), args)
        if forwarded is None:
            forwarded = invoke(args, lambda why: client.after_lock(_command(), args, why))
        sys.exit(forwarded)
    except KeyboardInterrupt:
        sys.exit(130)
