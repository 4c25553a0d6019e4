"""files.clean_temp and files.rotate_logs: only below an allowlisted root, never via symlinks.

The root is a ``logdir`` target's ``path`` (configuration, never a parameter). Every
operation below it goes through directory file descriptors opened with ``O_NOFOLLOW``
one component at a time, so neither a symlink planted inside the root nor ``..`` or an
absolute path in a parameter reaches anything outside it; symlinks are skipped, never
followed, and so are names the actions cannot handle (control characters such as
``\\n``), which the plan reports. Deletion is a move into a quarantine slot of the fix's
own (``autofix.actions._quarantine``): every move is journaled before it is made, so a
rollback restores the files byte for byte after a failure or a crash at any instant,
and an apply that fails partway is rolled back by the executor.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from autofix.actions._paths import DIR_FLAGS, handles, open_dir, safe_parts
from autofix.actions._quarantine import Slot, SweepResult, restore, sweep
from autofix.actions.base import Action, Applied, Check, Facts, NoOp, Params, Plan, Step
from autofix.config import Duration
from autofix.errors import ActionError, AutofixError, PartialApplyError, RefusedError
from autofix.targets import LogDirTarget

_MAX_DEPTH = 32
_SKIPPED_SHOWN = 20

__all__ = ["CleanTemp", "RotateLogs", "open_dir", "purge_quarantine", "safe_parts", "scan"]


def _check_glob(value: str) -> str:
    if not value or "/" in value or not handles(value):
        raise ValueError("a file-name pattern: no '/', no control characters, not empty")
    return value


def scan(dir_fd: int, max_files: int) -> tuple[list[dict[str, Any]], int, int, bool, list[str]]:
    """Regular files below ``dir_fd`` (not through symlinks).

    Returns files, bytes, symlinks skipped, whether ``max_files`` cut the list, and the
    paths (up to 20) of entries skipped for names the actions cannot handle.
    """
    files: list[dict[str, Any]] = []
    unsafe: list[str] = []
    totals = {"bytes": 0, "links": 0, "truncated": 0}

    def walk(fd: int, prefix: str, depth: int) -> None:
        with os.scandir(fd) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if not handles(entry.name):
                    if len(unsafe) < _SKIPPED_SHOWN:
                        unsafe.append(prefix + entry.name)
                    if stat.S_ISREG(st.st_mode):
                        totals["bytes"] += st.st_size
                elif stat.S_ISLNK(st.st_mode):
                    totals["links"] += 1
                elif stat.S_ISDIR(st.st_mode) and depth < _MAX_DEPTH:
                    try:
                        child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        continue  # replaced by a link or removed meanwhile: not ours to follow
                    try:
                        walk(child, f"{prefix}{entry.name}/", depth + 1)
                    finally:
                        os.close(child)
                elif stat.S_ISREG(st.st_mode):
                    totals["bytes"] += st.st_size
                    if len(files) < max_files:
                        files.append(
                            {
                                "path": prefix + entry.name,
                                "size": st.st_size,
                                "mtime": st.st_mtime,
                                "ino": st.st_ino,
                            }
                        )
                    else:
                        totals["truncated"] = 1

    walk(dir_fd, "", 0)
    files.sort(key=lambda f: str(f["path"]))
    return files, totals["bytes"], totals["links"], bool(totals["truncated"]), unsafe


def purge_quarantine(base: Path, ttl: timedelta, now: Any) -> SweepResult:
    """Settle unfinished steps and delete slots made more than ``ttl`` before ``now``."""
    return sweep(base, ttl, now)


# -- actions ---------------------------------------------------------------------------


class _FilesParams(Params):
    subdir: str = Field("", description="Directory below the target's root (relative).")
    max_files: int = Field(10_000, ge=1, le=1_000_000, description="Most files considered.")


class _FilesAction(Action[Any, LogDirTarget]):
    target_kinds = (LogDirTarget,)
    rolls_back = True
    idempotent = True
    _slot: Path | None = None

    @property
    def root(self) -> Path:
        return self.target.path

    @property
    def quarantine_base(self) -> Path:
        return self.target.quarantine or self.ctx.quarantine_dir

    def authorize(self) -> None:
        self.parts = safe_parts(self.params.subdir)
        root = os.path.realpath(self.root)
        quarantine = os.path.realpath(self.quarantine_base)
        if os.path.commonpath([root, quarantine]) in (root, quarantine):
            raise RefusedError(
                "allowlist", f"quarantine {quarantine} and root {root} must not contain each other"
            )

    def facts(self) -> Facts:
        with open_dir(self.root, self.parts) as fd:
            files, total, links, truncated, unsafe = scan(fd, self.params.max_files)
        return {
            "now": self.ctx.clock().replace(tzinfo=UTC).timestamp(),
            "root": str(self.root),
            "subdir": "/".join(self.parts),
            "total_bytes": total,
            "files": files,
            "symlinks_skipped": links,
            "unsafe_names": unsafe,
            "truncated": truncated,
        }

    def verify(self, before: Facts, after: Facts) -> Check:
        freed = int(before["total_bytes"]) - int(after["total_bytes"])
        if freed > 0:
            return Check(True, f"freed {freed} bytes under {after['root']}")
        return Check(False, f"no bytes freed under {after['root']} ({freed})")

    def prepare(self, steps: Sequence[Step]) -> dict[str, Any]:
        """Make the fix's quarantine slot (durable) before anything moves."""
        if self._slot is None:
            self._slot = Slot.create(
                self.quarantine_base, self.ctx.fix_id, self.root, self.ctx.clock(), self.name
            )
        return {"quarantine": str(self._slot)}

    def apply(self, steps: Sequence[Step]) -> Applied:
        undo = self.prepare(steps)
        work = [s for s in steps if s.op != "skip"]
        done: list[str] = []
        with (
            _partway(done, len(work), undo),
            Slot(Path(undo["quarantine"])) as q,
            open_dir(self.root, self.parts) as base,
        ):
            for step in work:
                rel = str(step.args["path"])
                parts = safe_parts(rel)
                archive = None
                if step.op == "compress":
                    archive = safe_parts(str(step.args["archive"]))[-1]
                with _subdir(base, parts[:-1]) as dfd:
                    q.move_in(
                        dfd, parts[-1], _join(self.parts, rel), int(step.args["ino"]), archive
                    )
                done.append(self._done(step.op, rel))
        self._slot = None
        return Applied("\n".join(done), undo)

    def _done(self, op: str, rel: str) -> str:
        return f"{op} {rel}"

    def rollback(self, undo: Mapping[str, Any]) -> str:
        return restore(Path(undo["quarantine"]), self.root)


def _with_skipped(steps: list[Step], facts: Facts, nothing: str) -> Plan:
    """Steps, plus one that reports the names left alone; a no-op when that is all."""
    unsafe = list(facts.get("unsafe_names") or [])
    if unsafe:
        shown = ", ".join(repr(p) for p in unsafe[:5]) + (" …" if len(unsafe) > 5 else "")
        why = f"left alone: name(s) with control characters the action cannot handle: {shown}"
        if not steps:
            return NoOp(f"{nothing}; {why}")
        steps = [*steps, Step("skip", why, {"paths": unsafe})]
    return steps if steps else NoOp(nothing)


class CleanTempParams(_FilesParams):
    older_than: Duration = Field(timedelta(days=1), description="Only files not modified since.")
    pattern: str = Field("*", description="File-name glob (no '/').")

    @field_validator("pattern")
    @classmethod
    def _glob(cls, value: str) -> str:
        return _check_glob(value)


class CleanTemp(_FilesAction):
    name = "files.clean_temp"
    summary = "Move files older than N out of a temp directory into the quarantine."

    params_model = CleanTempParams

    def plan(self, facts: Facts) -> Plan:
        cutoff = float(facts["now"]) - self.params.older_than.total_seconds()
        chosen = [
            f
            for f in facts["files"]
            if f["mtime"] < cutoff
            and fnmatch.fnmatchcase(f["path"].rsplit("/", 1)[-1], self.params.pattern)
        ]
        steps = [
            Step("quarantine", f"move {f['path']} ({f['size']} bytes) to quarantine", dict(f))
            for f in chosen
        ]
        return _with_skipped(
            steps, facts, f"no file matching {self.params.pattern!r} older than the cutoff"
        )

    def _done(self, op: str, rel: str) -> str:
        return f"quarantined {rel}"


class RotateLogsParams(_FilesParams):
    pattern: str = Field("*.log", description="Glob of log files to compress (no '/').")
    compress_after: Duration = Field(timedelta(days=1), description="Compress logs older than.")
    archive_pattern: str = Field("*.gz", description="Glob of archives to delete (no '/').")
    delete_after: Duration = Field(timedelta(days=7), description="Delete archives older than.")

    @field_validator("pattern", "archive_pattern")
    @classmethod
    def _globs(cls, value: str) -> str:
        return _check_glob(value)


class RotateLogs(_FilesAction):
    name = "files.rotate_logs"
    summary = "Gzip logs older than N days; move archives older than M days to quarantine."
    params_model = RotateLogsParams

    def plan(self, facts: Facts) -> Plan:
        now = float(facts["now"])
        names = {f["path"] for f in facts["files"]}
        steps: list[Step] = []
        for f in facts["files"]:
            base = f["path"].rsplit("/", 1)[-1]
            age = now - float(f["mtime"])
            if fnmatch.fnmatchcase(base, self.params.archive_pattern):
                if age > self.params.delete_after.total_seconds():
                    steps.append(
                        Step("quarantine", f"move archive {f['path']} to quarantine", dict(f))
                    )
            elif (
                fnmatch.fnmatchcase(base, self.params.pattern)
                and age > self.params.compress_after.total_seconds()
            ):
                gz = f"{f['path']}.gz"
                if gz in names:
                    gz = f"{f['path']}.{int(f['mtime'])}.gz"
                steps.append(Step("compress", f"gzip {f['path']} to {gz}", {**f, "archive": gz}))
        return _with_skipped(steps, facts, "no log or archive old enough")


@contextmanager
def _partway(done: Sequence[str], total: int, undo: Mapping[str, Any]) -> Iterator[None]:
    """Turn a failure after the first step into PartialApplyError with the undo so far.

    Whatever failed (a full quarantine, a name that changed, a bug), the journal says
    exactly what has been moved, and the step that failed has cleaned up after itself:
    rolling back restores those files and nothing else.
    """
    try:
        yield
    except Exception as exc:
        if isinstance(exc, AutofixError):
            reason = str(exc)
        elif isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        if not done:
            if isinstance(exc, ActionError):
                raise
            raise ActionError(reason) from exc
        raise PartialApplyError(
            f"after {len(done)} of {total} steps: {reason}", dict(undo)
        ) from exc


@contextmanager
def _subdir(base_fd: int, parts: Sequence[str]) -> Iterator[int]:
    fd = os.dup(base_fd)
    try:
        for part in parts:
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise ActionError(
                    f"{part}: not a directory any more; left alone ({exc.strerror})"
                ) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _join(parts: Sequence[str], rel: str) -> str:
    return "/".join((*parts, rel))
