"""The memory cgroup a process runs in: usage, working set and the limit that applies.

cgroup v2 (``memory.current`` against ``memory.max``) is read where the process's unified
cgroup has the memory controller; otherwise the v1 memory hierarchy
(``memory.usage_in_bytes`` against ``memory.limit_in_bytes``) on hybrid hosts. The limit
that applies is the smallest one on the path from the process's cgroup up to the root of
the mount (a parent slice's limit binds its children too). The working set is usage minus
inactive file pages, as cAdvisor and the kubelet count it: page cache the kernel drops
before it OOM-kills anything is not what runs out.

Everything is read from files below ``root`` (``/`` on a real host), so the parsing is
tested on a recorded tree as well as on the kernel.

>>> parse_cgroup_file("0::/system.slice/news.service\\n")
{'': '/system.slice/news.service'}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: v1 reports "no limit" as the largest page-aligned 64-bit value; anything this large is.
_V1_UNLIMITED = 2**62


@dataclass(frozen=True)
class CgroupMemory:
    """Memory of one cgroup. ``limit`` is None when nothing on its path limits it."""

    path: str
    version: int
    usage: float
    working_set: float
    limit: float | None


@dataclass(frozen=True)
class _Mount:
    root: str  # the subtree of the hierarchy mounted here (cgroup namespaces)
    point: Path


def parse_cgroup_file(text: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` → {controller: path}; the v2 (unified) entry is keyed ``""``.

    A v1 line may name several controllers (``4:cpu,cpuacct:/x``): each gets the path.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
            continue
        for name in controllers.split(","):
            out[name] = path
    return out


def parse_mountinfo(text: str) -> tuple[_Mount | None, _Mount | None]:
    """(the cgroup2 mount, the v1 mount of the memory controller) from a mountinfo table."""
    unified: _Mount | None = None
    memory: _Mount | None = None
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3:
            continue
        mount = _Mount(root=_unescape(fields[3]), point=Path(_unescape(fields[4])))
        fstype, options = rest[0], rest[2].split(",")
        if fstype == "cgroup2" and unified is None:
            unified = mount
        elif fstype == "cgroup" and "memory" in options and memory is None:
            memory = mount
    return unified, memory


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 …).
    return field.encode("latin-1").decode("unicode_escape") if "\\" in field else field


class CgroupReader:
    """Reads the memory cgroup of processes; one instance per collector, cheap to build."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root
        self._mounts: tuple[_Mount | None, _Mount | None] | None = None

    def _mountinfo(self) -> tuple[_Mount | None, _Mount | None]:
        if self._mounts is None:
            try:
                text = (self.root / "proc/self/mountinfo").read_text(encoding="utf-8")
            except OSError:
                text = ""
            self._mounts = parse_mountinfo(text)
        return self._mounts

    def memory_of(self, pid: int) -> CgroupMemory | None:
        """The memory cgroup of ``pid``, or None (gone, the root cgroup, no controller)."""
        try:
            text = (self.root / f"proc/{pid}/cgroup").read_text(encoding="utf-8")
        except OSError:
            return None
        paths = parse_cgroup_file(text)
        unified, memory = self._mountinfo()
        if "" in paths and unified is not None:
            found = self._v2(unified, paths[""])
            if found is not None:
                return found
        if "memory" in paths and memory is not None:
            return self._v1(memory, paths["memory"])
        return None

    def _directory(self, mount: _Mount, path: str) -> tuple[Path, Path] | None:
        """(the cgroup's directory, the mount's directory); None for the root cgroup."""
        rel = path
        if mount.root not in {"", "/"}:
            if not (path == mount.root or path.startswith(mount.root.rstrip("/") + "/")):
                return None  # outside what this mount shows
            rel = path[len(mount.root) :]
        rel = rel.strip("/")
        if not rel:
            return None  # the root cgroup is the host: node_memory_* already says it
        base = self.root / str(mount.point).lstrip("/")
        return base / rel, base

    def _v2(self, mount: _Mount, path: str) -> CgroupMemory | None:
        where = self._directory(mount, path)
        if where is None:
            return None
        directory, top = where
        usage = _number(directory / "memory.current")
        if usage is None:
            return None  # no memory controller enabled for this subtree
        stat = _stat(directory / "memory.stat")
        limit = _smallest(directory, top, "memory.max", lambda v: v)
        working = max(0.0, usage - stat.get("inactive_file", 0.0))
        return CgroupMemory(path, 2, usage, working, limit)

    def _v1(self, mount: _Mount, path: str) -> CgroupMemory | None:
        where = self._directory(mount, path)
        if where is None:
            return None
        directory, top = where
        usage = _number(directory / "memory.usage_in_bytes")
        if usage is None:
            return None
        stat = _stat(directory / "memory.stat")
        limit = _smallest(
            directory,
            top,
            "memory.limit_in_bytes",
            lambda v: v if v < _V1_UNLIMITED else None,
        )
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0.0))
        return CgroupMemory(path, 1, usage, max(0.0, usage - inactive), limit)


def _number(file: Path) -> float | None:
    """A cgroup file holding one number; None when missing, ``max`` is infinity."""
    try:
        text = file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return math.inf
    try:
        return float(text)
    except ValueError:
        log.debug("%s: not a number: %r", file, text[:40])
        return None


def _stat(file: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        lines = file.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        key, _, value = line.partition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def _smallest(
    directory: Path, top: Path, name: str, meaning: Callable[[float], float | None]
) -> float | None:
    """The smallest finite limit in ``name`` from ``directory`` up to (not above) ``top``."""
    best: float | None = None
    current = directory
    while True:
        value = _number(current / name)
        if value is not None and math.isfinite(value):
            limit = meaning(value)
            if limit is not None and (best is None or limit < best):
                best = float(limit)
        if current == top or top not in current.parents:
            return best
        current = current.parent
