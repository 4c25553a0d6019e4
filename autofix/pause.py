"""The global pause: while autofix is paused, the executor applies nothing.

A persisted switch — append-only pause/resume records in the store's ``pause_events``
table, the newest wins — so a restart keeps it, and a pause may end by itself
(``until``). It is not a paused scheduler: every job keeps running (the systemd watchdog
is fed by one of them), rules still decide and their decisions are recorded in shadow
mode (scored after their horizon like any shadow decision), the self-healing loop still
checks; only fixes are held. ``autofix pause`` / ``resume``, ``POST /api/v1/pause``,
``autofix status`` and ``autofix_paused`` on ``/metrics`` show and change it.

>>> from datetime import datetime, timedelta
>>> from autofix.store import MetricStore
>>> store, now = MetricStore(":memory:"), datetime(2026, 1, 1, 12)
>>> pause(store, now, reason="deploy", actor="cli:ann", duration=timedelta(hours=2)).until
datetime.datetime(2026, 1, 1, 14, 0)
>>> current(store, now + timedelta(hours=1)).reason
'deploy'
>>> current(store, now + timedelta(hours=3)) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from autofix.errors import InputError

if TYPE_CHECKING:  # the CLI imports this module for --help: no DuckDB, no pandas
    from autofix.store import MetricStore

#: Longest reason kept (it is shown in status lines and on the dashboard).
REASON_LIMIT = 500


def iso(moment: datetime | None) -> str | None:
    """Naive UTC as ISO 8601 with ``Z`` (the one timestamp style of every ``--json``)."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds") + "Z"


@dataclass(frozen=True)
class Pause:
    """A pause in force: since when, until when (None: until resumed), why, by whom."""

    since: datetime
    until: datetime | None
    reason: str
    actor: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "paused": True,
            "since": iso(self.since),
            "until": iso(self.until),
            "reason": self.reason,
            "by": self.actor,
        }

    def describe(self) -> str:
        """One line: ``paused since … by …, until … : reason``."""
        until = f" until {iso(self.until)}" if self.until is not None else " until resumed"
        return f"paused since {iso(self.since)} by {self.actor}{until}: {self.reason}"


def _pause_from(row: Any) -> Pause:
    ts, _, until, reason, actor = row
    return Pause(ts, until, reason, actor)


def current(store: MetricStore, now: datetime) -> Pause | None:
    """The pause in force at ``now``, or None (never paused, resumed, or expired)."""
    rows = store._run(
        "SELECT ts, paused, until, reason, actor FROM pause_events ORDER BY ts DESC, rowid DESC "
        "LIMIT 1"
    )
    if not rows or not rows[0][1]:
        return None
    found = _pause_from(rows[0])
    if found.until is not None and found.until <= now:
        return None
    return found


def pause(
    store: MetricStore,
    now: datetime,
    *,
    reason: str,
    actor: str,
    duration: timedelta | None = None,
) -> Pause:
    """Pause from ``now`` (for ``duration``, else until resumed); a new pause replaces one
    in force (a longer or shorter window, a new reason)."""
    reason = " ".join(reason.split())
    if not reason:
        raise InputError("pause: give a --reason (it is shown to everyone who looks)")
    if len(reason) > REASON_LIMIT:
        raise InputError(f"pause: the reason is longer than {REASON_LIMIT} characters")
    if duration is not None and duration <= timedelta(0):
        raise InputError("pause: --for must be positive")
    try:
        until = now + duration if duration is not None else None
    except OverflowError:
        raise InputError(f"pause: --for {duration} would end after the year 9999") from None
    with store._write_lock:
        store.execute(
            "INSERT INTO pause_events VALUES (?, true, ?, ?, ?)", [now, until, reason, actor]
        )
    return Pause(now, until, reason, actor)


def resume(store: MetricStore, now: datetime, *, actor: str) -> Pause | None:
    """End the pause in force; returns it (None: nothing was paused, nothing written)."""
    with store._write_lock:
        ended = current(store, now)
        if ended is None:
            return None
        store.execute(
            "INSERT INTO pause_events VALUES (?, false, NULL, ?, ?)", [now, "resumed", actor]
        )
    return ended


__all__ = ["Pause", "current", "iso", "pause", "resume"]
