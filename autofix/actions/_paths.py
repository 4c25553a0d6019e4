"""Paths below an allowlisted root: relative, no control characters, never via symlinks."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from autofix.errors import ActionError, RefusedError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


def safe_parts(text: str) -> tuple[str, ...]:
    """Split a relative path into components, or raise RefusedError.

    >>> safe_parts("a/./b")
    ('a', 'b')
    """
    if _control(text):
        raise RefusedError("allowlist", f"path {text!r} contains a control character")
    if text.startswith("/"):
        raise RefusedError("allowlist", f"path {text!r} is absolute; give it relative to the root")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if ".." in parts:
        raise RefusedError("allowlist", f"path {text!r} climbs out of the root ('..')")
    return parts


def handles(name: str) -> bool:
    """Whether a file name can be acted on: no control characters (``\\n``, ``\\r``, ESC …)."""
    return not _control(name)


@contextmanager
def open_dir(root: Path, parts: Sequence[str] = ()) -> Iterator[int]:
    """A directory fd for ``root/parts``, each component opened without following links."""
    try:
        fd = os.open(root, DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RefusedError(
                "allowlist", f"{root}: the root is a symlink or not a directory"
            ) from None
        raise ActionError(f"{root}: cannot open: {exc.strerror}") from None
    try:
        for index, part in enumerate(parts):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
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
