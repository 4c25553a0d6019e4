"""The quarantine of files actions: unique slots and a write-ahead journal of every move.

A fix gets a slot of its own, ``<base>/fix-<id>-<UTC time>-<random>/``, made with mkdir(2),
so it is never reused: fix ids restart with a new or restored store, and two stores may
share a base. In it, ``journal.jsonl`` and the moved files, numbered ``000000``, ….

The journal is written ahead: a step is recorded (and fsynced) before it starts and again
when it is done, and every file operation is fsynced before the next record. Whatever
instant the process dies at, ``settle`` finds the one unfinished step from the journal and
the files, and finishes or undoes it (a partial copy, a half-written ``.gz``), and
``restore`` moves every file back byte for byte; a restore that dies is settled or simply
run again. A process working on a slot holds an flock on its journal, which dies with it,
so ``settle`` and ``purge`` never touch a slot someone is using. The records are
described, and read back, in ``autofix.actions._journal``.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from autofix.actions._journal import (
    JOURNAL,
    JOURNAL_TMP,
    LEGACY_MANIFEST,
    VERSION,
    Entry,
    QuarantineFormatError,
    apply_record,
    moved_at,
    read_journal,
    upgrade_legacy,
)
from autofix.actions._paths import DIR_FLAGS, FILE_FLAGS, handles, open_dir, safe_parts
from autofix.errors import ActionError, AutofixError, RefusedError

log = logging.getLogger(__name__)

__all__ = [
    "JOURNAL",
    "QuarantineFormatError",
    "Slot",
    "SweepResult",
    "handles",
    "new_slot",
    "open_dir",
    "read_journal",
    "restore",
    "safe_parts",
    "settle",
    "slots",
    "sweep",
]

_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
# Where hard links cannot be made (vfat, some FUSE), a checked rename stands in.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP}


class SlotBusyError(ActionError):
    """Another live process holds the slot's lock."""


# -- small file primitives -------------------------------------------------------------


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _unlink(name: str, dir_fd: int) -> bool:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def sha256_of(dir_fd: int, name: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy(src: int, dst: int) -> str:
    """Copy fd to fd, fsync the copy; return the SHA-256 of what was copied."""
    digest = hashlib.sha256()
    while block := os.read(src, _CHUNK):
        digest.update(block)
        view = memoryview(block)
        while view:
            view = view[os.write(dst, view) :]
    os.fsync(dst)
    return digest.hexdigest()


def _is(st: os.stat_result | None, ino: Any, dev: Any) -> bool:
    return st is not None and stat.S_ISREG(st.st_mode) and (st.st_ino, st.st_dev) == (ino, dev)


def _same_file(a: os.stat_result | None, b: os.stat_result | None) -> bool:
    return a is not None and b is not None and (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


# -- a slot in use ---------------------------------------------------------------------


class Slot:
    """An open, locked quarantine slot: apply moves files in, restore moves them back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.token = path.name.rsplit("-", 1)[-1]
        self.fd = self.jfd = -1
        try:
            self.fd = os.open(path, DIR_FLAGS)
            self.jfd = os.open(
                JOURNAL, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd
            )
            try:
                fcntl.flock(self.jfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SlotBusyError(f"{path}: in use by another process") from None
            self.journal = read_journal(path)
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, base: Path, fix_id: int, root: Path, now: datetime, action: str) -> Path:
        """A new slot, made exclusively, with its journal's begin record durable."""
        path = new_slot(base, fix_id, now)
        try:
            header = {
                "op": "begin",
                "version": VERSION,
                "root": str(root),
                "fix_id": fix_id,
                "action": action,
                "moved_at": now.isoformat(),
            }
            # Written aside and renamed: a journal, if there is one, has its header.
            fd = os.open(path / JOURNAL_TMP, _NEW, 0o600)
            try:
                os.write(fd, (json.dumps(header) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(path / JOURNAL_TMP, path / JOURNAL)
            _fsync_dir(path)
            _fsync_dir(base)
        except OSError as exc:
            raise ActionError(f"{base}: cannot make a quarantine slot: {exc.strerror}") from None
        return path

    def close(self) -> None:
        for fd in (self.jfd, self.fd):
            if fd >= 0:
                with suppress(OSError):
                    os.close(fd)
        self.fd = self.jfd = -1

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, op: str, **values: Any) -> None:
        """Append one record and make it durable before anything else happens."""
        data = (json.dumps({"op": op, **values}) + "\n").encode()
        end = os.lseek(self.jfd, 0, os.SEEK_END)
        try:
            if os.write(self.jfd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(self.jfd)
        except OSError:
            # A torn record (a full disk) would make the journal unreadable: cut it off.
            with suppress(OSError):
                os.ftruncate(self.jfd, end)
            raise
        self.journal = apply_record(self.journal, {"op": op, **values})

    # -- moving in ---------------------------------------------------------------------

    def move_in(
        self, dir_fd: int, name: str, rel: str, ino: int, archive: str | None = None
    ) -> Entry:
        """Move ``name`` (and for ``archive``: gzip it there first) into the slot."""
        st = _lstat(name, dir_fd)
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_ino != ino:
            raise ActionError(f"{rel}: changed since it was planned; left alone")
        seq = len(self.journal.entries)
        extra: dict[str, Any] = {}
        if archive is not None:
            extra = {"archive": archive, "tmp": f".autofix-{self.token}-{seq}.gz.part"}
        self.record(
            "intent",
            seq=seq,
            kind="compress" if archive else "move",
            path=rel,
            slot=seq,
            ino=st.st_ino,
            dev=st.st_dev,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            mode=st.st_mode & 0o7777,
            uid=st.st_uid,
            gid=st.st_gid,
            **extra,
        )
        entry = self.journal.entry(seq)
        try:
            if archive is not None:
                self._compress(dir_fd, entry)
            sha = self._transfer_in(dir_fd, entry)
            self.record("moved", seq=seq, sha256=sha)
        except BaseException as exc:
            # This step's own leftovers go now; earlier steps are the caller's to undo.
            try:
                self.settle_entry(entry, dir_fd)
            except (OSError, ActionError) as cleanup:
                log.error("quarantine %s step %d: cleanup failed: %s", self.path, seq, cleanup)
            if isinstance(exc, OSError):
                raise ActionError(f"{rel}: {exc.strerror or exc}") from exc
            raise
        return entry

    def _compress(self, dir_fd: int, entry: Entry) -> None:
        assert entry.tmp is not None
        assert entry.archive is not None
        source = os.open(entry.name, FILE_FLAGS, dir_fd=dir_fd)
        try:
            st = os.fstat(source)
            if st.st_ino != entry.ino or not stat.S_ISREG(st.st_mode):
                raise ActionError(f"{entry.path}: changed since it was planned; left alone")
            target = os.open(entry.tmp, _NEW, st.st_mode & 0o777, dir_fd=dir_fd)
            with (
                os.fdopen(os.dup(source), "rb") as reader,
                os.fdopen(target, "wb") as raw,
            ):
                with gzip.GzipFile(
                    filename=entry.name, mode="wb", fileobj=raw, mtime=int(st.st_mtime)
                ) as out:
                    shutil.copyfileobj(reader, out, _CHUNK)
                raw.flush()
                os.fsync(raw.fileno())
                os.utime(raw.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
                archive_ino = os.fstat(raw.fileno()).st_ino
        finally:
            os.close(source)
        self.record("archived", seq=entry.seq, ino=archive_ino)
        try:
            os.link(entry.tmp, entry.archive, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            raise ActionError(
                f"{entry.archive}: appeared since it was planned; left alone"
            ) from None
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            if _lstat(entry.archive, dir_fd) is not None:
                raise ActionError(
                    f"{entry.archive}: appeared since it was planned; left alone"
                ) from None
            os.rename(entry.tmp, entry.archive, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        _unlink(entry.tmp, dir_fd)
        os.fsync(dir_fd)

    def _transfer_in(self, dir_fd: int, entry: Entry) -> str:
        """rename(2) into the slot; across filesystems copy to ``.part``, fsync, then unlink."""
        try:
            os.rename(entry.name, entry.slot, src_dir_fd=dir_fd, dst_dir_fd=self.fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
        else:
            os.fsync(self.fd)
            os.fsync(dir_fd)
            return sha256_of(self.fd, entry.slot)
        part = entry.slot + ".part"
        source = os.open(entry.name, FILE_FLAGS, dir_fd=dir_fd)
        try:
            before = os.fstat(source)
            if not _is(before, entry.ino, entry.dev):
                raise ActionError(f"{entry.path}: changed since it was planned; left alone")
            target = os.open(part, _NEW, 0o600, dir_fd=self.fd)
            try:
                sha = _copy(source, target)
            finally:
                os.close(target)
            after = os.fstat(source)
        finally:
            os.close(source)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise ActionError(f"{entry.path}: written to while being moved; left alone")
        os.rename(part, entry.slot, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        os.fsync(self.fd)
        if not _is(_lstat(entry.name, dir_fd), entry.ino, entry.dev):
            raise ActionError(f"{entry.path}: replaced while being moved; left alone")
        os.unlink(entry.name, dir_fd=dir_fd)
        os.fsync(dir_fd)
        return sha

    # -- settling an unfinished step -----------------------------------------------------

    def settle_entry(self, entry: Entry, dir_fd: int | None) -> str | None:
        """Finish or undo a step a dead process (or a failed call) left half done.

        ``dir_fd`` is the original's directory (None: it is gone). Returns what was done.
        """
        if entry.state == "intent":
            return self._settle_move(entry, dir_fd)
        if entry.state == "restoring" and dir_fd is not None:
            return self._settle_restore(entry, dir_fd)
        return None

    def _settle_move(self, entry: Entry, dir_fd: int | None) -> str:
        _unlink(entry.slot + ".part", self.fd)
        original = None if dir_fd is None else _lstat(entry.name, dir_fd)
        moved = _lstat(entry.slot, self.fd)
        if dir_fd is not None and entry.tmp:
            _unlink(entry.tmp, dir_fd)
        if moved is not None and not _is(original, entry.ino, entry.dev):
            # The original is in the slot (its old name is empty or holds a new file).
            self.record("moved", seq=entry.seq, sha256=sha256_of(self.fd, entry.slot))
            return f"{entry.path}: move finished"
        if moved is not None:
            _unlink(entry.slot, self.fd)  # a complete copy; the original never went
        if dir_fd is not None:
            _drop_archive(entry, dir_fd)
        os.fsync(self.fd)
        if dir_fd is not None:
            os.fsync(dir_fd)
        self.record("undone", seq=entry.seq)
        return f"{entry.path}: unfinished step undone"

    def _restore_tmp(self, entry: Entry) -> str:
        return f".autofix-{self.token}-{entry.seq}.restore"

    def _settle_restore(self, entry: Entry, dir_fd: int) -> str | None:
        _unlink(self._restore_tmp(entry), dir_fd)
        slot, final = _lstat(entry.slot, self.fd), _lstat(entry.name, dir_fd)
        if slot is None or _same_file(slot, final):
            if slot is not None:
                _unlink(entry.slot, self.fd)
                os.fsync(self.fd)
            self.record("restored", seq=entry.seq)
            return f"{entry.path}: restore finished"
        return None  # still in the slot: a restore run moves it back

    # -- moving back -----------------------------------------------------------------------

    def restore_entry(self, entry: Entry, dir_fd: int) -> str | None:
        """Move one file back; None when done, else why it stays in the slot."""
        resumed = entry.state == "restoring"
        self.record("restoring", seq=entry.seq)
        _unlink(self._restore_tmp(entry), dir_fd)
        _drop_archive(entry, dir_fd)
        slot, final = _lstat(entry.slot, self.fd), _lstat(entry.name, dir_fd)
        if slot is None:
            if final is None or not resumed:
                return f"{entry.path}: missing from the quarantine"
        elif final is not None:
            if _same_file(slot, final) or (
                entry.sha256 is not None
                and final.st_size == slot.st_size
                and stat.S_ISREG(final.st_mode)
                and sha256_of(dir_fd, entry.name) == entry.sha256
            ):
                _unlink(entry.slot, self.fd)  # the restore got this far before
            else:
                return f"{entry.path}: exists again; kept in {self.path}"
        elif not self._transfer_out(entry, dir_fd):
            return f"{entry.path}: exists again; kept in {self.path}"
        fd = os.open(entry.name, FILE_FLAGS, dir_fd=dir_fd)
        try:
            self._set_meta(fd, entry)
        finally:
            os.close(fd)
        if entry.sha256 is not None and sha256_of(dir_fd, entry.name) != entry.sha256:
            return f"{entry.path}: restored bytes differ"
        os.fsync(dir_fd)
        os.fsync(self.fd)
        self.record("restored", seq=entry.seq)
        return None

    def _set_meta(self, fd: int, entry: Entry) -> None:
        if entry.uid >= 0:
            with suppress(PermissionError):
                os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, entry.mode)
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))

    def _transfer_out(self, entry: Entry, dir_fd: int) -> bool:
        """Slot → original name, never over an existing file; False if one appeared."""
        try:
            os.link(entry.slot, entry.name, src_dir_fd=self.fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        else:
            os.fsync(dir_fd)
            os.unlink(entry.slot, dir_fd=self.fd)
            return True
        tmp = self._restore_tmp(entry)
        source = os.open(entry.slot, FILE_FLAGS, dir_fd=self.fd)
        try:
            target = os.open(tmp, _NEW, 0o600, dir_fd=dir_fd)
            try:
                _copy(source, target)
                self._set_meta(target, entry)
                os.fsync(target)
            finally:
                os.close(target)
        finally:
            os.close(source)
        try:
            os.link(tmp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            _unlink(tmp, dir_fd)
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            if _lstat(entry.name, dir_fd) is not None:
                _unlink(tmp, dir_fd)
                return False
            os.rename(tmp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        _unlink(tmp, dir_fd)
        os.fsync(dir_fd)
        os.unlink(entry.slot, dir_fd=self.fd)
        return True


def new_slot(base: Path, fix_id: int, now: datetime) -> Path:
    """A quarantine directory no other fix has or will have (``mkdir`` fails if it exists).

    Fix ids restart with a new or restored store, and two stores may share ``base``:
    the name carries the time and 48 random bits, and is created, never reused.
    """
    try:
        base.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            path = base / f"fix-{fix_id}-{now:%Y%m%dT%H%M%S}-{secrets.token_hex(6)}"
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            return path
    except OSError as exc:
        raise ActionError(f"{base}: cannot make a quarantine slot: {exc.strerror}") from None
    raise ActionError(f"{base}: no free quarantine slot")  # pragma: no cover - 48 random bits


def _drop_archive(entry: Entry, dir_fd: int) -> None:
    """Remove the ``.gz`` a compress step made — that very file, not one made since."""
    if (
        entry.archive
        and entry.archive_ino is not None
        and _is(_lstat(entry.archive, dir_fd), entry.archive_ino, entry.dev)
    ):
        _unlink(entry.archive, dir_fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _entry_dir(root: Path, entry: Entry) -> Iterator[int | None]:
    """The directory the entry's file came from, or None when it is gone (or now a link)."""
    with ExitStack() as stack:
        try:
            fd: int | None = stack.enter_context(open_dir(root, entry.parent))
        except (ActionError, RefusedError):
            fd = None
        yield fd


# -- what rollback, recovery and the purge job call --------------------------------------


def restore(slot: Path, root: Path) -> str:
    """Settle, then move every quarantined file back (newest first), byte for byte."""
    if not slot.is_dir():
        raise ActionError(
            f"{slot}: the quarantine is gone (purged after AUTOFIX_QUARANTINE_TTL, or "
            "removed); nothing to restore"
        )
    if not (slot / JOURNAL).exists() and (slot / LEGACY_MANIFEST).exists():
        upgrade_legacy(slot)
    try:
        handle = Slot(slot)
    except OSError as exc:
        raise ActionError(f"{slot}: cannot open: {exc.strerror}") from None
    with handle as q:
        if os.path.realpath(q.journal.root) != os.path.realpath(root):
            raise ActionError(f"{slot}: belongs to {q.journal.root}, not {root}; left alone")
        restored, problems = 0, []
        for entry in reversed(q.journal.entries):
            if entry.state in ("undone", "restored"):
                continue
            with _entry_dir(root, entry) as dir_fd:
                if dir_fd is None:
                    problems.append(f"{entry.path}: its directory is gone; kept in {slot}")
                    continue
                if entry.state == "intent":
                    q.settle_entry(entry, dir_fd)
                    if entry.state == "undone":
                        continue
                problem = q.restore_entry(entry, dir_fd)
            if problem:
                problems.append(problem)
            else:
                restored += 1
    if problems:
        raise ActionError(f"restored {restored} file(s); " + "; ".join(problems))
    return f"restored {restored} file(s) from {slot}"


def settle(slot: Path) -> list[str]:
    """Finish or undo every unfinished step of one slot (after a crash); what was done."""
    if not (slot / JOURNAL).exists():
        return []
    try:
        handle = Slot(slot)
    except SlotBusyError:
        return []  # a live process owns it
    except OSError as exc:
        raise QuarantineFormatError(f"{slot}: cannot open: {exc.strerror}") from None
    done: list[str] = []
    with handle as q:
        for entry in q.journal.entries:
            if entry.state not in ("intent", "restoring"):
                continue
            with _entry_dir(q.journal.root, entry) as dir_fd:
                what = q.settle_entry(entry, dir_fd)
            if what:
                done.append(what)
    return done


@dataclass(frozen=True)
class SweepResult:
    """What a pass over a quarantine base did: slots settled and purged, slots skipped."""

    settled: list[str] = field(default_factory=list)
    purged: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def slots(base: Path) -> list[Path]:
    """The slot directories of a base (``fix-*``, not symlinks)."""
    if not base.is_dir():
        return []
    return sorted(p for p in base.glob("fix-*") if p.is_dir() and not p.is_symlink())


def sweep(base: Path, ttl: timedelta, now: datetime) -> SweepResult:
    """Settle unfinished steps, then purge slots made more than ``ttl`` before ``now``.

    A slot that cannot be read is skipped, logged and reported; the rest go on.
    """
    result = SweepResult()
    for slot in slots(base):
        try:
            result.settled.extend(settle(slot))
            if moved_at(slot) + ttl <= now:
                _purge(slot)
                result.purged.append(slot)
        except (AutofixError, OSError) as exc:
            reason = str(exc) if isinstance(exc, AutofixError) else f"{slot}: {exc.strerror}"
            log.warning("quarantine slot skipped: %s", reason)
            result.skipped.append(reason)
    return result


def _purge(slot: Path) -> None:
    journal = slot / JOURNAL
    if journal.exists():
        fd = os.open(journal, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ActionError(f"{slot}: in use by another process; not purged") from None
            shutil.rmtree(slot)
        finally:
            os.close(fd)
    else:
        shutil.rmtree(slot)
