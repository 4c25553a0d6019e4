"""Safety gates: pure functions from (request, history, policy, now) to a verdict.

The history is what the audit log says about recent fixes (``PastFix``); nothing here
reads a clock, a file or the store, so every gate is tested by feeding it states. Each
gate is a named setting (``AUTOFIX_FIX_*``) with a default, overridable per action
(pipelines ``gates:``) and per target (``targets[].gates``). The first gate that refuses
decides; its name and reason go into the audit log.

>>> from datetime import datetime
>>> policy = Policy()
>>> req = Request("files.clean_temp", "tmp")
>>> evaluate(req, [], policy, datetime(2026, 1, 1)).allowed
True
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal

from autofix.config import Settings
from autofix.errors import ConfigError
from autofix.pipeline import GateOverrides, Pipeline

Mode = Literal["off", "shadow", "approve", "auto"]

#: Gates in evaluation order (the executor adds allowlist/params before, precheck/postcheck after).
GATES = (
    "mode",
    "maintenance",
    "lock",
    "breaker",
    "backoff",
    "cooldown",
    "max_runs",
    "budget",
    "flapping",
    "blast_radius",
)
FAILED = frozenset({"failed", "rolled_back"})
TERMINAL = frozenset(
    {"planned", "refused", "succeeded", "failed", "rolled_back", "interrupted", "noop"}
)

_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_WINDOW = re.compile(
    r"^(?:(?P<day>mon|tue|wed|thu|fri|sat|sun|daily)\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$"
)


@dataclass(frozen=True)
class Window:
    """A weekly (or daily) UTC maintenance window; an end before the start wraps midnight."""

    day: int | None
    start: time
    end: time

    def contains(self, moment: datetime) -> bool:
        now = moment.time()
        if self.start < self.end:
            return (
                self.day is None or moment.weekday() == self.day
            ) and self.start <= now < self.end
        prev = (moment - timedelta(days=1)).weekday()
        return ((self.day is None or moment.weekday() == self.day) and now >= self.start) or (
            (self.day is None or prev == self.day) and now < self.end
        )


ALWAYS = Window(None, time(0), time(0))


def parse_windows(text: str) -> tuple[Window, ...]:
    """``"sat 02:00-04:00, daily 22:00-02:00"`` → windows; ``"*"`` always; ``""`` never.

    >>> parse_windows("sat 02:00-04:00")[0].day
    5
    """
    windows = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part == "*":
            windows.append(ALWAYS)
            continue
        match = _WINDOW.match(part)
        if not match:
            raise ConfigError(f"maintenance window {part!r}: use e.g. 'sat 02:00-04:00' or '*'")
        try:
            start = time.fromisoformat(match["start"].zfill(5))
            end = time.fromisoformat(match["end"].zfill(5))
        except ValueError:
            raise ConfigError(f"maintenance window {part!r}: bad time of day") from None
        day = match["day"]
        windows.append(Window(None if day in (None, "daily") else _DAYS[day], start, end))
    return tuple(windows)


@dataclass(frozen=True)
class Policy:
    """Every gate setting, resolved for one (action, target)."""

    mode: Mode = "approve"
    dry_run: bool = False
    cooldown: timedelta = timedelta(minutes=10)
    backoff_base: timedelta = timedelta(minutes=5)
    backoff_max: timedelta = timedelta(hours=6)
    healthy_reset: timedelta = timedelta(hours=1)
    max_runs: int = 3
    runs_window: timedelta = timedelta(hours=1)
    hourly_budget: int = 20
    flap_count: int = 6
    flap_window: timedelta = timedelta(hours=1)
    blast_radius: float = 0.34
    unhealthy_share: float = 0.5
    unhealthy_window: timedelta = timedelta(minutes=15)
    breaker_failures: int = 3
    breaker_hold: timedelta = timedelta(hours=24)
    maintenance_windows: tuple[Window, ...] = ()
    approval_ttl: timedelta = timedelta(hours=1)
    precheck: bool = True
    postcheck: bool = True
    verify_wait: timedelta = timedelta(seconds=5)
    timeout: timedelta = timedelta(minutes=2)

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(
            mode=s.fix_mode,
            dry_run=s.dry_run,
            cooldown=s.fix_cooldown,
            backoff_base=s.fix_backoff_base,
            backoff_max=s.fix_backoff_max,
            healthy_reset=s.fix_healthy_reset,
            max_runs=s.fix_max_runs,
            runs_window=s.fix_runs_window,
            hourly_budget=s.fix_hourly_budget,
            flap_count=s.fix_flap_count,
            flap_window=s.fix_flap_window,
            blast_radius=s.fix_blast_radius,
            unhealthy_share=s.fix_unhealthy_share,
            unhealthy_window=s.fix_unhealthy_window,
            breaker_failures=s.fix_breaker_failures,
            breaker_hold=s.fix_breaker_hold,
            maintenance_windows=parse_windows(s.fix_maintenance_windows),
            approval_ttl=s.fix_approval_ttl,
            precheck=s.fix_precheck,
            postcheck=s.fix_postcheck,
            verify_wait=s.fix_verify_wait,
            timeout=s.fix_timeout,
        )

    def override(self, overrides: GateOverrides | None) -> Policy:
        """This policy with the fields set in ``overrides`` replaced."""
        if overrides is None:
            return self
        changes = {k: v for k, v in overrides.model_dump().items() if v is not None}
        if "maintenance_windows" in changes:
            changes["maintenance_windows"] = parse_windows(changes["maintenance_windows"])
        return dataclasses.replace(self, **changes)

    @property
    def horizon(self) -> timedelta:
        """How far back the history must reach for every gate to see what it needs."""
        return max(
            self.cooldown,
            self.runs_window,
            timedelta(hours=1),
            self.flap_window,
            self.unhealthy_window,
            self.breaker_hold,
            self.backoff_max + self.healthy_reset,
        )


def resolve_policy(settings: Settings, pipeline: Pipeline, action: str, target: str) -> Policy:
    """Settings, then the pipeline's per-action ``gates``, then the target's ``gates``."""
    policy = Policy.from_settings(settings).override(pipeline.gates.get(action))
    found = pipeline.target(target)
    return policy.override(found.gates if found is not None else None)


@dataclass(frozen=True)
class PastFix:
    """One fix as the audit log shows it now."""

    fix_id: int
    action: str
    target: str
    group: str | None
    state: str
    requested_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: Why it was asked (``health:hang``, ``rule:disk-full``); None for an operator's fix.
    cause: str | None = None

    @property
    def applied(self) -> bool:
        return self.started_at is not None

    @property
    def last_activity(self) -> datetime:
        return self.finished_at or self.started_at or self.requested_at


@dataclass(frozen=True)
class Request:
    """What is asked: an action on a target, and the target's group (for blast radius)."""

    action: str
    target: str
    group: str | None = None
    group_members: tuple[str, ...] = ()
    downtime: bool = False
    cause: str | None = None
    #: A fleet action (ansible.playbook): hosts changed at once, and hosts in its group.
    hosts: int = 1
    fleet: int = 0


@dataclass(frozen=True)
class Verdict:
    """Allowed, or the refusing gate and why; ``escalate`` asks a human to look."""

    allowed: bool
    gate: str | None = None
    reason: str = ""
    escalate: bool = False


ALLOW = Verdict(True, None, "all gates passed")


def _refuse(gate: str, reason: str, escalate: bool = False) -> Verdict:
    return Verdict(False, gate, reason, escalate)


def cause_of(inputs: object) -> str | None:
    """The cause a fix answers, from its inputs: ``health:<cause>``, ``rule:<name>``.

    >>> cause_of({"cause": "hang"}), cause_of({"rule": "disk-full"}), cause_of({})
    ('health:hang', 'rule:disk-full', None)
    """
    if not isinstance(inputs, dict):
        return None
    if isinstance(inputs.get("cause"), str):
        return f"health:{inputs['cause']}"
    if isinstance(inputs.get("rule"), str):
        return f"rule:{inputs['rule']}"
    return None


def _pair(req: Request, history: Sequence[PastFix]) -> list[PastFix]:
    """Past fixes of this action on this target for the same cause.

    Gates count by cause: a restart for an error page must not use up the cooldown,
    backoff or breaker that a restart for a real hang of the same worker needs. An
    operator's fix (no cause) counts for every cause, and is held to all of them.
    """
    return [
        p
        for p in history
        if p.action == req.action
        and p.target == req.target
        and (req.cause is None or p.cause is None or p.cause == req.cause)
    ]


def _fmt(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def check_mode(policy: Policy) -> Verdict | None:
    if policy.mode == "off":
        return _refuse("mode", "rule mode is off")
    return None


def check_maintenance(req: Request, policy: Policy, now: datetime) -> Verdict | None:
    if not req.downtime:
        return None
    if not policy.maintenance_windows:
        return _refuse(
            "maintenance", f"{req.action} needs downtime and no maintenance window is set"
        )
    if not any(w.contains(now) for w in policy.maintenance_windows):
        return _refuse(
            "maintenance", f"{req.action} needs downtime; {_fmt(now)} is outside the windows"
        )
    return None


def check_lock(req: Request, history: Sequence[PastFix]) -> Verdict | None:
    busy = [p for p in history if p.target == req.target and p.state == "running"]
    if busy:
        return _refuse("lock", f"target {req.target!r} is locked by running fix {busy[0].fix_id}")
    return None


def failure_chain(
    pair: Sequence[PastFix], now: datetime, reset: timedelta | None, since: datetime | None
) -> list[PastFix]:
    """Consecutive failures, newest first: stops at a success, at a gap longer than
    ``reset`` (a healthy period), or before ``since``."""
    chain: list[PastFix] = []
    last = now
    done = sorted(
        (
            p
            for p in pair
            if p.applied and p.finished_at is not None and p.state in FAILED | {"succeeded"}
        ),
        key=lambda p: p.last_activity,
        reverse=True,
    )
    for p in done:
        if p.state == "succeeded":
            break
        if since is not None and p.last_activity < since:
            break
        if reset is not None and last - p.last_activity > reset:
            break
        chain.append(p)
        last = p.last_activity
    return chain


def check_breaker(
    req: Request, history: Sequence[PastFix], policy: Policy, now: datetime
) -> Verdict | None:
    chain = failure_chain(_pair(req, history), now, None, now - policy.breaker_hold)
    if len(chain) >= policy.breaker_failures:
        until = chain[policy.breaker_failures - 1].last_activity + policy.breaker_hold
        return _refuse(
            "breaker",
            f"circuit breaker open: {len(chain)} consecutive failures of {req.action} on "
            f"{req.target!r}; held until {_fmt(until)}",
            escalate=True,
        )
    return None


def backoff_delay(failures: int, policy: Policy) -> timedelta:
    """base · 2^(failures-1), capped at backoff_max; zero without failures."""
    if failures <= 0:
        return timedelta(0)
    seconds = policy.backoff_base.total_seconds() * 2.0 ** min(failures - 1, 60)
    return timedelta(seconds=min(seconds, policy.backoff_max.total_seconds()))


def check_backoff(
    req: Request, history: Sequence[PastFix], policy: Policy, now: datetime
) -> Verdict | None:
    chain = failure_chain(_pair(req, history), now, policy.healthy_reset, None)
    if not chain:
        return None
    until = chain[0].last_activity + backoff_delay(len(chain), policy)
    if now < until:
        return _refuse(
            "backoff", f"{len(chain)} consecutive failure(s); next try after {_fmt(until)}"
        )
    return None


def check_cooldown(
    req: Request, history: Sequence[PastFix], policy: Policy, now: datetime
) -> Verdict | None:
    applied = [p for p in _pair(req, history) if p.applied]
    if not applied:
        return None
    last = max(p.last_activity for p in applied)
    if now < last + policy.cooldown:
        return _refuse(
            "cooldown",
            f"last run ended {_fmt(last)}; next allowed at {_fmt(last + policy.cooldown)}",
        )
    return None


def check_max_runs(
    req: Request, history: Sequence[PastFix], policy: Policy, now: datetime
) -> Verdict | None:
    since = now - policy.runs_window
    runs = [p for p in _pair(req, history) if p.started_at is not None and p.started_at > since]
    if len(runs) >= policy.max_runs:
        return _refuse(
            "max_runs",
            f"{len(runs)} run(s) of {req.action} on {req.target!r} in the window "
            f"(max {policy.max_runs})",
        )
    return None


def check_budget(history: Sequence[PastFix], policy: Policy, now: datetime) -> Verdict | None:
    since = now - timedelta(hours=1)
    runs = [p for p in history if p.started_at is not None and p.started_at > since]
    if len(runs) >= policy.hourly_budget:
        return _refuse(
            "budget",
            f"{len(runs)} fix(es) applied in the last hour (budget {policy.hourly_budget})",
        )
    return None


def check_flapping(
    req: Request, history: Sequence[PastFix], policy: Policy, now: datetime
) -> Verdict | None:
    since = now - policy.flap_window
    seen = [p for p in _pair(req, history) if p.requested_at > since]
    if len(seen) >= policy.flap_count:
        return _refuse(
            "flapping",
            f"{len(seen)} request(s) of {req.action} on {req.target!r} within the flap window",
            escalate=True,
        )
    return None


def check_blast_radius(
    req: Request, history: Sequence[PastFix], policy: Policy, now: datetime
) -> Verdict | None:
    if req.fleet > 1:
        # Blast radius counts hosts: the largest batch against the group's hosts.
        most = max(1, int(policy.blast_radius * req.fleet))
        if req.hosts > most:
            return _refuse(
                "blast_radius",
                f"a batch of {req.hosts} of {req.fleet} hosts in {req.target!r} at once "
                f"(max {most} at blast_radius {policy.blast_radius:g})",
            )
    members = set(req.group_members)
    if req.group is None or len(members) < 2:
        return None
    busy = {p.target for p in history if p.target in members and p.state == "running"} - {
        req.target
    }
    allowed = max(1, int(policy.blast_radius * len(members)))
    if len(busy) + 1 > allowed:
        return _refuse(
            "blast_radius",
            f"{len(busy)} of {len(members)} in group {req.group!r} under remediation "
            f"(max {allowed})",
        )
    since = now - policy.unhealthy_window
    unhealthy = {
        p.target
        for p in history
        if p.target in members and p.requested_at > since and p.state != "noop"
    } | {req.target}
    if len(unhealthy) / len(members) > policy.unhealthy_share:
        return _refuse(
            "blast_radius",
            f"{len(unhealthy)} of {len(members)} in group {req.group!r} unhealthy at once: "
            "escalating instead of fixing",
            escalate=True,
        )
    return None


def evaluate(req: Request, history: Sequence[PastFix], policy: Policy, now: datetime) -> Verdict:
    """The first refusing gate in ``GATES`` order, or ALLOW (later gates are not computed)."""
    pair = _pair(req, history)
    checks: tuple[Callable[[], Verdict | None], ...] = (
        lambda: check_mode(policy),
        lambda: check_maintenance(req, policy, now),
        lambda: check_lock(req, history),
        lambda: check_breaker(req, pair, policy, now),
        lambda: check_backoff(req, pair, policy, now),
        lambda: check_cooldown(req, pair, policy, now),
        lambda: check_max_runs(req, pair, policy, now),
        lambda: check_budget(history, policy, now),
        lambda: check_flapping(req, pair, policy, now),
        lambda: check_blast_radius(req, history, policy, now),
    )
    for check in checks:
        verdict = check()
        if verdict is not None:
            return verdict
    return ALLOW


ApprovalState = Literal["waiting", "approved", "rejected", "expired"]


@dataclass(frozen=True)
class ApprovalRecord:
    """An operator's verdict on a pending fix."""

    verdict: Literal["approved", "rejected"]
    actor: str
    ts: datetime


def approval_state(
    pending_at: datetime,
    records: Sequence[ApprovalRecord],
    ttl: timedelta,
    now: datetime,
) -> tuple[ApprovalState, str]:
    """Whether a fix pending since ``pending_at`` may run ``now``.

    An approval counts only if given before the TTL ran out and used before it runs out:
    an expired approval never executes.
    """
    expires = pending_at + ttl
    valid = [r for r in records if r.ts <= expires]
    if any(r.verdict == "rejected" for r in valid):
        who = next(r.actor for r in valid if r.verdict == "rejected")
        return "rejected", f"rejected by {who}"
    if now >= expires:
        return "expired", f"approval window ended {_fmt(expires)}"
    approved = [r for r in valid if r.verdict == "approved"]
    if approved:
        return "approved", f"approved by {approved[0].actor}"
    return "waiting", f"waiting for approval until {_fmt(expires)}"


__all__ = [
    "ALLOW",
    "GATES",
    "ApprovalRecord",
    "PastFix",
    "Policy",
    "Request",
    "Verdict",
    "Window",
    "approval_state",
    "cause_of",
    "evaluate",
    "parse_windows",
    "resolve_policy",
]
