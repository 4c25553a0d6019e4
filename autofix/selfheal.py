"""The self-healing loop: health checks → recovery through the executor → escalation.

Every ``health`` job checks each target that has a check (``autofix.health``) and stores
the results as ``autofix_health_up`` / ``autofix_health_check_seconds`` samples. A target
failing ``recovery.after`` checks in a row gets its recovery actions through the executor
and all its gates, once per outage (a failed verify rolls back and escalates there); a
target without ``recovery`` is escalated once per outage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import pandas as pd

from autofix.actions.base import Runner
from autofix.collect.base import format_labels
from autofix.config import Settings
from autofix.errors import AutofixError
from autofix.executor import Executor
from autofix.health import HealthResult, check_all
from autofix.pipeline import Pipeline
from autofix.policy import Candidate, Decision, RuleDecision, rule_gates
from autofix.store import MetricStore
from autofix.targets import Target

log = logging.getLogger(__name__)

#: How far back a new process looks for the failed checks of a streak still going on.
RESTORE_WINDOW = timedelta(hours=1)


class Remediator(Protocol):
    """What the loop acts through: ``autofix.jobs.Service`` is one."""

    settings: Settings
    pipeline: Pipeline
    store: MetricStore
    executor: Executor
    clock: Callable[[], datetime]
    runner: Runner
    http_transport: httpx.BaseTransport | None

    def effective_mode(self, decision: Decision, fallback: str) -> str: ...

    def record_decision(self, rd: RuleDecision, now: datetime, source: str = ...) -> None: ...


@dataclass
class _Streak:
    failures: int = 0
    since: datetime | None = None
    acted: bool = False


def _labels(target: str) -> str:
    return format_labels({"target": target})


class SelfHealer:
    """Health streaks per target, and the recovery decisions they lead to."""

    def __init__(self, service: Remediator) -> None:
        self.service = service
        self.streaks: dict[str, _Streak] = {}

    def run(self) -> dict[str, Any]:
        now = self.service.clock()
        results = check_all(
            self.service.pipeline,
            self.service.settings.probe_timeout.total_seconds(),
            runner=self.service.runner,
            http_transport=self.service.http_transport,
        )
        for result in results:
            if result.target not in self.streaks:
                self.streaks[result.target] = self._restore(result.target, now)
        self._write_health(results, now)
        acted = []
        for result in results:
            target = self.service.pipeline.target(result.target)
            if target is None:
                continue
            streak = self.streaks[result.target]
            if result.ok:
                self.streaks[result.target] = _Streak()
                continue
            streak.failures += 1
            streak.since = streak.since or now
            after = target.recovery.after if target.recovery is not None else 2
            if streak.failures < after or streak.acted:
                continue
            try:
                acted.append(self._recover(target, result, streak, now))
            except AutofixError as exc:  # the next run tries again; other targets go on
                log.error("recovering %s: %s", target.name, exc)
                continue
            streak.acted = True
        return {
            "checked": len(results),
            "unhealthy": [r.target for r in results if not r.ok],
            "recoveries": acted,
        }

    def _restore(self, target: str, now: datetime) -> _Streak:
        """The streak as the stored health samples tell it (a new process: `autofix run`).

        Consecutive failed checks of the last hour, newest first, up to the last pass; it
        was acted on when a recovery decision for the target was made since it began.
        """
        rows = self.service.store.query(
            """SELECT x.ts, x.value FROM samples x JOIN series s USING (series_id)
               WHERE s.metric = 'autofix_health_up' AND s.host = ? AND s.labels = ?
                 AND x.ts < ? AND x.ts >= ?
               ORDER BY x.ts DESC""",
            [self.service.settings.hostname, _labels(target), now, now - RESTORE_WINDOW],
        )
        failed = 0
        for value in rows["value"]:
            if value >= 1.0:
                break
            failed += 1
        if not failed:
            return _Streak()
        since = pd.Timestamp(rows["ts"].iloc[failed - 1]).to_pydatetime()
        decided = self.service.store.query(
            "SELECT count(*) AS n FROM decisions WHERE subject = ? AND ts >= ?",
            [f"target:{target}", since],
        )
        return _Streak(failed, since, bool(decided["n"].iloc[0]))

    def _write_health(self, results: list[HealthResult], now: datetime) -> None:
        if not results:
            return
        rows = []
        for r in results:
            labels = _labels(r.target)
            rows.append(
                (
                    now,
                    self.service.settings.hostname,
                    "autofix_health_up",
                    labels,
                    1.0 if r.ok else 0.0,
                    "",
                    None,
                )
            )
            rows.append(
                (
                    now,
                    self.service.settings.hostname,
                    "autofix_health_check_seconds",
                    labels,
                    r.seconds,
                    "seconds",
                    None,
                )
            )
        frame = pd.DataFrame(
            rows, columns=["ts", "host", "metric", "labels", "value", "unit", "capacity"]
        )
        frame["capacity"] = frame["capacity"].astype("float64")
        self.service.store.write(frame)

    def _recover(
        self, target: Target, result: HealthResult, streak: _Streak, now: datetime
    ) -> dict[str, Any]:
        detected = streak.since or now
        reason = f"{target.name} unhealthy for {streak.failures} checks: {result.detail}"
        decision_id = f"recovery:{target.name}:{now:%Y%m%dT%H%M%S.%f}"
        recovery = target.recovery
        candidates = []
        if recovery is not None:
            gates = rule_gates(recovery.mode, recovery.gates)
            candidates = [
                Candidate(spec.action, spec.target or target.name, dict(spec.params), gates)
                for spec in recovery.actions
            ]
        decision = Decision(
            candidates,
            reason=reason,
            id=decision_id,
            inputs={"detected_at": detected.isoformat(), "health": result.detail},
        )
        mode = self.service.effective_mode(decision, self.service.settings.fix_mode)
        rd = RuleDecision(
            rule=f"recovery:{target.name}",
            kind="health",
            subject=f"target:{target.name}",
            series_id=None,
            target=target.name,
            mode=mode,
            detected_at=detected,
            score_at=now + timedelta(minutes=15),
            reason=reason,
            inputs=decision.inputs,
            decision=decision,
        )
        self.service.record_decision(rd, now, source="health")
        if not candidates:
            self.service.executor.audit.escalate(
                None, "-", target.name, None, f"no recovery configured: {reason}"
            )
            return {"target": target.name, "fixes": [], "escalated": True}
        records = self.service.executor.run_decision(decision, requested_by="self-heal")
        return {"target": target.name, "fixes": [(r.id, r.action, r.state) for r in records]}


__all__ = ["Remediator", "SelfHealer"]
