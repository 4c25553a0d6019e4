"""The quarantine journal: what a slot's ``journal.jsonl`` says, read back.

Records, one JSON object per line (``seq`` numbers the steps)::

    {"op": "begin", "root", "fix_id", "moved_at", "action", "version": 1}
    {"op": "intent", "seq", "kind": "move"|"compress", "path", "slot", "ino", "dev",
     "size", "mtime_ns", "mode", "uid", "gid"[, "archive", "tmp"]}
    {"op": "archived", "seq", "ino"}     compress: the .gz is complete (still a temp name)
    {"op": "moved", "seq", "sha256"}     the original is in the slot
    {"op": "undone", "seq"}              an unfinished step was undone; nothing moved
    {"op": "restoring", "seq"} / {"op": "restored", "seq"}

Slots written before the journal (``manifest.json``) are read too, and upgraded to a
journal when they are restored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autofix.actions._paths import safe_parts
from autofix.errors import ActionError, AutofixError

JOURNAL = "journal.jsonl"
JOURNAL_TMP = f".{JOURNAL}.tmp"
LEGACY_MANIFEST = "manifest.json"  # slots written by autofix before the journal
VERSION = 1


class QuarantineFormatError(ActionError):
    """A slot's journal or manifest cannot be read; the slot is skipped and reported."""


def _naive_utc(text: Any) -> datetime:
    if not isinstance(text, str):
        raise QuarantineFormatError(f"moved_at is not a time: {text!r}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise QuarantineFormatError(f"moved_at is not a time: {text!r}") from None
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


@dataclass
class Entry:
    """One step as the journal tells it: what was (to be) moved and how far it got."""

    seq: int
    kind: str
    path: str
    slot: str
    ino: int
    dev: int
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    archive: str | None = None
    tmp: str | None = None
    archive_ino: int | None = None
    sha256: str | None = None
    state: str = "intent"  # → moved | undone; moved → restoring → restored

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> tuple[str, ...]:
        return safe_parts(self.path)[:-1]


@dataclass
class Journal:
    """A slot's journal, read: the header and the entries with their state."""

    root: Path
    fix_id: int
    moved_at: datetime
    entries: list[Entry] = field(default_factory=list)

    def entry(self, seq: int) -> Entry:
        return self.entries[seq]


_INTENT_KEYS = ("seq", "kind", "path", "slot", "ino", "dev", "size", "mtime_ns", "mode")


def read_journal(slot: Path) -> Journal:
    """Parse ``slot/journal.jsonl``; QuarantineFormatError names what is wrong with it."""
    try:
        raw = (slot / JOURNAL).read_bytes()
    except FileNotFoundError:
        raise QuarantineFormatError(f"{slot}: no {JOURNAL}") from None
    except OSError as exc:
        raise QuarantineFormatError(f"{slot}: cannot read {JOURNAL}: {exc.strerror}") from None
    lines = raw.split(b"\n")
    # Each record is one write(2); only a torn last line (power loss) can be incomplete.
    complete = lines[:-1]
    journal: Journal | None = None
    for number, line in enumerate(complete, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            journal = apply_record(journal, record)
        except KeyError as exc:
            raise QuarantineFormatError(
                f"{slot / JOURNAL}: line {number}: missing field {exc}"
            ) from None
        except (ValueError, TypeError, IndexError, AutofixError) as exc:
            raise QuarantineFormatError(f"{slot / JOURNAL}: line {number}: {exc}") from None
    if journal is None:
        raise QuarantineFormatError(f"{slot / JOURNAL}: empty")
    return journal


def apply_record(journal: Journal | None, record: dict[str, Any]) -> Journal:
    op = record["op"]
    if op == "begin":
        if journal is not None:
            raise ValueError("a second begin record")
        if not isinstance(record["root"], str) or not isinstance(record["fix_id"], int):
            raise ValueError("begin needs root (text) and fix_id (a number)")
        return Journal(Path(record["root"]), record["fix_id"], _naive_utc(record["moved_at"]))
    if journal is None:
        raise ValueError("no begin record first")
    if op == "intent":
        if record["seq"] != len(journal.entries):
            raise ValueError(f"step {record['seq']} out of order")
        values = {k: record[k] for k in _INTENT_KEYS}
        if not all(isinstance(values[k], int) for k in _INTENT_KEYS if k not in ("kind", "path")):
            raise ValueError("intent fields must be numbers")
        if values["kind"] not in ("move", "compress") or not isinstance(values["path"], str):
            raise ValueError("intent kind must be move or compress, path text")
        if not safe_parts(values["path"]):
            raise ValueError("intent path is empty")
        number = values.pop("slot")
        entry = Entry(
            **values,
            slot=f"{number:06d}",
            uid=int(record.get("uid", -1)),
            gid=int(record.get("gid", -1)),
            archive=record.get("archive"),
            tmp=record.get("tmp"),
        )
        for name in (entry.archive, entry.tmp):
            if name is not None and (not isinstance(name, str) or "/" in name or not name):
                raise ValueError("archive and tmp are plain file names")
        journal.entries.append(entry)
        return journal
    entry = journal.entry(int(record["seq"]))
    if op == "archived":
        entry.archive_ino = int(record["ino"])
    elif op == "moved":
        entry.state, entry.sha256 = "moved", str(record["sha256"])
    elif op in ("undone", "restoring", "restored"):
        entry.state = op
    else:
        raise ValueError(f"unknown record {op!r}")
    return journal


def moved_at(slot: Path) -> datetime:
    """When the slot was made: from its journal, a legacy manifest, or (empty) its mtime."""
    if (slot / JOURNAL).exists():
        return read_journal(slot).moved_at
    for name in (LEGACY_MANIFEST, f"restored-{LEGACY_MANIFEST}"):
        file = slot / name
        if file.exists():
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (ValueError, OSError) as exc:
                raise QuarantineFormatError(f"{file}: not JSON ({exc})") from None
            if not isinstance(data, dict):
                raise QuarantineFormatError(f"{file}: not a JSON object")
            try:
                return _naive_utc(data.get("moved_at"))
            except QuarantineFormatError as exc:
                raise QuarantineFormatError(f"{file}: {exc}") from None
    if any(p.name != JOURNAL_TMP for p in slot.iterdir()):
        raise QuarantineFormatError(f"{slot}: neither {JOURNAL} nor {LEGACY_MANIFEST}")
    # A slot made by a process that died before its first record.
    return datetime.fromtimestamp(slot.stat().st_mtime, UTC).replace(tzinfo=None)


def upgrade_legacy(slot: Path) -> None:
    """Turn a slot from before the journal (``manifest.json``) into a journaled one."""
    file = slot / LEGACY_MANIFEST
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        root, fix_id, entries = str(data["root"]), int(data["fix_id"]), list(data["entries"])
        moment = _naive_utc(data["moved_at"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise QuarantineFormatError(f"{file}: cannot be read ({exc})") from None
    lines: list[dict[str, Any]] = [
        {
            "op": "begin",
            "version": VERSION,
            "root": root,
            "fix_id": fix_id,
            "moved_at": moment.isoformat(),
        }
    ]
    try:
        dev = os.stat(root).st_dev  # archives were made beside the logs
    except OSError:
        dev = -1
    for seq, item in enumerate(entries):
        try:
            intent = {
                "op": "intent",
                "seq": seq,
                "kind": "compress" if item.get("created") else "move",
                "path": str(item["path"]),
                "slot": int(item["slot"]),
                "ino": -1,  # unknown: never taken for the original
                "dev": dev,
                "size": int(item["size"]),
                "mtime_ns": int(item["mtime_ns"]),
                "mode": int(item["mode"]),
            }
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise QuarantineFormatError(f"{file}: entry {seq}: {exc}") from None
        if item.get("created"):
            intent["archive"] = str(item["created"])
        lines.append(intent)
        if item.get("created_ino") is not None:
            lines.append({"op": "archived", "seq": seq, "ino": int(item["created_ino"])})
        lines.append({"op": "moved", "seq": seq, "sha256": str(item["sha256"])})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    tmp = slot / f".{JOURNAL}.tmp"
    tmp.write_text(text)
    os.replace(tmp, slot / JOURNAL)
    file.rename(slot / f"upgraded-{LEGACY_MANIFEST}")
