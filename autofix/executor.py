"""The fix executor: decision → gates → snapshot → apply → verify → rollback → escalate.

Every transition is appended to the audit log (``autofix.audit``) before the next step
starts; the ``running`` event is committed before ``apply``. ``recover()`` — run when an
executor starts — marks fixes a dead process left ``running`` as ``interrupted``,
verifies them by re-reading their facts, and never re-applies them.

Clock, sleep, command runner, HTTP transport and the action registry are constructor
arguments, so tests drive a real store and real servers with a fake clock.

>>> from autofix.store import MetricStore
>>> from autofix.config import load_settings
>>> from autofix.pipeline import Pipeline
>>> ex = Executor(MetricStore(":memory:"), Pipeline(), load_settings(environ={}))
>>> ex.run("files.clean_temp", "nowhere").state
'refused'
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, NoReturn, ParamSpec, TypeVar

import httpx

from autofix.actions._quarantine import SweepResult
from autofix.actions.base import Action, Check, Context, NoOp, Runner, run_argv
from autofix.actions.files import purge_quarantine
from autofix.actions.registry import ACTIONS, ActionType, get_action
from autofix.audit import AuditLog, FixRecord
from autofix.config import Settings, format_duration
from autofix.errors import (
    ActionError,
    AutofixError,
    InputError,
    PartialApplyError,
    PausedError,
    RefusedError,
)
from autofix.gates import (
    PastFix,
    Policy,
    Request,
    Verdict,
    approval_state,
    cause_of,
    evaluate,
    resolve_policy,
)
from autofix.pause import current as pause_state
from autofix.pipeline import GateOverrides, Pipeline
from autofix.policy import Candidate, Decision
from autofix.store import MetricStore

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Naive UTC, like every timestamp in the store."""
    return datetime.now(UTC).replace(tzinfo=None)


P = ParamSpec("P")
R = TypeVar("R")

#: Re-reads the condition that triggered a fix: ``ok`` when it has cleared.
Condition = Callable[[], Check]


class _Started(NamedTuple):
    """A fix admitted and durably ``running``: what apply and verify need."""

    record: FixRecord
    bound: Action[Any, Any]
    policy: Policy
    facts: dict[str, Any]
    steps: list[Any]


def _one_at_a_time(
    method: Callable[Concatenate[Executor, P], R],
) -> Callable[Concatenate[Executor, P], R]:
    """Run an executor verb under the executor's lock."""

    @functools.wraps(method)
    def locked(self: Executor, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Executor:
    """Runs fixes against the targets of one pipeline, recording everything."""

    def __init__(
        self,
        store: MetricStore,
        pipeline: Pipeline,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        runner: Runner = run_argv,
        http_transport: httpx.BaseTransport | None = None,
        registry: Mapping[str, ActionType] = ACTIONS,
        actor: str = "autofix",
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.runner = runner
        self.http_transport = http_transport
        self.registry = registry
        self.actor = actor
        self.audit = AuditLog(store, clock, settings.fix_output_limit)
        # Gates check, then act: two threads (a rule, the self-healing loop, an operator)
        # must not both pass the lock and cooldown gates for one target. Fixes are rare;
        # running them one at a time per executor is the simple, safe answer.
        self._lock = threading.RLock()
        #: Fixes admitted by the gates but not durably ``running`` yet, by fix id.
        self._reserved: dict[int, PastFix] = {}

    # -- building ----------------------------------------------------------------------

    def _context(
        self,
        fix_id: int,
        policy: Policy,
        condition: bool = False,
        labels: Mapping[str, str] | None = None,
    ) -> Context:
        return Context(
            fix_id=fix_id,
            quarantine_dir=self.settings.quarantine_dir,
            timeout=policy.timeout.total_seconds(),
            clock=self.clock,
            sleep=self.sleep,
            runner=self.runner,
            http_transport=self.http_transport,
            condition=condition,
            probe_timeout=self.settings.probe_timeout.total_seconds(),
            labels=dict(labels or {}),
        )

    def _bind(self, record: FixRecord, policy: Policy, condition: bool = False) -> Action[Any, Any]:
        cls = get_action(record.action, self.registry)
        target = self.pipeline.target(record.target)
        if target is None:
            raise RefusedError(
                "allowlist", f"target {record.target!r} is not declared in the pipelines file"
            )
        raw = (record.inputs or {}).get("labels")
        labels = (
            {str(k): str(v) for k, v in raw.items() if isinstance(v, str)}
            if isinstance(raw, dict)
            else None
        )
        ctx = self._context(record.id, policy, condition, labels)
        return cls.bind(target, record.params, ctx)

    def _policy(self, record: FixRecord) -> Policy:
        """Settings, then action and target gates, then the rule's (kept with the fix)."""
        policy = resolve_policy(self.settings, self.pipeline, record.action, record.target)
        kept = (record.inputs or {}).get("gates")
        return policy.override(GateOverrides.model_validate(kept)) if kept else policy

    def _request(self, record: FixRecord, bound: Action[Any, Any]) -> Request:
        members = tuple(
            t.name for t in self.pipeline.targets if record.group and t.group == record.group
        )
        hosts, fleet = bound.footprint() or (1, 0)
        return Request(
            record.action,
            record.target,
            record.group,
            members,
            bound.downtime,
            cause_of(record.inputs or {}),
            hosts=hosts,
            fleet=fleet,
        )

    # -- the public verbs --------------------------------------------------------------

    def run(
        self,
        action: str,
        target: str,
        params: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
        approved_by: str | None = None,
        requested_by: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        decision_id: str | None = None,
        gates: GateOverrides | None = None,
        condition: Condition | None = None,
    ) -> FixRecord:
        """Gate, plan and (when allowed) apply one action; returns the final record.

        ``gates`` are a rule's overrides (mode, cooldown, …); they apply after the
        action's and the target's and are kept with the fix for approve and rollback.
        ``condition`` re-reads the condition that triggered the fix (``Check.ok``: it has
        cleared): checked before apply (cleared already: a no-op, the fix is not needed)
        and after the action's own verify (still there: the fix did not work).

        Admission — gates, plan, the durable ``running`` record — is one fix at a time;
        apply and verify run outside that lock, so fixes on different targets proceed
        side by side (the ``running`` record is what locks a target).
        """
        with self._lock:
            gated = self._create_and_gate(
                action,
                target,
                params,
                dry_run=dry_run,
                requested_by=requested_by,
                inputs=inputs,
                decision_id=decision_id,
                gates=gates,
                condition=condition,
            )
        if isinstance(gated, FixRecord):
            return gated
        record, bound, policy = gated
        try:
            try:
                started = self._plan_and_start(
                    record, bound, policy, dry_run, approved_by, condition
                )
            finally:
                self._release(record.id)
            if isinstance(started, FixRecord):
                return started
            return self._finish(started, condition)
        except AutofixError:
            raise
        except Exception as exc:
            self._unexpected(record, exc)

    def _create_and_gate(
        self,
        action: str,
        target: str,
        params: Mapping[str, Any] | None,
        *,
        dry_run: bool,
        requested_by: str | None,
        inputs: Mapping[str, Any] | None,
        decision_id: str | None,
        gates: GateOverrides | None,
        condition: Condition | None,
    ) -> FixRecord | tuple[FixRecord, Action[Any, Any], Policy]:
        """Record the request and run the gates; admitted, the target is reserved."""
        get_action(action, self.registry)  # an unknown action is bad input, not a fix
        found = self.pipeline.target(target)
        extra: dict[str, Any] = {"dry_run": dry_run}
        if gates is not None:
            extra["gates"] = {
                k: format_duration(v) if isinstance(v, timedelta) else v
                for k, v in gates.model_dump(exclude_none=True).items()
            }
        fix_id = self.audit.create(
            action,
            target,
            found.group if found is not None else None,
            dict(params or {}),
            requested_by or self.actor,
            {**(inputs or {}), **extra},
            decision_id,
        )
        record = self._get(fix_id)
        try:
            policy = self._policy(record)
            bound = self._gate(record, policy, condition is not None)
        except AutofixError:
            raise
        except Exception as exc:
            self._unexpected(record, exc)
        if isinstance(bound, FixRecord):
            return bound
        return record, bound, policy

    def _unexpected(self, record: FixRecord, exc: Exception) -> NoReturn:
        """A bug, or a configuration nobody validated: recorded, escalated, one line.

        The fix must not stay ``planned`` with no event (the debug log has the traceback).
        """
        log.error(
            "fix %d %s: %s",
            record.id,
            record.action,
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        error = f"unexpected error: {type(exc).__name__}: {exc}"
        self.audit.append(record.id, "failed", "unexpected", error=error)
        self.audit.escalate(record.id, record.action, record.target, None, error)
        raise ActionError(f"fix {record.id}: {error}") from exc

    def _plan_and_start(
        self,
        record: FixRecord,
        bound: Action[Any, Any],
        policy: Policy,
        dry_run: bool,
        approved_by: str | None,
        condition: Condition | None,
    ) -> FixRecord | _Started:
        """Facts and plan, then dry run, approval or the durable start (target reserved)."""
        fix_id = record.id
        planned = self._plan(record, bound)
        if planned is None:
            return self._get(fix_id)
        facts, steps = planned
        plan = [s.as_dict() for s in steps]
        # The global pause (autofix.pause) holds every fix, an operator's too: planned only.
        held = pause_state(self.audit.store, self.clock())
        if dry_run or policy.dry_run or policy.mode == "shadow" or held is not None:
            if dry_run or policy.dry_run:
                why = "dry run"
            elif policy.mode == "shadow" or held is None:
                why = "shadow mode"
            else:
                why = held.describe()
            self.audit.append(
                fix_id,
                "planned",
                "plan",
                reason=why,
                plan=plan,
                facts=facts,
                output=f"{why}: not applied",
            )
            return self._get(fix_id)
        if policy.mode == "approve" and approved_by is None:
            self.audit.append(
                fix_id,
                "pending_approval",
                "approval",
                reason="waiting for approval until "
                f"{(self.clock() + policy.approval_ttl).isoformat(timespec='seconds')}",
                plan=plan,
                facts=facts,
            )
            return self._get(fix_id)
        return self._start(record, bound, policy, facts, approved_by or self.actor, condition)

    def run_decision(
        self,
        decision: Decision,
        *,
        requested_by: str | None = None,
        condition: Condition | None = None,
    ) -> list[FixRecord]:
        """Try the candidates in order; stop at the first that verifies (or waits for a human)."""
        results = []
        for candidate in decision.candidates:
            record = self.run(
                candidate.action,
                candidate.target,
                candidate.params,
                requested_by=requested_by,
                inputs={"decision": decision.reason, **decision.inputs},
                decision_id=decision.id,
                gates=candidate.gates,
                condition=condition,
            )
            results.append(record)
            if record.state in {"succeeded", "pending_approval", "planned", "noop"}:
                return results
        if results and all(r.state == "refused" and r.gate == "lock" for r in results):
            # Another fix is already working on the target (a rule and the self-healing
            # loop saw the same fault): that fix escalates if it fails, not this one.
            log.info("decision %s: target busy with another fix; not escalated", decision.id)
            return results
        if decision.candidates:
            last = decision.candidates[-1]
            self.audit.escalate(
                results[-1].id if results else None,
                last.action,
                last.target,
                None,
                f"no candidate of decision {decision.id or decision.reason!r} verified",
            )
        return results

    def approve(self, fix_id: int, actor: str) -> FixRecord:
        """Approve a pending fix and run it now, unless its approval window has ended."""
        held = pause_state(self.audit.store, self.clock())
        if held is not None:  # nothing recorded: the fix stays pending, approvable later
            raise PausedError(
                f"autofix is {held.describe()}; fix {fix_id} stays pending until its approval "
                "expires: `autofix resume`, then approve it"
            )
        with self._lock:
            gated = self._approve_and_gate(fix_id, actor)
        if isinstance(gated, FixRecord):
            return gated
        record, bound, policy = gated
        try:
            planned = self._plan(record, bound)  # the pre-check again: still needed?
            started = (
                self._get(fix_id)
                if planned is None
                else self._start(record, bound, policy, planned[0], actor, None)
            )
        finally:
            self._release(fix_id)
        if isinstance(started, FixRecord):
            return started
        return self._finish(started, None)

    def _approve_and_gate(
        self, fix_id: int, actor: str
    ) -> FixRecord | tuple[FixRecord, Action[Any, Any], Policy]:
        record = self._pending(fix_id)
        policy = self._policy(record)
        pending_at = self._pending_since(record)
        self.audit.record_approval(fix_id, "approved", actor, pending_at + policy.approval_ttl)
        state, why = approval_state(
            pending_at, self.audit.approvals(fix_id), policy.approval_ttl, self.clock()
        )
        if state != "approved":
            return self._refuse(record, "approval", why)
        bound = self._gate(record, policy)  # the gates again: the world moved on
        if isinstance(bound, FixRecord):
            return bound
        return record, bound, policy

    @_one_at_a_time
    def reject(self, fix_id: int, actor: str) -> FixRecord:
        """Reject a pending fix: it is refused and never runs."""
        record = self._pending(fix_id)
        policy = self._policy(record)
        self.audit.record_approval(
            fix_id, "rejected", actor, self._pending_since(record) + policy.approval_ttl
        )
        return self._refuse(record, "approval", f"rejected by {actor}")

    @_one_at_a_time
    def rollback(self, fix_id: int, actor: str) -> FixRecord:
        """Undo a fix that applied (succeeded or failed with an undo record)."""
        record = self._get(fix_id)
        if record.state not in {"succeeded", "failed", "interrupted"} or not record.undo:
            raise InputError(f"fix {fix_id} is {record.state} with nothing recorded to undo")
        policy = self._policy(record)
        try:
            bound = self._bind(record, policy)
        except RefusedError as exc:
            raise InputError(f"fix {fix_id}: cannot roll back: {exc.reason}") from None
        if not bound.rolls_back:
            raise InputError(f"fix {fix_id}: {record.action} does not roll back")
        busy = [
            p
            for p in self.audit.history(self.clock())
            if p.target == record.target and p.state == "running"
        ]
        if busy:
            raise InputError(f"target {record.target!r} is locked by running fix {busy[0].fix_id}")
        started = time.monotonic()
        try:
            output = bound.rollback(record.undo)
        except AutofixError as exc:
            # The attempt is on record, but the fix keeps its state: a rollback that could
            # not run (a purged quarantine) does not make a fix that worked a failed one.
            self.audit.append(
                fix_id,
                record.state,
                "rollback",
                error=f"rollback failed: {exc}",
                actor=actor,
                duration_ms=_ms(started),
            )
            self.audit.escalate(
                fix_id, record.action, record.target, None, f"manual rollback failed: {exc}"
            )
            return self._get(fix_id)
        self.audit.append(
            fix_id,
            "rolled_back",
            "rollback",
            output=output,
            reason=f"rolled back by {actor}",
            actor=actor,
            duration_ms=_ms(started),
        )
        return self._get(fix_id)

    @_one_at_a_time
    def recover(self) -> list[FixRecord]:
        """Mark fixes left ``running`` by a dead process ``interrupted``, verify, never re-apply.

        Safe at start-up only: DuckDB lets one process write the store, so nothing else
        can be running them. Also settles quarantine steps a crash left unfinished and
        purges quarantine entries older than the TTL.
        """
        self.sweep_quarantines()  # leftovers of unfinished steps go before verifying
        recovered = []
        for past in self.audit.history(self.clock()):
            if past.state != "running":
                continue
            record = self._get(past.fix_id)
            self.audit.append(
                record.id,
                "interrupted",
                "recover",
                reason="the process applying it stopped before it finished; not re-applied",
            )
            policy = self._policy(record)
            check = self._verify_after_crash(record, policy)
            self.audit.append(
                record.id,
                "interrupted",
                "verify",
                output=check.reason if check.ok else None,
                error=None if check.ok else check.reason,
            )
            if not check.ok:
                self.audit.escalate(
                    record.id,
                    record.action,
                    record.target,
                    None,
                    f"interrupted fix not verified: {check.reason}",
                )
            recovered.append(self._get(record.id))
        return recovered

    def sweep_quarantines(self) -> SweepResult:
        """Settle steps a crash left unfinished and purge old slots, in every quarantine.

        A slot that cannot be read (a malformed journal or manifest) is skipped and
        reported in the result (and the log); the others go on.
        """
        bases = {self.settings.quarantine_dir}
        for target in self.pipeline.targets:
            own = getattr(target, "quarantine", None)
            if isinstance(own, Path):
                bases.add(own)
        total = SweepResult()
        for base in sorted(bases):
            done = purge_quarantine(base, self.settings.quarantine_ttl, self.clock())
            total.settled.extend(done.settled)
            total.purged.extend(done.purged)
            total.skipped.extend(done.skipped)
        for what in total.settled:
            log.warning("quarantine: settled after a crash: %s", what)
        return total

    def preview(
        self,
        action: str,
        target: str,
        gates: GateOverrides | None = None,
        *,
        cause: str | None = None,
    ) -> Verdict:
        """What the gates would say to ``action`` on ``target`` now; records nothing.

        The self-healing loop asks before it records a recovery, so that a recovery a
        gate refuses (a cooldown) can be tried again later in the same outage without a
        refused fix per try.
        """
        found = self.pipeline.target(target)
        if found is None:
            return Verdict(False, "allowlist", f"target {target!r} is not declared")
        cls = get_action(action, self.registry)
        policy = resolve_policy(self.settings, self.pipeline, action, target).override(gates)
        members = tuple(
            t.name for t in self.pipeline.targets if found.group and t.group == found.group
        )
        request = Request(action, target, found.group, members, bool(cls.downtime), cause)
        now = self.clock()
        return evaluate(request, self.audit.history(now - policy.horizon), policy, now)

    def get(self, fix_id: int) -> FixRecord:
        return self._get(fix_id)

    # -- internals ---------------------------------------------------------------------

    def _get(self, fix_id: int) -> FixRecord:
        record = self.audit.get(fix_id)
        if record is None:
            raise InputError(f"no fix with id {fix_id}")
        return record

    def _pending(self, fix_id: int) -> FixRecord:
        record = self._get(fix_id)
        if record.state != "pending_approval":
            raise InputError(f"fix {fix_id} is {record.state}, not pending_approval")
        return record

    def _pending_since(self, record: FixRecord) -> datetime:
        ts = next(e["ts"] for e in record.events if e["state"] == "pending_approval")
        return datetime.fromisoformat(ts)

    def _refuse(
        self, record: FixRecord, gate: str, reason: str, escalate: bool = False
    ) -> FixRecord:
        self.audit.append(
            record.id,
            "refused",
            "gates",
            gate=gate,
            reason=reason,
            error=f"refused by {gate}: {reason}",
        )
        log.debug(
            "fix %d %s on %s refused by %s: %s",
            record.id,
            record.action,
            record.target,
            gate,
            reason,
        )
        if escalate:
            self.audit.escalate(record.id, record.action, record.target, gate, reason)
        return self._get(record.id)

    def _gate(
        self, record: FixRecord, policy: Policy, condition: bool = False
    ) -> FixRecord | Action[Any, Any]:
        """Bind the action and run the gates (under the lock); admitted, the target is
        reserved until the fix is durably ``running`` or stops. A FixRecord: refused."""
        try:
            bound = self._bind(record, policy, condition)
        except RefusedError as exc:
            return self._refuse(record, exc.gate, exc.reason)
        now = self.clock()
        history = [*self.audit.history(now - policy.horizon), *self._reserved.values()]
        verdict = evaluate(self._request(record, bound), history, policy, now)
        if not verdict.allowed:
            return self._refuse(record, verdict.gate or "?", verdict.reason, verdict.escalate)
        # Reading facts and planning take seconds (a hung service answers slowly): they
        # run outside the lock, and this reservation keeps a second fix off the target.
        self._reserved[record.id] = PastFix(
            record.id,
            record.action,
            record.target,
            record.group,
            "running",
            now,
            now,
            cause=cause_of(record.inputs or {}),
        )
        return bound

    def _release(self, fix_id: int) -> None:
        with self._lock:
            self._reserved.pop(fix_id, None)

    def _plan(
        self, record: FixRecord, bound: Action[Any, Any]
    ) -> tuple[dict[str, Any], list[Any]] | None:
        """Facts and steps; None after recording a no-op or a facts failure."""
        started = time.monotonic()
        try:
            facts = bound.facts()
            plan = bound.plan(facts)
        except RefusedError as exc:
            # The plan itself refuses (a fleet would fall below its healthy share): a
            # gate's verdict on what the facts show, escalated for a human to look.
            self._refuse(record, exc.gate, exc.reason, escalate=True)
            return None
        except AutofixError as exc:
            self.audit.append(
                record.id,
                "failed",
                "facts",
                error=f"reading facts failed: {exc}",
                duration_ms=_ms(started),
            )
            self.audit.escalate(
                record.id, record.action, record.target, None, f"reading facts failed: {exc}"
            )
            return None
        if isinstance(plan, NoOp):
            self.audit.append(
                record.id,
                "noop",
                "precheck",
                reason=plan.reason,
                output=plan.reason,
                facts=facts,
                duration_ms=_ms(started),
            )
            return None
        return facts, list(plan)

    def _start(
        self,
        record: FixRecord,
        bound: Action[Any, Any],
        policy: Policy,
        facts: dict[str, Any],
        actor: str,
        condition: Condition | None,
    ) -> FixRecord | _Started:
        """Pre-check, then the durable ``running`` record (the target is reserved)."""
        fix_id = record.id
        if policy.precheck:
            replanned = self._plan(record, bound)
            if replanned is None:
                return self._get(fix_id)
            facts, steps = replanned
            if condition is not None:
                try:
                    cleared = condition()
                except AutofixError as exc:
                    cleared = Check(False, f"cannot re-read the condition: {exc}")
                if cleared.ok:
                    reason = f"the condition cleared before the fix: {cleared.reason}"
                    self.audit.append(
                        fix_id, "noop", "precheck", reason=reason, output=reason, facts=facts
                    )
                    return self._get(fix_id)
        else:
            plan_now = bound.plan(facts)
            if isinstance(plan_now, NoOp):
                self.audit.append(
                    fix_id, "noop", "precheck", reason=plan_now.reason, output=plan_now.reason
                )
                return self._get(fix_id)
            steps = list(plan_now)
        plan = [s.as_dict() for s in steps]
        try:
            # Where the undo will live, made before anything is touched and recorded
            # with `running`: a fix interrupted by a crash can still be rolled back.
            pointer = bound.prepare(steps)
        except AutofixError as exc:
            self.audit.append(fix_id, "failed", "apply", error=str(exc))
            self.audit.escalate(fix_id, record.action, record.target, None, f"apply failed: {exc}")
            return self._get(fix_id)
        # Durable before anything is touched: a crash from here on leaves `running`.
        self.audit.append(
            fix_id, "running", "apply", plan=plan, facts=facts, actor=actor, undo=pointer or None
        )
        return _Started(record, bound, policy, facts, steps)

    def _finish(self, started: _Started, condition: Condition | None) -> FixRecord:
        """Apply, verify (the action, then the condition), roll back what did not work."""
        record, bound, policy, facts, steps = started
        fix_id = record.id
        begun = time.monotonic()
        try:
            applied = bound.apply(steps)
        except PartialApplyError as exc:
            # Half a fix is worse than none: undo what was done, then escalate.
            failed = Check(False, f"apply stopped partway: {exc}")
            return self._failed_verify(
                record, bound, "", dict(exc.undo), failed, begun, step="apply"
            )
        except Exception as exc:
            if not isinstance(exc, AutofixError):
                log.exception("fix %d %s: apply raised", fix_id, record.action)
            error = str(exc) if isinstance(exc, AutofixError) else f"{type(exc).__name__}: {exc}"
            self.audit.append(fix_id, "failed", "apply", error=error, duration_ms=_ms(begun))
            self.audit.escalate(
                fix_id, record.action, record.target, None, f"apply failed: {error}"
            )
            return self._get(fix_id)
        if not policy.postcheck:
            self.audit.append(
                fix_id,
                "succeeded",
                "apply",
                output=applied.output,
                undo=applied.undo,
                reason="post-check disabled",
                duration_ms=_ms(begun),
            )
            return self._get(fix_id)
        self.sleep(policy.verify_wait.total_seconds())
        try:
            check = bound.verify(facts, after := bound.facts())
        except AutofixError as exc:
            check, after = Check(False, f"re-reading facts failed: {exc}"), {}
        if check.ok and condition is not None:
            check = self._condition_cleared(condition, policy, check)
        if check.ok:
            self.audit.append(
                fix_id,
                "succeeded",
                "verify",
                output=applied.output,
                reason=check.reason,
                undo=applied.undo,
                facts=after,
                duration_ms=_ms(begun),
            )
            return self._get(fix_id)
        return self._failed_verify(record, bound, applied.output, applied.undo, check, begun)

    def _condition_cleared(self, condition: Condition, policy: Policy, action: Check) -> Check:
        """Poll the triggering condition for up to ``verify_wait`` more: cleared, or why not."""
        deadline = time.monotonic() + max(policy.verify_wait.total_seconds(), 1.0)
        # A condition may read differently once the fix ran (``after_fix``: what is left
        # of the symptom may be a dependency's, not this fix's failure).
        reread: Condition = getattr(condition, "after_fix", condition)
        while True:
            try:
                check = reread()
            except AutofixError as exc:
                check = Check(False, f"cannot re-read the condition: {exc}")
            if check.ok:
                return Check(True, f"{action.reason}; {check.reason}")
            if time.monotonic() >= deadline:
                return Check(False, f"the condition did not clear: {check.reason}")
            self.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _failed_verify(
        self,
        record: FixRecord,
        bound: Action[Any, Any],
        output: str,
        undo: dict[str, Any],
        check: Check,
        started: float,
        step: str = "verify",
    ) -> FixRecord:
        """Roll back what was done (when the action can), record it and escalate."""
        fix_id = record.id
        error = check.reason if step == "apply" else f"verify failed: {check.reason}"
        if bound.rolls_back and undo:
            try:
                done = bound.rollback(undo)
            except AutofixError as exc:
                self.audit.append(
                    fix_id,
                    "failed",
                    "rollback",
                    output=output,
                    undo=undo,
                    error=f"{error}; rollback failed: {exc}",
                    duration_ms=_ms(started),
                )
            else:
                self.audit.append(
                    fix_id,
                    "rolled_back",
                    "rollback",
                    output=f"{output}\n{done}",
                    error=error,
                    duration_ms=_ms(started),
                )
        else:
            self.audit.append(
                fix_id,
                "failed",
                step,
                output=output,
                undo=undo or None,
                error=error,
                duration_ms=_ms(started),
            )
        gate = "postcheck" if step == "verify" else None
        self.audit.escalate(fix_id, record.action, record.target, gate, error)
        return self._get(fix_id)

    def _verify_after_crash(self, record: FixRecord, policy: Policy) -> Check:
        try:
            bound = self._bind(record, policy)
            if not bound.reverify_after_crash:
                return Check(False, f"{record.action} is not re-read after a crash: see its plan")
            return bound.verify(record.facts or {}, bound.facts())
        except (AutofixError, KeyError, TypeError) as exc:
            return Check(False, f"cannot verify: {exc}")


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


__all__ = ["ActionError", "Candidate", "Condition", "Decision", "Executor", "utcnow"]
