"""Planning: place needs in time, now or in a maintenance window. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from autofix.config import format_duration
from autofix.gates import Window
from autofix.maintenance.needs import MIN_RUN_NOW, Need, _priority

Placement = Literal["now", "window", "unscheduled"]


@dataclass(frozen=True)
class PlannedTask:
    """A need placed in time: ``now``, in a maintenance ``window``, or ``unscheduled``."""

    need: Need
    window_start: datetime | None
    window_end: datetime | None
    placement: Placement
    reason: str


def window_occurrences(
    windows: Sequence[Window], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The concrete intervals of ``windows`` that overlap [start, end), merged and sorted.

    >>> from autofix.gates import parse_windows
    >>> window_occurrences(parse_windows("daily 23:00-01:00"), datetime(2026, 3, 2, 12),
    ...     datetime(2026, 3, 3, 12))
    [(datetime.datetime(2026, 3, 2, 23, 0), datetime.datetime(2026, 3, 3, 1, 0))]
    """
    spans: list[tuple[datetime, datetime]] = []
    day = start.date() - timedelta(days=1)  # a window wrapping midnight opened yesterday
    while day <= end.date():
        for window in windows:
            if window.day is not None and day.weekday() != window.day:
                continue
            opens = datetime.combine(day, window.start)
            length = (datetime.combine(day, window.end) - opens) % timedelta(days=1)
            closes = opens + (length or timedelta(days=1))  # start == end: a whole day
            if closes > start and opens < end:
                spans.append((opens, closes))
        day += timedelta(days=1)
    merged: list[tuple[datetime, datetime]] = []
    for opens, closes in sorted(spans):
        if merged and opens <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], closes))
        else:
            merged.append((opens, closes))
    return merged


def _fmt(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="minutes")


def plan(
    needs: Sequence[Need],
    windows: Sequence[Window],
    now: datetime,
    horizon: timedelta,
    *,
    booked: Sequence[PlannedTask] = (),
) -> list[PlannedTask]:
    """Place needs in time, most pressing first. Pure.

    Critical and high needs that need no downtime run now (window now .. due_by). The
    others take the first maintenance window that opens before their deadline (and
    before ``now + horizon``) with room for their estimated duration: a window is never
    booked beyond its length, counting the open tasks in ``booked``. A critical need
    with no such window runs now, and says so. A need identical to a ``booked`` task is
    left out; one that cannot be placed comes back ``unscheduled`` with the reason.
    """
    limit = now + horizon
    spans = window_occurrences(windows, now, limit)
    used = dict.fromkeys(spans, 0.0)
    for task in booked:
        span = _span_at(spans, task.window_start)
        if span is not None:
            used[span] += task.need.estimated_s
    taken = {task.need.key for task in booked}
    placed = []
    for need in sorted(needs, key=_priority):
        if need.key in taken:
            continue
        taken.add(need.key)
        placed.append(_place(need, bool(windows), spans, used, now, limit))
    return placed


def _span_at(
    spans: Sequence[tuple[datetime, datetime]], moment: datetime | None
) -> tuple[datetime, datetime] | None:
    if moment is None:
        return None
    return next((s for s in spans if s[0] <= moment < s[1]), None)


def _place(
    need: Need,
    any_window: bool,
    spans: Sequence[tuple[datetime, datetime]],
    used: dict[tuple[datetime, datetime], float],
    now: datetime,
    limit: datetime,
) -> PlannedTask:
    if need.action is None:
        return PlannedTask(need, None, None, "unscheduled", "reported only: no action meets it")
    if not need.downtime and need.urgency in ("critical", "high"):
        return _run_now(need, now, f"runs now: {need.urgency} and needs no downtime")
    deadline = min(need.due_by, limit)
    for span in spans:
        opens, closes = span
        if opens >= deadline:
            break
        start, end = max(opens, now), min(closes, need.due_by)
        if (end - start).total_seconds() - used[span] >= need.estimated_s:
            used[span] += need.estimated_s
            return PlannedTask(
                need, start, end, "window", f"maintenance window {_fmt(opens)} - {_fmt(closes)}"
            )
    room = f"{format_duration(timedelta(seconds=round(need.estimated_s)))} free before"
    if need.urgency == "critical":
        why = f"critical, and no maintenance window has {room} {_fmt(need.due_by)}: runs now"
        return _run_now(need, now, why)
    if not any_window:
        return PlannedTask(need, None, None, "unscheduled", "no maintenance window is configured")
    why = f"no maintenance window has {room} {_fmt(deadline)}"
    return PlannedTask(need, None, None, "unscheduled", why)


def _run_now(need: Need, now: datetime, reason: str) -> PlannedTask:
    return PlannedTask(need, now, max(need.due_by, now + MIN_RUN_NOW), "now", reason)
