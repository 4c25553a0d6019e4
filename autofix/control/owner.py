"""The owner record beside the store: who serves it, and where to reach them.

``autofix serve`` writes ``<store>.owner`` (JSON: PID, the process's start time, the
control socket, the API URL, the version) once it holds the store, and removes it when
it stops. A record whose process is gone — or whose PID now belongs to another process
(the start time differs) — is stale and ignored: the service died, DuckDB's lock went
with it, and the CLI opens the store itself.

The control socket sits beside the store (``<store>.sock``) when that path fits a Unix
socket address (108 bytes), else in a private directory under the temp dir; the record
names it either way.

>>> import tempfile, os
>>> db = Path(tempfile.mkdtemp()) / "autofix.duckdb"
>>> announce(db, socket=Path("/tmp/x.sock"), api_url=None)
>>> read(db).pid == os.getpid(), read(db).alive()
(True, True)
>>> withdraw(db); read(db) is None
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from autofix import __version__

#: Longest path a Unix socket address takes (sun_path, with its NUL).
_SUN_PATH = 107


def record_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".owner")


def socket_path(db_path: Path) -> Path:
    """Where the service listens: beside the store, or a private temp dir for long paths."""
    beside = db_path.absolute().with_name(db_path.name + ".sock")
    if len(os.fsencode(beside)) <= _SUN_PATH:
        return beside
    digest = hashlib.sha256(os.fsencode(db_path.absolute())).hexdigest()[:16]
    private = Path(tempfile.gettempdir()) / f"autofix-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    os.chmod(private, 0o700)
    return private / f"{digest}.sock"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass(frozen=True)
class Owner:
    """What the record says about the process that owns the store."""

    pid: int
    start: int | None
    socket: str
    api_url: str | None
    since: str
    version: str

    def alive(self) -> bool:
        """The process is running, and is the one that wrote the record."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        now = _start_ticks(self.pid)
        return self.start is None or now is None or now == self.start


def announce(db_path: Path, *, socket: Path, api_url: str | None) -> None:
    """Write this process's record (atomically: a reader never sees half of it)."""
    owner = Owner(
        os.getpid(),
        _start_ticks(os.getpid()),
        str(socket),
        api_url,
        datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        __version__,
    )
    path = record_path(db_path)
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(asdict(owner)) + "\n")
    os.replace(temp, path)


def read(db_path: Path) -> Owner | None:
    """The record, or None when there is none (or it cannot be read as one)."""
    try:
        data = json.loads(record_path(db_path).read_text())
        return Owner(
            int(data["pid"]),
            None if data.get("start") is None else int(data["start"]),
            str(data["socket"]),
            data.get("api_url"),
            str(data.get("since", "")),
            str(data.get("version", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def withdraw(db_path: Path) -> None:
    """Remove the record if it is this process's (a successor's is left alone)."""
    found = read(db_path)
    if found is not None and found.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            record_path(db_path).unlink()


__all__ = ["Owner", "announce", "read", "record_path", "socket_path", "withdraw"]
