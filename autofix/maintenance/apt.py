"""The package manager's list of upgradable packages: parsing it, and reading it rarely.

``apt list --upgradable`` takes 2–8 s (it loads every package list); its answer changes
only when apt's lists are refreshed (``apt-get update``) or packages are installed. So a
successful answer is reused until ``/var/lib/apt/lists`` or ``/var/lib/dpkg/status``
change, or ``AUTOFIX_MAINTENANCE_UPGRADABLE_CACHE`` has passed. Failures are never
reused: the next run asks again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from autofix.actions.base import CommandResult, Runner

_UPGRADABLE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]*)/(?P<suite>\S+)\s+(?P<version>\S+)\s+(?P<arch>\S+)"
    r"(?:\s+\[upgradable from: (?P<current>[^\]]+)\])?\s*$"
)

#: What changes when the answer can change: the package lists and the installed set.
APT_STATE: tuple[Path, ...] = (Path("/var/lib/apt/lists"), Path("/var/lib/dpkg/status"))


@dataclass(frozen=True)
class Package:
    """One upgradable package as ``apt list --upgradable`` shows it."""

    name: str
    suite: str
    version: str
    arch: str = ""
    current: str | None = None

    @property
    def security(self) -> bool:
        return "-security" in self.suite


def parse_upgradable(text: str) -> list[Package]:
    """Packages from apt's output; "Listing...", warnings and notices are skipped."""
    packages = []
    for line in text.splitlines():
        match = _UPGRADABLE.match(line.strip())
        if match:
            packages.append(
                Package(
                    match["name"], match["suite"], match["version"], match["arch"], match["current"]
                )
            )
    return packages


_Stamp = tuple[tuple[int, int] | None, ...]


class UpgradableCache:
    """Successful listings by (runner, argv), valid while ``watch`` is unchanged and young.

    ``clock`` is monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        watch: Sequence[Path] = APT_STATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.watch = tuple(watch)
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[object, tuple[str, ...]], tuple[float, _Stamp, CommandResult]]
        self._entries = {}

    def _stamp(self) -> _Stamp:
        out: list[tuple[int, int] | None] = []
        for path in self.watch:
            try:
                st = path.stat()
            except OSError:
                out.append(None)
            else:
                out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def run(
        self, runner: Runner, argv: Sequence[str], max_age: timedelta, timeout: float = 120.0
    ) -> CommandResult:
        """The runner's answer to ``argv``: reused when still valid, else run now."""
        key = (runner, tuple(argv))
        stamp = self._stamp()
        if max_age > timedelta(0):
            with self._lock:
                entry = self._entries.get(key)
            if (
                entry is not None
                and entry[1] == stamp
                and self.clock() - entry[0] < max_age.total_seconds()
            ):
                return entry[2]
        started = self.clock()
        done = runner(argv, timeout)  # raises ActionError when the program is missing
        with self._lock:
            if done.returncode == 0 and max_age > timedelta(0):
                self._entries[key] = (started, stamp, done)
            else:
                self._entries.pop(key, None)
        return done


#: Shared by the maintenance job's runs in one process (``autofix serve``).
UPGRADABLE = UpgradableCache()


def list_upgradable(
    runner: Runner,
    argv: Sequence[str],
    max_age: timedelta,
    cache: UpgradableCache | None = None,
) -> CommandResult:
    """``argv``'s listing of upgradable packages, read at most once per ``max_age`` while
    apt's state is unchanged (see the module docstring)."""
    return (cache or UPGRADABLE).run(runner, argv, max_age)
