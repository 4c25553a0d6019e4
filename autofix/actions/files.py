"""files.clean_temp and files.rotate_logs: only below an allowlisted root, never via symlinks.

The root is a ``logdir`` target's ``path`` (configuration, never a parameter). Every
operation below it goes through directory file descriptors opened with ``O_NOFOLLOW``
one component at a time, so neither a symlink planted inside the root nor ``..`` or an
absolute path in a parameter reaches anything outside it; symlinks are skipped, never
followed. Deletion is a move into the quarantine (``<quarantine>/fix-<id>/`` with a
``manifest.json``); rollback moves the files back byte for byte (checked by SHA-256);
``purge_quarantine`` deletes entries older than the TTL.
"""

from __future__ import annotations

import errno
import fnmatch
import gzip
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from autofix.actions.base import Action, Applied, Check, Facts, NoOp, Params, Plan, Step
from autofix.config import Duration
from autofix.errors import ActionError, PartialApplyError, RefusedError
from autofix.targets import LogDirTarget

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MANIFEST = "manifest.json"
_MAX_DEPTH = 32


def safe_parts(text: str) -> tuple[str, ...]:
    """Split a relative path parameter into components, or raise RefusedError.

    >>> safe_parts("a/./b")
    ('a', 'b')
    """
    if any(c in text for c in "\x00\n\r"):
        raise RefusedError("allowlist", f"path {text!r} contains a control character")
    if text.startswith("/"):
        raise RefusedError("allowlist", f"path {text!r} is absolute; give it relative to the root")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if ".." in parts:
        raise RefusedError("allowlist", f"path {text!r} climbs out of the root ('..')")
    return parts


def _check_glob(value: str) -> str:
    if not value or "/" in value or any(c in value for c in "\x00\n\r"):
        raise ValueError("a file-name pattern: no '/', no control characters, not empty")
    return value


@contextmanager
def open_dir(root: Path, parts: Sequence[str] = ()) -> Iterator[int]:
    """A directory fd for ``root/parts``, each component opened without following links."""
    try:
        fd = os.open(root, _DIR)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RefusedError(
                "allowlist", f"{root}: the root is a symlink or not a directory"
            ) from None
        raise ActionError(f"{root}: cannot open: {exc.strerror}") from None
    try:
        for index, part in enumerate(parts):
            try:
                child = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                where = "/".join(parts[: index + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise RefusedError(
                        "allowlist", f"{where}: a symlink or not a directory; not followed"
                    ) from None
                raise ActionError(f"{where}: cannot open: {exc.strerror}") from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def scan(dir_fd: int, max_files: int) -> tuple[list[dict[str, Any]], int, int, bool]:
    """Regular files below ``dir_fd`` (not through symlinks): files, bytes, links, truncated."""
    files: list[dict[str, Any]] = []
    totals = {"bytes": 0, "links": 0, "truncated": 0}

    def walk(fd: int, prefix: str, depth: int) -> None:
        with os.scandir(fd) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    totals["links"] += 1
                elif stat.S_ISDIR(st.st_mode) and depth < _MAX_DEPTH:
                    try:
                        child = os.open(entry.name, _DIR, dir_fd=fd)
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
    return files, totals["bytes"], totals["links"], bool(totals["truncated"])


def _sha256(dir_fd: int, name: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(name, _FILE, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _move(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """rename(2) between directory fds; across filesystems copy, fsync, then unlink."""
    try:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    source = os.open(src, _FILE, dir_fd=src_fd)
    mode = os.fstat(source).st_mode & 0o7777
    target = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dst_fd)
    with os.fdopen(source, "rb") as reader, os.fdopen(target, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())
    os.unlink(src, dir_fd=src_fd)


class Quarantine:
    """``<base>/fix-<id>/``: numbered files plus a manifest rewritten after every move."""

    def __init__(self, base: Path, fix_id: int, root: Path, now: datetime) -> None:
        self.dir = base / f"fix-{fix_id}"
        self.manifest: dict[str, Any] = {
            "root": str(root),
            "fix_id": fix_id,
            "moved_at": now.isoformat(),
            "entries": [],
        }

    def __enter__(self) -> Quarantine:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.dir, _DIR)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def move_in(self, dir_fd: int, name: str, rel: str, ino: int, **extra: Any) -> dict[str, Any]:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_ino != ino:
            raise ActionError(f"{rel}: changed since it was planned; left alone")
        entries: list[dict[str, Any]] = self.manifest["entries"]
        slot = f"{len(entries):06d}"
        _move(dir_fd, name, self.fd, slot)
        entry = {
            "slot": slot,
            "path": rel,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "mode": st.st_mode & 0o7777,
            "sha256": _sha256(self.fd, slot),
            **extra,
        }
        entries.append(entry)
        self._write_manifest()
        return entry

    def _write_manifest(self) -> None:
        tmp = self.dir / f".{_MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=1))
        os.replace(tmp, self.dir / _MANIFEST)


def restore(qdir: Path) -> str:
    """Move every quarantined file back (newest first), byte for byte; report what was done."""
    manifest_file = qdir / _MANIFEST
    try:
        manifest = json.loads(manifest_file.read_text())
    except FileNotFoundError:
        raise ActionError(f"{qdir}: nothing to restore (already rolled back or purged)") from None
    root = Path(manifest["root"])
    restored, problems = 0, []
    qfd = os.open(qdir, _DIR)
    try:
        for entry in reversed(manifest["entries"]):
            parts = safe_parts(entry["path"])
            with open_dir(root, parts[:-1]) as dfd:
                name = parts[-1]
                created = entry.get("created")
                if created:
                    try:
                        st = os.stat(created, dir_fd=dfd, follow_symlinks=False)
                        if st.st_ino == entry.get("created_ino"):
                            os.unlink(created, dir_fd=dfd)
                    except FileNotFoundError:
                        pass
                try:
                    os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    problems.append(f"{entry['path']}: exists again; kept in {qdir}")
                    continue
                except FileNotFoundError:
                    pass
                _move(qfd, entry["slot"], dfd, name)
                fd = os.open(name, _FILE, dir_fd=dfd)
                try:
                    os.fchmod(fd, entry["mode"])
                    os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
                finally:
                    os.close(fd)
                if _sha256(dfd, name) != entry["sha256"]:
                    problems.append(f"{entry['path']}: restored bytes differ")
                restored += 1
    finally:
        os.close(qfd)
    if problems:
        raise ActionError(f"restored {restored} file(s); " + "; ".join(problems))
    manifest_file.rename(qdir / f"restored-{_MANIFEST}")
    return f"restored {restored} file(s) from {qdir}"


def purge_quarantine(base: Path, ttl: timedelta, now: datetime) -> list[Path]:
    """Delete quarantine entries moved in more than ``ttl`` before ``now``."""
    purged: list[Path] = []
    if not base.is_dir():
        return purged
    for entry in sorted(base.glob("fix-*")):
        manifest = entry / _MANIFEST
        if entry.is_symlink() or not manifest.is_file():
            continue
        moved = datetime.fromisoformat(json.loads(manifest.read_text())["moved_at"])
        if moved + ttl <= now:
            shutil.rmtree(entry)
            purged.append(entry)
    return purged


# -- actions ---------------------------------------------------------------------------


class _FilesParams(Params):
    subdir: str = Field("", description="Directory below the target's root (relative).")
    max_files: int = Field(10_000, ge=1, le=1_000_000, description="Most files considered.")


class _FilesAction(Action[Any, LogDirTarget]):
    target_kinds = (LogDirTarget,)
    rolls_back = True
    idempotent = True

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
            files, total, links, truncated = scan(fd, self.params.max_files)
        return {
            "now": self.ctx.clock().replace(tzinfo=UTC).timestamp(),
            "root": str(self.root),
            "subdir": "/".join(self.parts),
            "total_bytes": total,
            "files": files,
            "symlinks_skipped": links,
            "truncated": truncated,
        }

    def verify(self, before: Facts, after: Facts) -> Check:
        freed = int(before["total_bytes"]) - int(after["total_bytes"])
        if freed > 0:
            return Check(True, f"freed {freed} bytes under {after['root']}")
        return Check(False, f"no bytes freed under {after['root']} ({freed})")

    def rollback(self, undo: Mapping[str, Any]) -> str:
        return restore(Path(undo["quarantine"]))

    def _quarantine(self) -> Quarantine:
        return Quarantine(self.quarantine_base, self.ctx.fix_id, self.root, self.ctx.clock())


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
        if not chosen:
            return NoOp(f"no file matching {self.params.pattern!r} older than the cutoff")
        return [
            Step("quarantine", f"move {f['path']} ({f['size']} bytes) to quarantine", dict(f))
            for f in chosen
        ]

    def apply(self, steps: Sequence[Step]) -> Applied:
        lines: list[str] = []
        with self._quarantine() as q, open_dir(self.root, self.parts) as base:
            for step in steps:
                rel = str(step.args["path"])
                parts = safe_parts(rel)
                with _partway(lines, len(steps), q), _subdir(base, parts[:-1]) as dfd:
                    q.move_in(dfd, parts[-1], _join(self.parts, rel), int(step.args["ino"]))
                lines.append(f"quarantined {rel}")
        return Applied("\n".join(lines), {"quarantine": str(q.dir)})


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
        if not steps:
            return NoOp("no log or archive old enough")
        return steps

    def apply(self, steps: Sequence[Step]) -> Applied:
        lines: list[str] = []
        with self._quarantine() as q, open_dir(self.root, self.parts) as base:
            for step in steps:
                rel = str(step.args["path"])
                parts = safe_parts(rel)
                with _partway(lines, len(steps), q), _subdir(base, parts[:-1]) as dfd:
                    extra: dict[str, Any] = {}
                    if step.op == "compress":
                        archive = safe_parts(str(step.args["archive"]))[-1]
                        extra = {
                            "created": archive,
                            "created_ino": _gzip(dfd, parts[-1], archive, int(step.args["ino"])),
                        }
                    q.move_in(
                        dfd, parts[-1], _join(self.parts, rel), int(step.args["ino"]), **extra
                    )
                lines.append(f"{step.op} {rel}")
        return Applied("\n".join(lines), {"quarantine": str(q.dir)})


@contextmanager
def _partway(done: Sequence[str], total: int, quarantine: Quarantine) -> Iterator[None]:
    """Turn a failure after the first step into PartialApplyError with the undo so far.

    The quarantine manifest is rewritten after every move, so it always describes exactly
    what has been moved: rolling it back restores those files and nothing else.
    """
    try:
        yield
    except (ActionError, OSError) as exc:
        reason = str(exc) if isinstance(exc, ActionError) else (exc.strerror or str(exc))
        if not done:
            if isinstance(exc, ActionError):
                raise
            raise ActionError(reason) from exc
        raise PartialApplyError(
            f"after {len(done)} of {total} steps: {reason}", {"quarantine": str(quarantine.dir)}
        ) from exc


def _gzip(dir_fd: int, name: str, archive: str, ino: int) -> int:
    source = os.open(name, _FILE, dir_fd=dir_fd)
    st = os.fstat(source)
    if st.st_ino != ino or not stat.S_ISREG(st.st_mode):
        os.close(source)
        raise ActionError(f"{name}: changed since it was planned; left alone")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    target = os.open(archive, flags, st.st_mode & 0o777, dir_fd=dir_fd)
    with os.fdopen(source, "rb") as reader, os.fdopen(target, "wb") as raw:
        with gzip.GzipFile(filename=name, mode="wb", fileobj=raw, mtime=int(st.st_mtime)) as out:
            shutil.copyfileobj(reader, out, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
        os.utime(raw.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
        return os.fstat(raw.fileno()).st_ino


@contextmanager
def _subdir(base_fd: int, parts: Sequence[str]) -> Iterator[int]:
    fd = os.dup(base_fd)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR, dir_fd=fd)
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
