"""Incidents: which escalations belong together, and when one is over.

An incident is open per (host, target) from its first escalation until the target
recovers; every escalation while it is open carries the same key
``autofix/<host>/<target>`` (PagerDuty's ``dedup_key``, the Alertmanager alert's
``autofix_incident`` label), so a flapping target pages once. It is resolved when

- a fix on the target succeeds (verified) after the last escalation, or
- the target's health check (``autofix_health_up``) failed during the incident and its
  newest result, taken after the last escalation, passes.

Everything is read from the store, so a new process (``autofix run`` from cron, a
restarted ``serve``) picks up the incidents the last one opened in the past
``ALERT_HOLD``. An incident whose problem goes away without either signal stays open
(Alertmanager's alert ends after ``ALERT_HOLD``; PagerDuty's is resolved by a human).

The runbook of an escalation is its rule's ``runbook_url`` (the rule of the decision
behind the fix), else ``AUTOFIX_NOTIFY_RUNBOOK_URL``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from autofix.collect.base import format_labels
from autofix.config import Settings
from autofix.notify.messages import Notification, escalation, resolved
from autofix.notify.oncall import ALERT_HOLD
from autofix.pipeline import Pipeline
from autofix.store import MetricStore

#: How far before an incident a failed health check still counts as part of it.
HEALTH_LOOKBACK = timedelta(hours=1)


@dataclass
class Incident:
    """One open incident: its key, when it began and when it last escalated."""

    target: str
    key: str
    since: datetime
    last: datetime
    runbook: str | None = None


def _moment(value: Any) -> datetime:
    stamp = pd.Timestamp(value).to_pydatetime()
    assert isinstance(stamp, datetime)
    return stamp


class Incidents:
    """Open incidents of one host over one store; builds their notifications."""

    def __init__(
        self, store: MetricStore, pipeline: Pipeline, settings: Settings, now: datetime
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.host = settings.hostname
        self.default_runbook = settings.notify_runbook_url
        self.open: dict[str, Incident] = {}
        history = store.query(
            "SELECT * FROM escalations WHERE ts >= ? ORDER BY ts, rowid", [now - ALERT_HOLD]
        )
        for row in history.to_dict("records"):
            self._track(row, self.runbook_of(row))
        for target, incident in list(self.open.items()):  # over while nobody was watching
            if self._recovery(incident) is not None:
                del self.open[target]

    def key(self, target: str) -> str:
        return f"autofix/{self.host}/{target}"

    # -- runbooks ---------------------------------------------------------------------

    def _runbook(self, rule_name: Any) -> str | None:
        rule = self.pipeline.rule(str(rule_name)) if isinstance(rule_name, str) else None
        if rule is not None and rule.runbook_url:
            return rule.runbook_url
        return self.default_runbook

    def rule_of_fix(self, fix_id: int) -> str | None:
        """The rule whose decision asked for the fix (None: an operator, a recovery)."""
        rows = self.store._run(
            "SELECT d.rule FROM fixes f JOIN decisions d USING (decision_id) WHERE f.fix_id = ?",
            [fix_id],
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def runbook_for_fix(self, fix_id: int) -> str | None:
        return self._runbook(self.rule_of_fix(fix_id))

    def runbook_of(self, row: Mapping[Any, Any]) -> str | None:
        """The runbook of an escalation: its fix's rule, else the newest decision on it."""
        fix_id = row.get("fix_id")
        if fix_id is not None and not pd.isna(fix_id):
            return self.runbook_for_fix(int(fix_id))
        # No fix: a decision with nothing to try. Its escalation quotes the decision's
        # reason ("manual intervention: <reason>"), which picks it among its neighbours.
        rows = self.store._run(
            """SELECT rule FROM decisions WHERE (target = ? OR subject = ?) AND ts <= ?
               ORDER BY suffix(?, reason) DESC, ts DESC LIMIT 1""",
            [row["target"], row["target"], row["ts"], str(row["reason"])],
        )
        return self._runbook(rows[0][0] if rows else None)

    # -- escalations and their end ----------------------------------------------------

    def _track(self, row: Mapping[Any, Any], runbook: str | None) -> Incident:
        target, at = str(row["target"]), _moment(row["ts"])
        incident = self.open.get(target)
        if incident is None:
            incident = self.open[target] = Incident(target, self.key(target), at, at, runbook)
        incident.last = max(incident.last, at)
        incident.runbook = runbook or incident.runbook
        return incident

    def escalated(self, row: Mapping[Any, Any]) -> Notification:
        """The notification for a new row of ``escalations``; opens or extends its incident."""
        fix_id = None if pd.isna(row["fix_id"]) else int(row["fix_id"])
        gate = None if pd.isna(row["gate"]) else str(row["gate"])
        runbook = self.runbook_of(row)
        incident = self._track(row, runbook)
        return escalation(
            fix_id,
            str(row["action"]),
            str(row["target"]),
            gate,
            str(row["reason"]),
            rule=self.rule_of_fix(fix_id) if fix_id is not None else None,
            runbook=incident.runbook,
            incident=incident.key,
        )

    def _recovery(self, incident: Incident) -> tuple[str, int | None] | None:
        """Why the incident is over (and the fix that ended it), or None while it is not."""
        fixed = self.store._run(
            """SELECT f.fix_id, f.action FROM fix_events e JOIN fixes f USING (fix_id)
               WHERE f.target = ? AND e.state = 'succeeded' AND e.ts > ?
               ORDER BY e.ts DESC LIMIT 1""",
            [incident.target, incident.last],
        )
        if fixed:
            fix_id = int(fixed[0][0])
            return f"fix {fix_id} ({fixed[0][1]}) on {incident.target} verified", fix_id
        health = self.store._run(
            """SELECT x.ts, x.value FROM samples x JOIN series s USING (series_id)
               WHERE s.metric = 'autofix_health_up' AND s.host = ? AND s.labels = ?
                 AND x.ts >= ? ORDER BY x.ts DESC""",
            [
                self.host,
                format_labels({"target": incident.target}),
                incident.since - HEALTH_LOOKBACK,
            ],
        )
        if not health or health[0][1] < 1.0 or health[0][0] <= incident.last:
            return None
        if any(value < 1.0 for _, value in health):
            return f"{incident.target} is healthy again (its health check passed)", None
        return None

    def resolutions(self) -> list[Notification]:
        """A ``resolved`` notification for each open incident that is over (and closes it)."""
        out = []
        for target, incident in list(self.open.items()):
            over = self._recovery(incident)
            if over is None:
                continue
            del self.open[target]
            why, fix_id = over
            out.append(resolved(target, incident.key, why, fix_id=fix_id, runbook=incident.runbook))
        return out


__all__ = ["HEALTH_LOOKBACK", "Incident", "Incidents"]
