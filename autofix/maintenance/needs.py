"""Maintenance needs: what must be done, where and by when, from forecasts, health
signals and the package manager's list of upgradable packages."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from autofix.actions.base import Context, Facts, NoOp, Plan, Runner, run_argv
from autofix.actions.registry import ACTIONS
from autofix.collect.base import parse_labels
from autofix.config import format_duration
from autofix.errors import ActionError, AutofixError, RefusedError
from autofix.executor import utcnow
from autofix.maintenance.apt import list_upgradable, parse_upgradable
from autofix.pipeline import CommandTarget, LogDirTarget, Pipeline, PostgresTarget
from autofix.store import MetricStore

log = logging.getLogger("autofix.maintenance")  # one logger for the whole package, as before

NeedKind = Literal["log_rotation", "vacuum", "reindex", "disk_cleanup", "security_patches"]
Urgency = Literal["critical", "high", "normal", "low"]

URGENCIES: tuple[Urgency, ...] = ("critical", "high", "normal", "low")

FS_METRIC = "node_filesystem_avail_bytes"
GROWTH_METRIC = "autofix_dir_growth_bytes_per_day"
LATENCY_METRIC = "probe_query_duration_seconds"
#: Least probability of filling up that makes a disk need (24h: critical, 4d: high).
EXHAUST_PROBABILITY = 0.5
#: How old a log must be before rotation compresses it, by how fast the directory grows:
#: a log that grows past the daily limit is compressed sooner (its own log is quiet by
#: then), so fresh fast-growing logs are rotated, not left for a day. Steps, not a formula,
#: so the need (and its task) stays the same while the growth wavers.
ROTATE_AFTER_STEPS = (
    timedelta(days=1),
    timedelta(hours=12),
    timedelta(hours=6),
    timedelta(hours=3),
    timedelta(hours=1),
)
#: Logs rotation looks at when growth drives it: the numbered files an application's own
#: rotation leaves (``app.log.1``) as well as ``*.log``; archives (``*.gz``) are not.
ROTATE_PATTERN = "*.log*"
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


def _with_label(frame: pd.DataFrame, key: str, value: str | None) -> pd.DataFrame:
    """Rows of ``frame`` whose ``labels`` JSON has ``key`` equal to ``value``."""
    if frame.empty:
        return frame
    mine = frame["labels"].map(lambda text: parse_labels(text).get(key) == value)
    return frame[mine.astype(bool)]


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
        upgradable_cache: timedelta = timedelta(0),
    ) -> None:
        self.pipeline = pipeline
        self.store = store
        self.now = now
        self.runner = runner
        self.probe = probe
        self.host = host
        self.horizon = horizon
        self.upgradable_cache = upgradable_cache
        self.needs: dict[tuple[str, str, str, str], Need] = {}
        self.unknown: set[tuple[str, str]] = set()
        self.estimates = self._estimates()
        self._growth_frame: pd.DataFrame | None = None

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

    def _growth(self) -> pd.DataFrame:
        """The newest fresh growth sample of every log directory (read once per pass)."""
        if self._growth_frame is None:
            self._growth_frame = self._mine(
                self.store.query(
                    """SELECT s.host, s.labels, max(x.ts) AS ts, arg_max(x.value, x.ts) AS value
                       FROM samples x JOIN series s USING (series_id)
                       WHERE s.metric = ? AND x.ts <= ? AND x.ts >= ? GROUP BY ALL""",
                    [GROWTH_METRIC, self.now, self.now - STALE_AFTER],
                )
            )
        return self._growth_frame

    def _rotation(self, target: LogDirTarget) -> dict[str, Any]:
        """Parameters of files.rotate_logs for ``target``, from how fast it grows.

        A directory growing faster than ``log_growth_per_day`` gets its logs compressed
        once they are ``limit / growth`` days old (on the ``ROTATE_AFTER_STEPS`` ladder,
        at least an hour: the log being written is never touched), including the
        numbered files of the application's own rotation. Otherwise the action's defaults.
        """
        row = self._latest(self._growth(), target.name)
        limit = self.pipeline.maintenance.log_growth_per_day
        if row is None or float(row["value"]) <= limit:
            return {}
        days = limit / float(row["value"])
        after = next(
            (s for s in ROTATE_AFTER_STEPS if s <= timedelta(days=days)), ROTATE_AFTER_STEPS[-1]
        )
        return {"compress_after": format_duration(after), "pattern": ROTATE_PATTERN}

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
        mountpoints = sorted(
            {m for t in series["labels"] if (m := parse_labels(t).get("mountpoint"))}
        )
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
            rotation = self._rotation(target)
            if _allowed(target, "files.rotate_logs") and self._confirm(
                "log_rotation", "files.rotate_logs", target, rotation
            ):
                self._add(
                    "log_rotation", target.name, "files.rotate_logs", rotation, urgency, due, why
                )
            # clean_temp moves every old file: only where the target opted in explicitly.
            if _allowed(target, "files.clean_temp", explicitly=True) and self._confirm(
                "disk_cleanup", "files.clean_temp", target, {}
            ):
                self._add("disk_cleanup", target.name, "files.clean_temp", {}, urgency, due, why)

    def _log_growth(self) -> None:
        targets = list(self._logdirs())
        if not targets:
            return
        limit = self.pipeline.maintenance.log_growth_per_day
        for target in targets:
            row = self._latest(self._growth(), target.name)
            if row is None or float(row["value"]) <= limit:
                continue
            growth = float(row["value"])
            urgency: Urgency = "high" if growth >= 10 * limit else "low"
            due = self._due(timedelta(days=1) if urgency == "high" else self.horizon)
            why = f"logs grow {growth / 1e6:,.0f} MB/day (limit {limit / 1e6:,.0f} MB/day)"
            rotation = self._rotation(target)
            if _allowed(target, "files.rotate_logs") and self._confirm(
                "log_rotation", "files.rotate_logs", target, rotation
            ):
                self._add(
                    "log_rotation", target.name, "files.rotate_logs", rotation, urgency, due, why
                )

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
            done = list_upgradable(self.runner, spec.upgradable_argv, self.upgradable_cache)
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
    upgradable_cache: timedelta = timedelta(0),
) -> list[Need]:
    """Maintenance needs from predictions, health signals and the package manager, most
    pressing first.

    ``facts`` reads an action's facts and plan (default: ``ActionProbe``, which binds the
    real action); ``host`` limits the store's series to that host's; needs without a
    deadline of their own are due within ``horizon``; the package manager's listing is
    reused for up to ``upgradable_cache`` (``autofix.maintenance.apt``). A source that
    cannot be read is logged and skipped: one unreachable database never hides the others.
    """
    return _derive(pipeline, store, now, runner, facts, host, horizon, upgradable_cache)[0]


def _derive(
    pipeline: Pipeline,
    store: MetricStore,
    now: datetime,
    runner: Runner,
    facts: Probe | None,
    host: str | None,
    horizon: timedelta,
    upgradable_cache: timedelta = timedelta(0),
) -> tuple[list[Need], set[tuple[str, str]]]:
    probe = facts or ActionProbe(runner=runner, clock=lambda: now)
    deriver = _Deriver(pipeline, store, now, runner, probe, host, horizon, upgradable_cache)
    return deriver.run(), deriver.unknown
