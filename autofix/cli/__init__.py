"""The ``autofix`` command. Thin: parse, call the package, print.

Exit codes: 0 ok, 1 failed, 2 bad usage or bad input. Errors are one line on stderr.
"""

from __future__ import annotations

import sys

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
from autofix.cli._app import app, err
from autofix.errors import AutofixError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: typer handles usage errors (exit 2); AutofixError becomes one line."""
    try:
        app()
    except AutofixError as exc:
        err.print(f"autofix: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
