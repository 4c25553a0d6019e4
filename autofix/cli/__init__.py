"""The ``autofix`` command. Thin: parse, call the package, print.

Exit codes: 0 ok, 1 failed, 2 bad usage or bad input. Errors are one line on stderr.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer

from autofix.cli import anomaly as _anomaly  # noqa: F401  (registers its commands)
from autofix.cli import demo as _demo  # noqa: F401  (registers its commands)
from autofix.cli import fix as _fix  # noqa: F401  (registers its commands)
from autofix.cli import maintenance as _maintenance  # noqa: F401  (registers its commands)
from autofix.cli import metrics as _metrics  # noqa: F401  (registers its commands)
from autofix.cli import models as _models  # noqa: F401
from autofix.cli import notify as _notify  # noqa: F401
from autofix.cli import prometheus as _prometheus  # noqa: F401
from autofix.cli import serve as _serve  # noqa: F401
from autofix.cli import service as _service  # noqa: F401  (registers its commands)
from autofix.cli._app import app
from autofix.cli._render import error
from autofix.errors import AutofixError

__all__ = ["app", "main"]


@functools.cache
def _command() -> Callable[..., Any]:
    return typer.main.get_command(app)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: typer handles usage errors (exit 2); AutofixError becomes one line.

    ``argv`` (default: the process's arguments) lets tests run many commands in one
    process; the click command is built once.
    """
    try:
        _command()(args=None if argv is None else list(argv), prog_name="autofix")
    except AutofixError as exc:
        error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
