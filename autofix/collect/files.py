"""Log directory size and growth rate.

The walk uses ``os.scandir`` and never follows symlinks, so a link to ``/`` cannot make a
cycle walk the whole machine. Files that vanish mid-walk (log rotation) and entries we
may not read are skipped and counted in ``autofix_dir_walk_errors``, never raised.

>>> import tempfile
>>> from autofix.targets import LogDirTarget
>>> with tempfile.TemporaryDirectory() as tmp:
...     collector = LogDirCollector(LogDirTarget(kind="logdir", name="logs", path=tmp))
...     [s.metric for s in collector.collect()]
['autofix_dir_size_bytes', 'autofix_dir_files', 'autofix_dir_walk_errors']
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autofix.collect.base import Sample
from autofix.errors import CollectError
from autofix.targets import LogDirTarget

log = logging.getLogger(__name__)

_SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class DirUsage:
    """What one walk of a directory found."""

    size_bytes: int
    files: int
    errors: int


def dir_usage(root: Path) -> DirUsage:
    """Sum the apparent size of the regular files under ``root``, not following links.

    Apparent size (``st_size``) rather than allocated blocks: it is what log rotation
    thresholds and operators reason about. A file with several hard links under the
    root is counted once. Raises CollectError only when ``root`` itself is unreadable.
    """
    try:
        root_stat = os.stat(root, follow_symlinks=False)
    except OSError as exc:
        raise CollectError(f"{root}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(root_stat.st_mode):
        raise CollectError(f"{root}: not a directory")
    size = files = errors = 0
    seen_links: set[tuple[int, int]] = set()
    stack = [os.fspath(root)]
    while stack:
        path = stack.pop()
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                            continue
                        if not entry.is_file(follow_symlinks=False):
                            continue  # symlinks, sockets, fifos: no bytes of their own
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        errors += 1  # vanished since the listing, or no access
                        continue
                    if st.st_nlink > 1:
                        key = (st.st_dev, st.st_ino)
                        if key in seen_links:
                            continue
                        seen_links.add(key)
                    size += st.st_size
                    files += 1
        except OSError as exc:
            errors += 1
            log.debug("cannot list %s: %s", path, exc)
    return DirUsage(size_bytes=size, files=files, errors=errors)


class LogDirCollector:
    """Size, file count and growth (bytes/day) of one directory tree.

    The growth rate compares this cycle with the previous one held by the instance, so
    the first cycle has no rate. ``clock`` returns seconds; monotonic by default so a
    wall-clock step does not fake a burst of growth.
    """

    def __init__(self, target: LogDirTarget, clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self.name = target.name
        self.clock = clock
        self._previous: tuple[float, int] | None = None  # (clock, size_bytes)

    def collect(self) -> list[Sample]:
        usage = dir_usage(self.target.path)
        now = self.clock()
        labels = {"target": self.name, "path": str(self.target.path)}
        samples = [
            Sample("autofix_dir_size_bytes", usage.size_bytes, labels, "bytes", self._capacity()),
            Sample("autofix_dir_files", usage.files, labels, "count"),
            Sample("autofix_dir_walk_errors", usage.errors, labels, "count"),
        ]
        if self._previous is not None:
            then, size_then = self._previous
            elapsed = now - then
            if elapsed > 0:
                # Negative after rotation or cleanup: that is real information.
                rate = (usage.size_bytes - size_then) / elapsed * _SECONDS_PER_DAY
                samples.append(
                    Sample("autofix_dir_growth_bytes_per_day", rate, labels, "bytes_per_day")
                )
        self._previous = (now, usage.size_bytes)
        return samples

    def _capacity(self) -> float | None:
        """The configured quota, else the filesystem's size when the path is its mount."""
        if self.target.capacity is not None:
            return float(self.target.capacity)
        try:
            if os.path.ismount(self.target.path):
                st = os.statvfs(self.target.path)
                return float(st.f_blocks * st.f_frsize) or None
        except OSError:
            return None
        return None
