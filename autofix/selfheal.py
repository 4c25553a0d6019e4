"""The self-healing loop: health checks → cause → recovery through the executor → escalation.

Every ``health`` job checks each target that has a check (``autofix.health``) and stores
the results as ``autofix_health_up`` / ``autofix_health_check_seconds`` samples. Then, per
unhealthy target, by the cause its check reported:

- ``planned`` (a stop or start someone began, a fresh start warming up) is not a fault:
  no streak, no decision;
- a target failing ``recovery.after`` checks in a row is an outage. When a dependency
  explains it (``depends_on``: the dependency is unhealthy, being fixed or settling after
  a fix — ``autofix.depends``), the decision is recorded as *inhibited by* that
  dependency, once, and nothing is done; it is evaluated again on every run, so the
  target gets its own fix once the dependency is fine and it is still failing;
- otherwise the recovery candidates that answer the cause (``causes:``; by default every
  cause that is the target's own) go through the executor and all its gates. A recovery
  a gate refuses is not recorded as a fix: it is tried again on every run while the
  outage lasts, and escalated once, with the gate's reason;
- a fix that verifies ends the outage (a new failure is a new outage); one that does not
  is escalated by the executor and not tried again in this outage.

Independent targets recover in parallel; the executor admits one fix at a time through
its gates and lets admitted fixes apply and verify side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import pandas as pd

from autofix.actions.base import Check, Runner
from autofix.collect.base import format_labels
from autofix.config import Settings
from autofix.depends import Inhibitor, TargetStates, inhibitor
from autofix.errors import AutofixError
from autofix.executor import Executor
from autofix.health import HealthResult, check_all
from autofix.holds import Holds
from autofix.pipeline import Pipeline
from autofix.policy import Candidate, Decision, RuleDecision, rule_gates
from autofix.store import MetricStore
from autofix.targets import OWN_CAUSES, Target

log = logging.getLogger(__name__)

#: How far back a new process looks for the failed checks of a streak still going on.
RESTORE_WINDOW = timedelta(hours=1)
#: Most recoveries run side by side in one health run.
PARALLEL_RECOVERIES = 8
#: Causes no dependency explains: the target itself crashed, hangs or refuses.
OWN_FAULTS = frozenset({"down", "hang", "refused"})


class Remediator(Protocol):
    """What the loop acts through: ``autofix.jobs.Service`` is one."""

    settings: Settings
    pipeline: Pipeline
    store: MetricStore
    executor: Executor
    clock: Callable[[], datetime]
    runner: Runner
    http_transport: httpx.BaseTransport | None
    holds: Holds

    def effective_mode(self, decision: Decision, fallback: str) -> str: ...

    def record_decision(self, rd: RuleDecision, now: datetime, source: str = ...) -> None: ...

    def target_states(
        self, now: datetime, health: list[HealthResult] | None = None
    ) -> TargetStates: ...

    def check_health(self, target: Target) -> HealthResult: ...


@dataclass
class _Streak:
    failures: int = 0
    since: datetime | None = None
    acted: bool = False  # a fix ran, or waits for approval, in this outage
    escalated: bool = False  # a human was told about this outage
    inhibited_by: str | None = None  # the inhibitor last recorded
    held_by: str | None = None  # the silence or pause this outage was last recorded under


@dataclass(frozen=True)
class _Plan:
    target: Target
    result: HealthResult
    candidates: list[Candidate]
    streak: _Streak


def _labels(target: str) -> str:
    return format_labels({"target": target})


class SelfHealer:
    """Health streaks per target, and the recovery decisions they lead to."""

    def __init__(self, service: Remediator) -> None:
        self.service = service
        self.streaks: dict[str, _Streak] = {}

    def run(self) -> dict[str, Any]:
        service = self.service
        now = service.clock()
        results = check_all(
            service.pipeline,
            service.settings.probe_timeout.total_seconds(),
            runner=service.runner,
            http_transport=service.http_transport,
        )
        for result in results:
            if result.target not in self.streaks:
                self.streaks[result.target] = self._restore(result.target, now)
        self._write_health(results, now)
        states = service.target_states(now, results)
        plans: list[_Plan] = []
        inhibited: list[str] = []
        for result in results:
            target = service.pipeline.target(result.target)
            if target is None:
                continue
            if result.ok or result.cause == "planned":
                # A planned stop or start is not an outage; neither is a passing check.
                self.streaks[result.target] = _Streak()
                continue
            streak = self.streaks[result.target]
            streak.failures += 1
            streak.since = streak.since or now
            after = target.recovery.after if target.recovery is not None else 2
            if streak.failures < after or streak.acted:
                continue
            plan = self._plan(target, result, streak, states, now)
            if plan is None:
                inhibited.append(target.name)
            elif plan.candidates or not streak.escalated:
                plans.append(plan)
        recoveries = self._run_parallel(plans, now)
        return {
            "checked": len(results),
            "unhealthy": [r.target for r in results if not r.ok],
            "causes": {r.target: r.cause for r in results if not r.ok},
            "inhibited": inhibited,
            "recoveries": recoveries,
        }

    # -- deciding ----------------------------------------------------------------------

    def _plan(
        self,
        target: Target,
        result: HealthResult,
        streak: _Streak,
        states: TargetStates,
        now: datetime,
    ) -> _Plan | None:
        """The recovery to try now, or None when a dependency inhibits it (recorded)."""
        recovery = target.recovery
        specs = recovery.actions if recovery is not None else []
        acting_on = [spec.target or target.name for spec in specs] or [target.name]
        # The target itself fails: that is what is being recovered, not an explanation.
        mine = states.without_unhealthy(target.name)
        # A hang, a crash or a refused port is the target's own: a database outage makes
        # a web app answer 503, it does not stop it. Only errors and slowness are symptoms.
        found = inhibitor(
            self.service.pipeline,
            symptom=target.name,
            acting_on=acting_on,
            states=mine,
            symptom_only=result.cause not in OWN_FAULTS,
        )
        if found is not None:
            if streak.inhibited_by != found.target:
                streak.inhibited_by = found.target
                self._record_inhibited(target, result, streak, found, now)
            return None
        streak.inhibited_by = None
        # A failure that names a dependency which is fine is the target's own error.
        cause = "error" if result.cause in {None, "dependency"} else result.cause
        candidates = []
        if recovery is not None:
            gates = rule_gates(recovery.mode, recovery.gates)
            candidates = [
                Candidate(spec.action, spec.target or target.name, dict(spec.params), gates)
                for spec in specs
                if cause in (spec.causes or OWN_CAUSES)
            ]
        return _Plan(target, result, candidates, streak)

    def _run_parallel(self, plans: list[_Plan], now: datetime) -> list[dict[str, Any]]:
        if not plans:
            return []
        if len(plans) == 1:
            return [self._act(plans[0], now)]
        workers = min(PARALLEL_RECOVERIES, len(plans))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recover") as pool:
            return list(pool.map(lambda plan: self._act(plan, now), plans))

    def _act(self, plan: _Plan, now: datetime) -> dict[str, Any]:
        try:
            return self._recover(plan, now)
        except AutofixError as exc:  # the next run tries again; other targets go on
            log.error("recovering %s: %s", plan.target.name, exc)
            return {"target": plan.target.name, "error": str(exc)}

    def _recover(self, plan: _Plan, now: datetime) -> dict[str, Any]:
        service, target, result, streak = self.service, plan.target, plan.result, plan.streak
        cause = result.cause or "error"
        reason = f"{target.name} unhealthy ({cause}) for {streak.failures} checks: {result.detail}"
        # A silence on the target (or the pause, when there is a recovery to apply) holds
        # it: recorded once per hold, nothing run or escalated; retried on every run, so
        # the outage is recovered once the hold ends (``autofix.holds``).
        facts = {"rule": f"recovery:{target.name}", "target": target.name}
        hold = service.holds.check(
            {**facts, "host": service.settings.hostname}, now, fixes=bool(plan.candidates)
        )
        if hold is not None:
            if streak.held_by != hold.key:
                streak.held_by = hold.key
                why = f"{reason}; {hold.reason}"
                self._record(
                    target, result, streak, plan.candidates, why, now, mode=hold.mode, held=hold.key
                )
            return {"target": target.name, "fixes": [], "held": hold.kind}
        streak.held_by = None
        if not plan.candidates:
            streak.escalated = True
            configured = target.recovery is not None
            why = (
                f"no recovery answers cause {cause!r}: {reason}"
                if configured
                else f"no recovery configured: {reason}"
            )
            self._record(target, result, streak, [], reason, now, mode=None)
            service.executor.audit.escalate(None, "-", target.name, None, why)
            return {"target": target.name, "fixes": [], "escalated": True}
        # Still true? The checks of this run are a moment old; a worker that answers again
        # (the end of a restart someone else made) needs no decision at all.
        condition = self._cleared(target, cause)
        if condition().ok:
            self.streaks[target.name] = _Streak()
            return {"target": target.name, "fixes": [], "cleared": True}
        # Gates first, without recording anything: a refused recovery is retried on the
        # next run (its cooldown may end during the outage), and told to a human once.
        refusals = [
            service.executor.preview(c.action, c.target, c.gates, cause=f"health:{cause}")
            for c in plan.candidates
        ]
        if all(not verdict.allowed for verdict in refusals):
            first = refusals[0]
            busy = all(v.gate == "lock" for v in refusals)  # another fix is on it already
            if not streak.escalated and not busy:
                streak.escalated = True
                service.executor.audit.escalate(
                    None,
                    plan.candidates[0].action,
                    plan.candidates[0].target,
                    first.gate,
                    f"recovery refused by {first.gate}: {first.reason}; retrying while "
                    f"the outage lasts ({reason})",
                )
            log.info(
                "recovery of %s refused by %s: %s (retried next run)",
                target.name,
                first.gate,
                first.reason,
            )
            return {"target": target.name, "fixes": [], "refused": first.gate}
        decision = self._record(target, result, streak, plan.candidates, reason, now, mode=None)
        records = service.executor.run_decision(
            decision, requested_by="self-heal", condition=condition
        )
        states = {r.state for r in records}
        if states & {"succeeded", "noop"}:
            self.streaks[target.name] = _Streak()  # recovered: a new failure is a new outage
        elif states - {"refused"}:
            streak.acted = True  # ran (failed and escalated) or waits for approval
        return {"target": target.name, "fixes": [(r.id, r.action, r.state) for r in records]}

    def _cleared(self, target: Target, trigger: str) -> Callable[[], Check]:
        """The recovery's condition: the target healthy again — or, when it was hung,
        crashed or refusing, doing that no more and only waiting for a troubled dependency."""
        service = self.service

        def check() -> Check:
            now = service.check_health(target)
            if now.ok:
                return Check(True, f"{target.name} healthy: {now.detail}")
            if trigger in OWN_FAULTS and now.cause == "dependency" and now.dependency:
                # It answers again, and what it answers names the dependency that fails
                # (a 503 saying the database refuses it): the hang is gone, as the
                # dependency's own check may not show yet.
                return Check(
                    True,
                    f"the {trigger} is gone; {target.name} answers and names "
                    f"{now.dependency} failing: {now.detail}",
                )
            if trigger in OWN_FAULTS and now.cause not in OWN_FAULTS | {"planned"}:
                states = service.target_states(service.clock()).without_unhealthy(target.name)
                found = inhibitor(
                    service.pipeline, symptom=target.name, acting_on=[target.name], states=states
                )
                if found is not None:
                    return Check(
                        True, f"the {trigger} is gone; {target.name} waits for {found.reason}"
                    )
            return Check(False, f"{target.name} still unhealthy ({now.cause}): {now.detail}")

        return check

    # -- recording ---------------------------------------------------------------------

    def _record(
        self,
        target: Target,
        result: HealthResult,
        streak: _Streak,
        candidates: list[Candidate],
        reason: str,
        now: datetime,
        *,
        mode: str | None,
        inhibited: Inhibitor | None = None,
        held: str | None = None,
    ) -> Decision:
        detected = streak.since or now
        decision = Decision(
            candidates,
            reason=reason,
            id=f"recovery:{target.name}:{now:%Y%m%dT%H%M%S.%f}",
            inputs={
                "detected_at": detected.isoformat(),
                "health": result.detail,
                "cause": result.cause,
                **({"inhibited_by": inhibited.target} if inhibited is not None else {}),
                **({"held_by": held} if held is not None else {}),
            },
        )
        if mode is None:
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
            about=target.name,
            symptom=True,
        )
        self.service.record_decision(rd, now, source="health")
        return decision

    def _record_inhibited(
        self,
        target: Target,
        result: HealthResult,
        streak: _Streak,
        found: Inhibitor,
        now: datetime,
    ) -> None:
        reason = (
            f"{target.name} unhealthy ({result.cause}): {result.detail}; inhibited by "
            f"{found.reason}"
        )
        log.info("recovery of %s inhibited by %s: %s", target.name, found.target, found.reason)
        self._record(target, result, streak, [], reason, now, mode="inhibited", inhibited=found)

    # -- streaks and samples -----------------------------------------------------------

    def _restore(self, target: str, now: datetime) -> _Streak:
        """The streak as the stored health samples tell it (a new process: `autofix run`).

        Consecutive failed checks of the last hour, newest first, up to the last pass; it
        was acted on when a recovery fix for the target ran since it began.
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
            """SELECT count(*) AS n FROM decisions
               WHERE subject = ? AND ts >= ? AND mode NOT IN ('inhibited')
                 AND json_extract_string(inputs, '$.held_by') IS NULL""",
            [f"target:{target}", since],
        )
        acted = bool(decided["n"].iloc[0])
        return _Streak(failed, since, acted, escalated=acted)

    def _write_health(self, results: list[HealthResult], now: datetime) -> None:
        if not results:
            return
        host = self.service.settings.hostname
        rows = []
        for r in results:
            labels = _labels(r.target)
            rows.append((now, host, "autofix_health_up", labels, 1.0 if r.ok else 0.0, "", None))
            rows.append(
                (now, host, "autofix_health_check_seconds", labels, r.seconds, "seconds", None)
            )
        frame = pd.DataFrame(
            rows, columns=["ts", "host", "metric", "labels", "value", "unit", "capacity"]
        )
        frame["capacity"] = frame["capacity"].astype("float64")
        self.service.store.write(frame)


__all__ = ["Remediator", "SelfHealer"]
