"""Run the installed ``autofix`` command as a user would: a real subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

AUTOFIX = shutil.which("autofix", path=str(Path(sys.executable).parent)) or "autofix"


def run_autofix(
    args: list[str],
    env: dict[str, str],
    check: int | None = 0,
    *,
    cwd: Path | str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``autofix ARGS`` (in ``cwd``, else ``env["HOME"]``); assert the exit code."""
    proc = subprocess.run(
        [AUTOFIX, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd if cwd is not None else env["HOME"],
    )
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc
