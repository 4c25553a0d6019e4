"""The demo's live terminal view: forecast → decision → gates → fix → verify, as they happen.

``Feed.poll`` reads what is new in the store since the last poll — forecasts that put a
series at risk, decisions, fix state transitions (gate refusals, approvals, apply,
verify, rollback), escalations — as ``Line`` objects. ``LiveView`` draws them (rich
``Live``) with the schedule's events and what the users see; on a terminal that is not
interactive, the lines are printed as they come instead. Text from the store (reasons,
labels) is shown literally, never as markup.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from autofix.demo.truth import EventRecord, Probe, epoch

#: A series is shown as a forecast risk when P(full within 1 h) reaches this.
RISK = 0.5

_STAGE_STYLE = {
    "forecast": "magenta",
    "decision": "cyan",
    "gate": "yellow",
    "fix": "blue",
    "verify": "green",
    "failed": "red",
    "escalate": "red",
    "event": "bold",
}
_FIX_STAGE = {
    "pending_approval": ("gate", "waits for an operator's approval"),
    "refused": ("gate", "refused"),
    "running": ("fix", "applying"),
    "succeeded": ("verify", "verified"),
    "failed": ("failed", "verify failed"),
    "rolled_back": ("failed", "rolled back"),
    "interrupted": ("failed", "interrupted"),
    "noop": ("gate", "pre-check: nothing to do"),
    "planned": ("fix", "planned only (shadow / dry run)"),
}


@dataclass(frozen=True)
class Line:
    """One step of the loop as it happened."""

    t: float  # Unix seconds
    stage: str
    text: str


def _short(value: Any, limit: int = 110) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Feed:
    """New forecasts, decisions, fix events and escalations from the store."""

    def __init__(self, store: Any, since: float) -> None:
        self.store = store
        self.since = datetime.fromtimestamp(since, UTC).replace(tzinfo=None)
        self._decisions = self.since
        self._events = (self.since, 0, 0)
        self._escalations = self.since
        self._predicted = self.since
        self._at_risk: set[int] = set()

    def poll(self) -> list[Line]:
        lines = self._forecasts() + self._decided() + self._fixes() + self._escalated()
        return sorted(lines, key=lambda line: line.t)

    def _forecasts(self) -> list[Line]:
        frame = self.store.query(
            """SELECT p.made_at, p.series_id, p.p_1h, p.eta, s.metric, s.labels
               FROM predictions p JOIN series s USING (series_id)
               WHERE p.made_at > ? ORDER BY p.made_at""",
            [self._predicted],
        )
        out = []
        for row in frame.to_dict("records"):
            self._predicted = max(self._predicted, row["made_at"])
            series = int(row["series_id"])
            if float(row["p_1h"]) >= RISK and series not in self._at_risk:
                self._at_risk.add(series)
                eta = row["eta"]
                ahead = (
                    epoch(eta) - epoch(row["made_at"]) if eta is not None and eta == eta else None
                )
                if ahead is None:
                    when = "full within the hour"
                elif ahead <= 1:
                    when = "full now at this pace"
                else:
                    when = f"full in {ahead:.0f}s"
                out.append(
                    Line(
                        epoch(row["made_at"]),
                        "forecast",
                        f"{row['metric']} {_short(row['labels'], 60)}: {when} "
                        f"(P 1h {row['p_1h']:.2f})",
                    )
                )
            elif float(row["p_1h"]) < RISK:
                self._at_risk.discard(series)
        return out

    def _decided(self) -> list[Line]:
        frame = self.store.query(
            """SELECT ts, rule, target, mode, reason FROM decisions
               WHERE ts > ? ORDER BY ts""",
            [self._decisions],
        )
        out = []
        for row in frame.to_dict("records"):
            self._decisions = max(self._decisions, row["ts"])
            out.append(
                Line(
                    epoch(row["ts"]),
                    "decision",
                    f"{row['rule']} → {row['target'] or '-'} ({row['mode']}): "
                    f"{_short(row['reason'], 90)}",
                )
            )
        return out

    def _fixes(self) -> list[Line]:
        ts, fix_id, seq = self._events
        frame = self.store.query(
            """SELECT e.ts, e.fix_id, e.seq, e.state, e.gate,
                      coalesce(e.error, e.reason, e.output) AS why, f.action, f.target
               FROM fix_events e JOIN fixes f USING (fix_id)
               WHERE (e.ts, e.fix_id, e.seq) > (?, ?, ?) ORDER BY e.ts, e.fix_id, e.seq""",
            [ts, fix_id, seq],
        )
        out = []
        for row in frame.to_dict("records"):
            self._events = (row["ts"], int(row["fix_id"]), int(row["seq"]))
            stage, verb = _FIX_STAGE.get(str(row["state"]), ("fix", str(row["state"])))
            gate = (
                f" by {row['gate']}"
                if row["gate"] is not None and row["gate"] == row["gate"]
                else ""
            )
            why = row["why"]
            detail = f": {_short(why, 80)}" if why is not None and why == why else ""
            out.append(
                Line(
                    epoch(row["ts"]),
                    stage,
                    f"#{row['fix_id']} {row['action']} on {row['target']} {verb}{gate}{detail}",
                )
            )
        return out

    def _escalated(self) -> list[Line]:
        frame = self.store.query(
            "SELECT ts, action, target, reason FROM escalations WHERE ts > ? ORDER BY ts",
            [self._escalations],
        )
        out = []
        for row in frame.to_dict("records"):
            self._escalations = max(self._escalations, row["ts"])
            out.append(
                Line(
                    epoch(row["ts"]),
                    "escalate",
                    f"{row['target']}: {_short(row['reason'], 100)}",
                )
            )
        return out


def events_table(records: list[EventRecord], now: float, origin: float) -> Table:
    table = Table(box=None, pad_edge=False, show_header=False, expand=False)
    for column in ("t", "event", "kind", "state"):
        # One line per event, whatever the width: the screen's height is counted on it.
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for record in records:
        start = record.started_at
        when = "" if start is None else f"+{start - origin:.0f}s"
        if record.phase == "pending":
            state = Text("pending", style="dim")
        elif record.phase == "running":
            elapsed = now - (start or now)
            who = " (operator stepping in)" if record.operator_at else ""
            state = Text(f"under way {elapsed:.0f}s{who}", style="yellow")
        elif record.event.kind == "fault" and record.phase == "cleared":
            by = "by the operator" if record.operator_at else ""
            took = (record.ended_at or now) - (start or now)
            state = Text(f"cleared after {took:.1f}s {by}".strip(), style="green")
        else:
            state = Text(record.phase, style="dim" if record.phase == "over" else "red")
        kind = Text(record.event.kind, style="red" if record.event.kind == "fault" else "blue")
        table.add_row(when, Text(record.event.title), kind, state)
    return table


class LiveView:
    """Draws the demo while it runs; ``update`` is called from the main thread."""

    def __init__(
        self,
        console: Console,
        header: list[str],
        records: list[EventRecord],
        probes: Callable[[], list[Probe]],
        workers: dict[str, str],
        live: bool,
        lines: int = 16,
    ) -> None:
        self.console = console
        self.header = header
        self.records = records
        self.probes = probes
        self.workers = workers
        self.lines: deque[Line] = deque(maxlen=lines)
        self.origin = time.time()
        self.live = Live(console=console, refresh_per_second=4, transient=False) if live else None

    def __enter__(self) -> LiveView:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def add(self, lines: list[Line]) -> None:
        for line in lines:
            self.lines.append(line)
            if self.live is None:
                self.console.print(self._line(line), soft_wrap=True)

    def note(self, text: str) -> None:
        self.add([Line(time.time(), "event", text)])

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def _line(self, line: Line, one_line: bool = False) -> Text:
        text = Text(f"+{line.t - self.origin:6.1f}s ", style="dim")
        if one_line:  # the screen counts its lines; the plain log keeps every word
            text.no_wrap, text.overflow = True, "ellipsis"
        text.append(f"{line.stage:<9}", style=_STAGE_STYLE.get(line.stage, ""))
        text.append(line.text)
        return text

    def render(self) -> RenderableType:
        """One screen: it fits the terminal (the feed gets the lines that are left)."""
        now = time.time()
        width = max(40, self.console.size.width)
        head = Text("\n".join(self.header), style="dim")
        users = users_line(self.probes(), self.workers, now)
        used = 3 + sum(len(line) // width + 1 for line in self.header)  # rules + header
        used += len(users) // width + 1 + len(self.records) + 1
        room = max(3, self.console.size.height - used - 2)
        shown = list(self.lines)[-room:]
        feed = (
            Group(*(self._line(line, one_line=True) for line in shown))
            if shown
            else Text("waiting for the first decision…", style="dim")
        )
        return Group(
            Rule(f"autofix demo  +{now - self.origin:.0f}s", style="bold"),
            head,
            users,
            Rule("schedule (ground truth)", style="dim"),
            events_table(self.records, now, self.origin),
            Rule("autofix: forecast → decision → gates → fix → verify", style="dim"),
            feed,
        )


def users_line(probes: list[Probe], workers: dict[str, str], now: float, span: float = 5.0) -> Text:
    """What the prober saw per worker over the last ``span`` seconds, on one line."""
    text = Text("users: ", style="bold")
    for url, name in workers.items():
        recent = [p for p in probes if p.worker == url and p.t >= now - span]
        if not recent:
            text.append(f"{name} -  ")
            continue
        ok = sum(p.ok for p in recent) / len(recent)
        p95 = float(np.percentile([p.ms for p in recent], 95))
        style = "green" if ok == 1 else ("yellow" if ok >= 0.5 else "red")
        text.append(f"{name} ", style="bold")
        text.append(f"{ok:.0%} ok", style=style)
        text.append(f", p95 {p95:.0f} ms   ")
    return text


# -- the end of the demo ----------------------------------------------------------------------


def kpi_table(truth: dict[str, Any], autofix: dict[str, Any] | None) -> Table:
    """The five KPIs: the demo's ground truth beside ``autofix kpi``, targets and goals."""
    from autofix.kpi import TARGETS, format_value

    table = Table(title="KPIs of this run", header_style="bold")
    for column in ("KPI", "ground truth (demo)", "autofix kpi", "seed target", "our goal"):
        table.add_column(column)

    def shown(value: Any, target: Any) -> Text:
        if value is None:
            return Text("n/a", style="dim")
        status = target.status(float(value))
        style = {"meets_goal": "green", "meets_target": "yellow", "misses": "red"}[status]
        return Text(format_value(float(value), target.unit), style=style)

    for name, target in TARGETS.items():
        mine = truth.get(name)
        theirs = None if autofix is None else autofix.get(name)

        table.add_row(
            target.label,
            shown(mine, target),
            shown(theirs, target) if autofix is not None else Text("(failed)", style="red"),
            target.describe("seed"),
            target.describe("goal"),
        )
    return table


def outcome_table(events: list[dict[str, Any]], fixes: dict[int, dict[str, Any]]) -> Table:
    """Each event: who fixed it (faults), the fixes it got, what users saw."""
    table = Table(title="what happened (ground truth)", header_style="bold")
    for column in ("event", "kind", "outcome", "recovered in", "fixes", "users saw"):
        table.add_column(column)
    for event in events:
        if event["kind"] == "fault":
            by = event["fixed_by"]
            prevented = " before exhaustion" if event["prevented"] else ""
            outcome = Text(
                f"fixed by {by}{prevented}" if by in {"autofix", "operator"} else str(by),
                style="green" if by == "autofix" else "red",
            )
            recovered = "-" if event["recovery_s"] is None else f"{event['recovery_s']:.1f}s"
        else:
            false = event["false_fixes"]
            outcome = Text(
                "left alone" if not false else f"{len(false)} false fix(es)",
                style="green" if not false else "red",
            )
            recovered = "-"
        names = [
            f"#{i} {fixes[i]['action']} {fixes[i]['target']} {fixes[i]['state']}"
            for i in event["true_fixes"] + event["false_fixes"]
            if i in fixes
        ]
        failed, probes = event["failed_probes"], event["probes"]
        users = Text(
            f"{failed}/{probes} requests failed" if failed else f"all {probes} ok",
            style="red" if failed else "green",
        )
        table.add_row(Text(event["title"]), event["kind"], outcome, recovered,
                      Text("\n".join(names) or "-"), users)  # fmt: skip
    return table


__all__ = [
    "Feed",
    "Line",
    "LiveView",
    "events_table",
    "kpi_table",
    "outcome_table",
    "users_line",
]
