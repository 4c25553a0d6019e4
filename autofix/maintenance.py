"""Preventive maintenance: needs → a plan in maintenance windows → execution, on time.

Needs come from what autofix already knows: filesystem forecasts (rotate logs and clean
up before a disk fills), log growth, dead tuples and query-latency anomalies of
PostgreSQL targets, and the package manager's list of upgradable security packages.
Each need names the action that meets it, and reading that action's facts and plan is
how the need is confirmed: a no-op plan means nothing to do, so no need. ``plan`` is
pure (needs and windows in, slots out). ``Maintenance`` records tasks in
``maintenance_tasks`` with append-only ``maintenance_events`` and runs due tasks through
the executor, so maintenance passes the same gates and lands in the same audit log as
every other fix.

Task states: ``planned`` → ``started`` → ``executed`` (the fix verified, or had nothing
left to do) | ``failed`` (retried while the window is open); ``cancelled`` (the need
went away before the window); ``missed`` (the window ended without execution).

>>> line = "openssl/jammy-security 3.0.2-0ubuntu1.15 amd64 [upgradable from: 3.0.2-0ubuntu1.12]"
>>> parse_upgradable(line)[0].security
True
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb
import pandas as pd

from autofix.actions.base import Context, Facts, NoOp, Plan, Runner, run_argv
from autofix.actions.registry import ACTIONS
from autofix.audit import FixRecord
from autofix.config import Settings, format_duration
from autofix.errors import ActionError, AutofixError, RefusedError, StoreError
from autofix.executor import Executor, utcnow
from autofix.gates import Window, parse_windows
from autofix.pipeline import CommandTarget, LogDirTarget, Pipeline, PostgresTarget
from autofix.store import MetricStore

log = logging.getLogger(__name__)

NeedKind = Literal["log_rotation", "vacuum", "reindex", "disk_cleanup", "security_patches"]
Urgency = Literal["critical", "high", "normal", "low"]
Placement = Literal["now", "window", "unscheduled"]

URGENCIES: tuple[Urgency, ...] = ("critical", "high", "normal", "low")
TASK_STATES = ("planned", "started", "executed", "failed", "cancelled", "missed")
OPEN_STATES = frozenset({"planned", "started", "failed"})

FS_METRIC = "node_filesystem_avail_bytes"
GROWTH_METRIC = "autofix_dir_growth_bytes_per_day"
LATENCY_METRIC = "probe_query_duration_seconds"
#: Least probability of filling up that makes a disk need (24h: critical, 4d: high).
EXHAUST_PROBABILITY = 0.5
#: Least anomaly score of a target's query latency that makes a reindex need.
REINDEX_SCORE = 0.9
#: Predictions, growth samples and scores older than this are not acted on.
STALE_AFTER = timedelta(hours=24)
#: A task that runs now gets at least this long to run (the job runs hourly by default).
MIN_RUN_NOW = timedelta(hours=1)
#: Without a succeeded fix to learn from, how long each kind of maintenance takes.
DEFAULT_ESTIMATE_S: Mapping[NeedKind, float] = {
    "log_rotation": 60.0,
    "disk_cleanup": 60.0,
    "vacuum": 300.0,
    "reindex": 600.0,
    "security_patches": 900.0,
}
# A failed fix refused by these gates, or only planned (shadow, dry run), is not retried:
# a human said no, the configuration forbids it, or retrying cannot change the answer.
_FINAL_GATES = frozenset({"approval", "allowlist", "params", "mode", "breaker"})
_DONE_FIX_STATES = frozenset({"succeeded", "noop"})


# -- apt -------------------------------------------------------------------------------

_UPGRADABLE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9+.-]*)/(?P<suite>\S+)\s+(?P<version>\S+)\s+(?P<arch>\S+)"
    r"(?:\s+\[upgradable from: (?P<current>[^\]]+)\])?\s*$"
)


@dataclass(frozen=True)
class Package:
    """One upgradable package as ``apt list --upgradable`` shows it."""

    name: str
    suite: str
    version: str
    arch: str = ""
    current: str | None = None

    @property
    def security(self) -> bool:
        return "-security" in self.suite


def parse_upgradable(text: str) -> list[Package]:
    """Packages from apt's output; "Listing...", warnings and notices are skipped."""
    packages = []
    for line in text.splitlines():
        match = _UPGRADABLE.match(line.strip())
        if match:
            packages.append(
                Package(
                    match["name"], match["suite"], match["version"], match["arch"], match["current"]
                )
            )
    return packages


# -- needs -----------------------------------------------------------------------------


def _canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Need:
    """Maintenance something needs, the action that meets it and by when.

    ``action`` is None when nothing may meet it (security updates without a
    ``patch_target``): such a need is reported, never planned nor executed.
    """

    kind: NeedKind
    target: str
    action: str | None
    params: Mapping[str, Any]
    urgency: Urgency
    due_by: datetime
    reason: str
    estimated_s: float
    downtime: bool

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What makes two needs the same task: kind, target, action and params."""
        return (self.kind, self.target, self.action or "", _canonical(self.params))

    def __hash__(self) -> int:  # params is a dict: hash what makes two needs the same
        return hash(self.key)


@dataclass(frozen=True)
class PlannedTask:
    """A need placed in time: ``now``, in a maintenance ``window``, or ``unscheduled``."""

    need: Need
    window_start: datetime | None
    window_end: datetime | None
    placement: Placement
    reason: str


Probe = Callable[[str, Any, Mapping[str, Any]], tuple[Facts, Plan]]


class ActionProbe:
    """Bind an action to a target and read its facts and plan; nothing is applied.

    Raises RefusedError when the target's allowlists forbid the action, ActionError when
    the facts cannot be read.
    """

    def __init__(
        self,
        *,
        runner: Runner = run_argv,
        clock: Callable[[], datetime] = utcnow,
        quarantine_dir: Path = Path("data/quarantine"),
        timeout: float = 60.0,
    ) -> None:
        self.context = Context(
            quarantine_dir=quarantine_dir, timeout=timeout, clock=clock, runner=runner
        )

    def __call__(self, action: str, target: Any, params: Mapping[str, Any]) -> tuple[Facts, Plan]:
        bound = ACTIONS[action].bind(target, params, self.context)
        facts = bound.facts()
        return facts, bound.plan(facts)


def _labels(text: Any) -> dict[str, str]:
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _with_label(frame: pd.DataFrame, key: str, value: str | None) -> pd.DataFrame:
    """Rows of ``frame`` whose ``labels`` JSON has ``key`` equal to ``value``."""
    if frame.empty:
        return frame
    return frame[frame["labels"].map(lambda text: _labels(text).get(key) == value).astype(bool)]


def _moment(value: Any) -> datetime | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).to_pydatetime()


def _mount_of(path: Path, mountpoints: Sequence[str]) -> str | None:
    """The longest mountpoint that ``path`` (symlinks resolved) lies under."""
    real = os.path.realpath(path)
    under = [m for m in mountpoints if real == m or real.startswith(m.rstrip("/") + "/")]
    return max(under, key=len) if under else None


def _allowed(target: Any, action: str, *, explicitly: bool = False) -> bool:
    allowed = getattr(target, "actions", None)
    return (allowed is None and not explicitly) or (allowed is not None and action in allowed)


class _Deriver:
    """One pass over the sources; ``unknown`` holds (kind, target) pairs it could not read."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: MetricStore,
        now: datetime,
        runner: Runner,
        probe: Probe,
        host: str | None,
        horizon: timedelta,
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.now = now
        self.runner = runner
        self.probe = probe
        self.host = host
        self.horizon = horizon
        self.needs: dict[tuple[str, str, str, str], Need] = {}
        self.unknown: set[tuple[str, str]] = set()
        self.estimates = self._estimates()

    def run(self) -> list[Need]:
        sources: tuple[tuple[tuple[NeedKind, ...], Callable[[], None]], ...] = (
            (("disk_cleanup", "log_rotation"), self._filesystems),
            (("log_rotation",), self._log_growth),
            (("vacuum",), self._dead_tuples),
            (("reindex",), self._slow_queries),
            (("security_patches",), self._security_updates),
        )
        for kinds, source in sources:
            try:
                source()
            except AutofixError as exc:
                log.warning("maintenance: %s: %s", source.__name__.strip("_"), exc)
                self.unknown.update((kind, "*") for kind in kinds)
        return sorted(self.needs.values(), key=_priority)

    # -- helpers -----------------------------------------------------------------------

    def _estimates(self) -> dict[tuple[str, str], float]:
        frame = self.store.query(
            """SELECT f.action, f.target, median(e.duration_ms) / 1000.0 AS seconds
               FROM fix_events e JOIN fixes f USING (fix_id)
               WHERE e.state = 'succeeded' AND e.duration_ms IS NOT NULL GROUP BY ALL"""
        )
        return {(str(a), str(t)): float(s) for a, t, s in frame.itertuples(index=False)}

    def _latest(self, frame: pd.DataFrame, target: str) -> pd.Series | None:
        """The newest row of ``frame`` about ``target`` (by its ``target`` label)."""
        mine = _with_label(frame, "target", target)
        return None if mine.empty else mine.sort_values("ts").iloc[-1]

    def _mine(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame if self.host is None else frame[frame["host"] == self.host]

    def _read(
        self, kind: NeedKind, action: str, target: Any, params: Mapping[str, Any]
    ) -> tuple[Facts, Plan] | None:
        """(facts, plan), or None when the target forbids the action or cannot be read."""
        try:
            return self.probe(action, target, params)
        except RefusedError as exc:
            log.debug("maintenance: %s on %s not allowed: %s", action, target.name, exc)
        except AutofixError as exc:
            log.warning("maintenance: %s on %s: reading facts failed: %s", action, target.name, exc)
            self.unknown.add((kind, target.name))
        return None

    def _add(
        self,
        kind: NeedKind,
        target: str,
        action: str | None,
        params: Mapping[str, Any],
        urgency: Urgency,
        due_by: datetime,
        reason: str,
        downtime: bool | None = None,
    ) -> None:
        estimate = self.estimates.get((action or "", target), DEFAULT_ESTIMATE_S[kind])
        if downtime is None:
            downtime = bool(action and ACTIONS[action].downtime)
        need = Need(kind, target, action, dict(params), urgency, due_by, reason, estimate, downtime)
        same = self.needs.get(need.key)
        if same is not None:  # two sources, one task: the more pressing one decides
            first, second = sorted((same, need), key=_priority)
            need = dataclasses.replace(first, reason=f"{first.reason}; {second.reason}")
        self.needs[need.key] = need

    def _confirm(self, kind: NeedKind, action: str, target: Any, params: Mapping[str, Any]) -> bool:
        read = self._read(kind, action, target, params)
        return read is not None and not isinstance(read[1], NoOp)

    def _due(self, within: timedelta, eta: datetime | None = None) -> datetime:
        due = self.now + within if eta is None else min(eta, self.now + within)
        return max(due, self.now + MIN_RUN_NOW)

    # -- sources -----------------------------------------------------------------------

    def _logdirs(self) -> Iterator[LogDirTarget]:
        return (t for t in self.pipeline.targets if isinstance(t, LogDirTarget))

    def _postgres(self) -> Iterator[PostgresTarget]:
        return (t for t in self.pipeline.targets if isinstance(t, PostgresTarget) and t.tables)

    def _filesystems(self) -> None:
        targets = list(self._logdirs())
        if not targets:
            return
        series = self._mine(
            self.store.query("SELECT host, labels FROM series WHERE metric = ?", [FS_METRIC])
        )
        mountpoints = sorted({m for t in series["labels"] if (m := _labels(t).get("mountpoint"))})
        predictions = self._mine(self.store.latest_predictions())
        predictions = predictions[
            (predictions["metric"] == FS_METRIC)
            & (predictions["made_at"] >= self.now - STALE_AFTER)
        ]
        for target in targets:
            mount = _mount_of(target.path, mountpoints)
            if mount is None:
                continue
            rows = _with_label(predictions, "mountpoint", mount)
            if rows.empty:
                continue
            row = rows.sort_values(["p_24h", "p_4d"]).iloc[-1]
            p24, p4d, eta = float(row["p_24h"]), float(row["p_4d"]), _moment(row["eta"])
            urgency: Urgency
            if p24 >= EXHAUST_PROBABILITY:
                urgency, due = "critical", self._due(timedelta(hours=24), eta)
            elif p4d >= EXHAUST_PROBABILITY:
                urgency, due = "high", self._due(timedelta(days=4), eta)
            else:
                continue
            when = f", ETA {eta:%Y-%m-%d %H:%M}" if eta is not None else ""
            why = f"{mount} predicted full: P(24h)={p24:.2f}, P(4d)={p4d:.2f}{when}"
            if _allowed(target, "files.rotate_logs") and self._confirm(
                "log_rotation", "files.rotate_logs", target, {}
            ):
                self._add("log_rotation", target.name, "files.rotate_logs", {}, urgency, due, why)
            # clean_temp moves every old file: only where the target opted in explicitly.
            if _allowed(target, "files.clean_temp", explicitly=True) and self._confirm(
                "disk_cleanup", "files.clean_temp", target, {}
            ):
                self._add("disk_cleanup", target.name, "files.clean_temp", {}, urgency, due, why)

    def _log_growth(self) -> None:
        targets = list(self._logdirs())
        if not targets:
            return
        frame = self._mine(
            self.store.query(
                """SELECT s.host, s.labels, max(x.ts) AS ts, arg_max(x.value, x.ts) AS value
                   FROM samples x JOIN series s USING (series_id)
                   WHERE s.metric = ? AND x.ts <= ? AND x.ts >= ? GROUP BY ALL""",
                [GROWTH_METRIC, self.now, self.now - STALE_AFTER],
            )
        )
        limit = self.pipeline.maintenance.log_growth_per_day
        for target in targets:
            row = self._latest(frame, target.name)
            if row is None or float(row["value"]) <= limit:
                continue
            growth = float(row["value"])
            urgency: Urgency = "high" if growth >= 10 * limit else "low"
            due = self._due(timedelta(days=1) if urgency == "high" else self.horizon)
            why = f"logs grow {growth / 1e6:,.0f} MB/day (limit {limit / 1e6:,.0f} MB/day)"
            if _allowed(target, "files.rotate_logs") and self._confirm(
                "log_rotation", "files.rotate_logs", target, {}
            ):
                self._add("log_rotation", target.name, "files.rotate_logs", {}, urgency, due, why)

    def _dead_tuples(self) -> None:
        limit = self.pipeline.maintenance.dead_tuple_ratio
        for target in self._postgres():
            if not _allowed(target, "postgres.vacuum"):
                continue
            for table in target.tables:
                read = self._read("vacuum", "postgres.vacuum", target, {"table": table})
                if read is None or isinstance(read[1], NoOp):
                    continue
                dead, live = int(read[0]["dead_tuples"]), int(read[0]["live_tuples"])
                ratio = dead / max(live, 1)
                if ratio <= limit:
                    continue
                urgency: Urgency = "high" if ratio >= 1 else "normal"
                due = self._due(timedelta(days=1) if urgency == "high" else self.horizon)
                why = f"{table}: {dead} dead / {live} live tuples ({ratio:.2f} > {limit:g})"
                self._add(
                    "vacuum", target.name, "postgres.vacuum", {"table": table}, urgency, due, why
                )

    def _slow_queries(self) -> None:
        targets = [t for t in self._postgres() if _allowed(t, "postgres.reindex")]
        if not targets:
            return
        scores = self._mine(
            self.store.query(
                """SELECT s.host, s.labels, a.ts, a.score FROM anomaly_scores a
                   JOIN series s USING (series_id)
                   WHERE s.metric = ? AND a.ts <= ? AND a.ts >= ?
                   QUALIFY row_number() OVER (
                       PARTITION BY a.series_id ORDER BY a.ts DESC, a.made_at DESC) = 1""",
                [LATENCY_METRIC, self.now, self.now - STALE_AFTER],
            )
        )
        for target in targets:
            row = self._latest(scores, target.name)
            if row is None or float(row["score"]) < REINDEX_SCORE:
                continue
            why = (
                f"query latency anomaly score {float(row['score']):.2f} "
                f"at {_moment(row['ts']):%Y-%m-%d %H:%M}"
            )
            for table in target.tables:
                params = {"table": table}
                if self._confirm("reindex", "postgres.reindex", target, params):
                    due = self._due(self.horizon)
                    self._add(
                        "reindex", target.name, "postgres.reindex", params, "normal", due, why
                    )

    def _security_updates(self) -> None:
        spec = self.pipeline.maintenance
        try:
            done = self.runner(spec.upgradable_argv, 120.0)
        except ActionError as exc:  # no apt on this host: say so quietly, every hour
            log.info("maintenance: cannot list upgradable packages: %s", exc)
            self.unknown.add(("security_patches", "*"))
            return
        if done.returncode != 0:
            raise AutofixError(
                f"{spec.upgradable_argv[0]} exited {done.returncode}: {done.stderr.strip()[-200:]}"
            )
        packages = parse_upgradable(done.stdout)
        security = [p for p in packages if p.security]
        if not security:
            return
        shown = ", ".join(f"{p.name} {p.version}" for p in security[:5])
        more = f" (+{len(security) - 5} more)" if len(security) > 5 else ""
        why = f"{len(security)} security update(s): {shown}{more}"
        if len(packages) > len(security):
            why += f"; {len(packages) - len(security)} other upgradable"
        due = self._due(self.horizon)
        name = spec.patch_target
        target = self.pipeline.target(name) if name is not None else None
        if not isinstance(target, CommandTarget):
            where = self.host or "localhost"
            why += "; reported only: no maintenance.patch_target installs them"
            self._add("security_patches", where, None, {}, "high", due, why, downtime=True)
            return
        try:
            _, steps = self.probe("command.run", target, {})
        except RefusedError as exc:
            why += f"; reported only: {target.name} refuses: {exc.reason}"
            self._add("security_patches", target.name, None, {}, "high", due, why, downtime=True)
            return
        except AutofixError as exc:
            log.warning("maintenance: patch target %s: %s", target.name, exc)
            self.unknown.add(("security_patches", target.name))
            return
        if isinstance(steps, NoOp):
            return
        self._add(
            "security_patches", target.name, "command.run", {}, "high", due, why, downtime=True
        )


def _priority(need: Need) -> tuple[int, datetime, str, str, tuple[str, str, str, str]]:
    return (URGENCIES.index(need.urgency), need.due_by, need.kind, need.target, need.key)


def derive_needs(
    pipeline: Pipeline,
    store: MetricStore,
    now: datetime,
    *,
    runner: Runner = run_argv,
    facts: Probe | None = None,
    host: str | None = None,
    horizon: timedelta = timedelta(days=7),
) -> list[Need]:
    """Maintenance needs from predictions, health signals and the package manager, most
    pressing first.

    ``facts`` reads an action's facts and plan (default: ``ActionProbe``, which binds the
    real action); ``host`` limits the store's series to that host's; needs without a
    deadline of their own are due within ``horizon``. A source that cannot be read is
    logged and skipped: one unreachable database never hides the other needs.
    """
    return _derive(pipeline, store, now, runner, facts, host, horizon)[0]


def _derive(
    pipeline: Pipeline,
    store: MetricStore,
    now: datetime,
    runner: Runner,
    facts: Probe | None,
    host: str | None,
    horizon: timedelta,
) -> tuple[list[Need], set[tuple[str, str]]]:
    probe = facts or ActionProbe(runner=runner, clock=lambda: now)
    deriver = _Deriver(pipeline, store, now, runner, probe, host, horizon)
    return deriver.run(), deriver.unknown


# -- planning ----------------------------------------------------------------------------


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


# -- recording and executing -------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


@dataclass(frozen=True)
class _Task:
    """A maintenance task as the tables show it now."""

    task_id: int
    created_at: datetime
    need: Need
    window_start: datetime
    window_end: datetime
    state: str
    state_reason: str | None
    fix_id: int | None
    updated_at: datetime

    def booked(self) -> PlannedTask:
        return PlannedTask(self.need, self.window_start, self.window_end, "window", "")

    def as_dict(self) -> dict[str, Any]:
        return _as_row(self.need, self.state, self.state_reason, self)


def _as_row(
    need: Need, state: str, state_reason: str | None, task: _Task | None = None
) -> dict[str, Any]:
    """A task (or an unscheduled need, without ``task``) as the CLI and the API show it."""
    return {
        "task_id": None if task is None else task.task_id,
        "need": need.kind,
        "target": need.target,
        "action": need.action,
        "params": dict(need.params),
        "urgency": need.urgency,
        "state": state,
        "due_by": _iso(need.due_by),
        "window_start": None if task is None else _iso(task.window_start),
        "window_end": None if task is None else _iso(task.window_end),
        "downtime": need.downtime,
        "estimated_s": need.estimated_s,
        "reason": need.reason,
        "state_reason": state_reason,
        "fix_id": None if task is None else task.fix_id,
        "created_at": None if task is None else _iso(task.created_at),
        "updated_at": None if task is None else _iso(task.updated_at),
    }


_TASKS_SQL = """
    WITH ev AS (
        SELECT task_id, ts, state, reason,
               row_number() OVER (PARTITION BY task_id ORDER BY ts DESC, rowid DESC) AS rn,
               last_value(fix_id IGNORE NULLS) OVER (
                   PARTITION BY task_id ORDER BY ts, rowid
                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS fix_id
        FROM maintenance_events)
    SELECT t.task_id, t.created_at, t.window_start, t.window_end, ev.state, ev.reason,
           ev.fix_id, ev.ts, t.need, t.target, t.action, t.params, t.urgency, t.due_by,
           t.reason, t.estimated_s, t.downtime
    FROM maintenance_tasks t JOIN ev ON ev.task_id = t.task_id AND ev.rn = 1
    WHERE {where}
    ORDER BY t.task_id
"""


@dataclass(frozen=True)
class PlanReport:
    """What one planning pass did (``record_plan``)."""

    planned: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    unscheduled: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """Every task and need it touched: new, kept, unscheduled, cancelled, missed."""
        return [*self.planned, *self.kept, *self.unscheduled, *self.cancelled, *self.missed]


class Maintenance:
    """Derive, plan, record and execute preventive maintenance for one pipeline.

    Windows are the pipeline's ``maintenance.windows``, else AUTOFIX_FIX_MAINTENANCE_WINDOWS;
    tasks are planned up to AUTOFIX_MAINTENANCE_HORIZON ahead. Fixes run through
    ``executor`` (built from the same store, pipeline and settings when not given).
    """

    def __init__(
        self,
        store: MetricStore,
        pipeline: Pipeline,
        settings: Settings,
        executor: Executor | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        runner: Runner = run_argv,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.settings = settings
        self.clock = clock
        self.runner = runner
        self.executor = executor or Executor(store, pipeline, settings, clock=clock, runner=runner)
        spec = pipeline.maintenance.windows
        self.windows = parse_windows(spec if spec is not None else settings.fix_maintenance_windows)

    # -- public verbs ------------------------------------------------------------------

    def derive(self, now: datetime | None = None) -> list[Need]:
        """The current needs (nothing is recorded)."""
        return self._derive(now or self.clock())[0]

    def plan_and_record(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Derive, plan and record; the tasks planned by this pass (see ``record_plan``)."""
        return self.record_plan(now).planned

    def record_plan(self, now: datetime | None = None) -> PlanReport:
        """Derive needs, plan them and record new tasks with a ``planned`` event.

        Open tasks whose window ended become ``missed``; open tasks whose need went away
        before their window opened become ``cancelled`` (not when the source of that need
        could not be read this time), and so do those whose window now opens after the
        need's deadline (it grew more pressing: it is planned again). Otherwise a need
        with an identical open task is kept as is.
        """
        now = now or self.clock()
        report = PlanReport(missed=self._sweep(now))
        needs, unknown = self._derive(now)
        current = {need.key: need for need in needs}
        booked = []
        for task in self._load(open_only=True):
            need, fresh = task.need, current.get(task.need.key)
            why = None
            if fresh is None and not {(need.kind, need.target), (need.kind, "*")} & unknown:
                why = "the need went away before its window"
            elif fresh is not None and task.window_start >= fresh.due_by:
                # Grown more pressing (a disk now fills sooner): the booked slot is too late.
                why = f"superseded: now {fresh.urgency}, due by {_iso(fresh.due_by)}"
            if why is not None and task.state != "started" and now < task.window_start:
                self._event(task.task_id, "cancelled", None, why)
                report.cancelled.append(self._get(task.task_id).as_dict())
                continue
            booked.append(task.booked())
            if need.key in current:
                report.kept.append(task.as_dict())
        horizon = self.settings.maintenance_horizon
        for placed in plan(needs, self.windows, now, horizon, booked=booked):
            if placed.window_start is None or placed.window_end is None:
                if placed.need.action is not None:
                    log.warning(
                        "maintenance: %s on %s unscheduled: %s",
                        placed.need.kind,
                        placed.need.target,
                        placed.reason,
                    )
                report.unscheduled.append(_as_row(placed.need, "unscheduled", placed.reason))
                continue
            task_id = self._insert(placed)
            report.planned.append(self._get(task_id).as_dict())
        return report

    def execute_due(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Run the tasks whose window is open now; mark the ones whose window ended missed.

        Each run goes through ``executor.run`` (gates, plan, apply, verify, rollback) as
        ``requested_by="maintenance"`` with ``decision_id="maintenance:<task_id>"``. A
        fix waiting for approval keeps the task ``started``; its outcome is picked up by
        a later call. Returns every task whose state changed.
        """
        now = now or self.clock()
        changed = self._sweep(now)
        tasks = sorted(self._load(open_only=True), key=lambda t: _priority(t.need))
        for task in tasks:
            if not task.window_start <= now < task.window_end:
                continue
            if task.state == "started" and task.fix_id is not None:
                continue  # its fix waits for approval
            if task.state == "failed" and not self._retryable(task):
                continue
            changed.append(self._execute(task))
        return changed

    def tasks(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every task with its current state (optionally only one state), oldest first."""
        return [task.as_dict() for task in self._load(state=state)]

    # -- internals ---------------------------------------------------------------------

    def _derive(self, now: datetime) -> tuple[list[Need], set[tuple[str, str]]]:
        probe = ActionProbe(
            runner=self.runner,
            clock=lambda: now,
            quarantine_dir=self.settings.quarantine_dir,
            timeout=self.settings.fix_timeout.total_seconds(),
        )
        return _derive(
            self.pipeline,
            self.store,
            now,
            self.runner,
            probe,
            self.settings.hostname,
            self.settings.maintenance_horizon,
        )

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self.store._write_lock:
                return self.store._run(sql, list(params))
        except duckdb.Error as exc:
            raise StoreError(f"{self.store.path}: maintenance: {exc}") from exc

    def _insert(self, placed: PlannedTask) -> int:
        need = placed.need
        try:
            with self.store.transaction():
                rows = self.store._run(
                    """INSERT INTO maintenance_tasks (task_id, created_at, need, target, action,
                           params, urgency, reason, estimated_s, downtime, due_by,
                           window_start, window_end)
                       VALUES (nextval('maintenance_id_seq'), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       RETURNING task_id""",
                    [
                        self.clock(),
                        need.kind,
                        need.target,
                        need.action,
                        _canonical(need.params),
                        need.urgency,
                        need.reason,
                        need.estimated_s,
                        need.downtime,
                        need.due_by,
                        placed.window_start,
                        placed.window_end,
                    ],
                )
                task_id = int(rows[0][0])
                self.store._run(
                    "INSERT INTO maintenance_events VALUES (?, ?, 'planned', NULL, ?)",
                    [task_id, self.clock(), placed.reason],
                )
        except duckdb.Error as exc:
            raise StoreError(f"{self.store.path}: maintenance: {exc}") from exc
        return task_id

    def _event(
        self,
        task_id: int,
        state: str,
        fix_id: int | None,
        reason: str | None,
        ts: datetime | None = None,
    ) -> None:
        if state not in TASK_STATES:
            raise ValueError(f"unknown maintenance state {state!r}")
        self._exec(
            "INSERT INTO maintenance_events VALUES (?, ?, ?, ?, ?)",
            [task_id, ts or self.clock(), state, fix_id, reason],
        )

    def _load(self, *, open_only: bool = False, state: str | None = None) -> list[_Task]:
        if open_only:
            where, params = "ev.state IN ('planned', 'started', 'failed')", []
        elif state is not None:
            where, params = "ev.state = ?", [state]
        else:
            where, params = "true", []
        rows = self._exec(_TASKS_SQL.format(where=where), params)
        return [_task(row) for row in rows]

    def _get(self, task_id: int) -> _Task:
        rows = self._exec(_TASKS_SQL.format(where="t.task_id = ?"), [task_id])
        return _task(rows[0])

    def _sweep(self, now: datetime) -> list[dict[str, Any]]:
        """Pick up fixes that waited for approval, then mark ended windows missed."""
        changed = []
        for task in self._load(open_only=True):
            if task.state == "started" and task.fix_id is not None:
                record = self.executor.get(task.fix_id)
                if record.state != "pending_approval":
                    changed.append(self._resolve(task, record, record.updated_at))
                    task = self._get(task.task_id)
            if task.state in OPEN_STATES and now >= task.window_end:
                why = f"window ended {_iso(task.window_end)} without execution"
                if task.state == "failed" and task.state_reason:
                    why += f"; last failure: {task.state_reason}"
                self._event(task.task_id, "missed", task.fix_id, why)
                changed.append(self._get(task.task_id).as_dict())
        return changed

    def _retryable(self, task: _Task) -> bool:
        if task.fix_id is None:
            return True
        record = self.executor.get(task.fix_id)
        return record.state != "planned" and record.gate not in _FINAL_GATES

    def _execute(self, task: _Task) -> dict[str, Any]:
        need = task.need
        assert need.action is not None  # unactionable needs are never recorded
        self._event(task.task_id, "started", None, f"{need.action} on {need.target}")
        try:
            record = self.executor.run(
                need.action,
                need.target,
                dict(need.params),
                requested_by="maintenance",
                decision_id=f"maintenance:{task.task_id}",
                inputs={
                    "maintenance_task": task.task_id,
                    "need": need.kind,
                    "urgency": need.urgency,
                    "reason": need.reason,
                    "due_by": _iso(need.due_by),
                    "window": [_iso(task.window_start), _iso(task.window_end)],
                },
            )
        except AutofixError as exc:
            self._event(task.task_id, "failed", None, str(exc))
            return self._get(task.task_id).as_dict()
        return self._resolve(task, record)

    def _resolve(
        self, task: _Task, record: FixRecord, ts: datetime | None = None
    ) -> dict[str, Any]:
        if record.state in _DONE_FIX_STATES:
            why = record.reason or record.output or record.state
            if record.state == "noop":
                why = f"nothing left to do: {why}"
            self._event(task.task_id, "executed", record.id, why, ts)
        elif record.state == "pending_approval":
            self._event(task.task_id, "started", record.id, record.reason or "waiting for approval")
        else:
            why = record.error or record.reason or f"fix {record.state}"
            self._event(task.task_id, "failed", record.id, f"fix {record.state}: {why}", ts)
        return self._get(task.task_id).as_dict()


def _task(row: Sequence[Any]) -> _Task:
    """A row of ``_TASKS_SQL``: the task's own columns, then the need's in field order."""
    task_id, created_at, start, end, state, why, fix_id, updated_at = row[:8]
    kind, target, action, params, *rest = row[8:]
    need = Need(kind, target, action, json.loads(params), *rest)
    fix = None if fix_id is None else int(fix_id)
    return _Task(int(task_id), created_at, need, start, end, state, why, fix, updated_at)


__all__ = [
    "OPEN_STATES",
    "TASK_STATES",
    "URGENCIES",
    "ActionProbe",
    "Maintenance",
    "Need",
    "Package",
    "PlanReport",
    "PlannedTask",
    "derive_needs",
    "parse_upgradable",
    "plan",
    "window_occurrences",
]
