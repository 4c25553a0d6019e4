"""Gates are pure: states in, verdicts out. Property tests over random event sequences."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autofix.config import load_settings
from autofix.errors import ConfigError
from autofix.gates import (
    ApprovalRecord,
    PastFix,
    Policy,
    Request,
    approval_state,
    backoff_delay,
    evaluate,
    parse_windows,
    resolve_policy,
)
from autofix.pipeline import Pipeline

T0 = datetime(2026, 3, 2, 12, 0)  # a Monday
M = timedelta(minutes=1)
REQ = Request("files.clean_temp", "tmp")


def _fix(
    i: int, state: str, start: datetime | None, end: datetime | None = None, **kw: str
) -> PastFix:
    return PastFix(
        i,
        kw.get("action", REQ.action),
        kw.get("target", REQ.target),
        kw.get("group"),
        state,
        start or T0,
        start,
        end,
    )


def test_nothing_in_the_way_allows() -> None:
    assert evaluate(REQ, [], Policy(), T0).allowed


def test_mode_off_refuses() -> None:
    verdict = evaluate(REQ, [], Policy(mode="off"), T0)
    assert (verdict.allowed, verdict.gate) == (False, "mode")


def test_lock() -> None:
    other_action = _fix(1, "running", T0 - M, action="redis.flushdb")
    assert evaluate(REQ, [other_action], Policy(), T0).gate == "lock"


def test_cooldown_then_allowed() -> None:
    done = _fix(1, "succeeded", T0 - 20 * M, T0 - 5 * M)
    policy = Policy(cooldown=10 * M)
    assert evaluate(REQ, [done], policy, T0).gate == "cooldown"
    assert evaluate(REQ, [done], policy, T0 + 5 * M).allowed


def test_max_runs_and_budget() -> None:
    runs = [_fix(i, "succeeded", T0 - (50 - i) * M, T0 - (49 - i) * M) for i in range(3)]
    policy = Policy(cooldown=timedelta(0), max_runs=3, runs_window=timedelta(hours=1))
    assert evaluate(REQ, runs, policy, T0).gate == "max_runs"
    others = [replace(r, target=f"t{r.fix_id}") for r in runs]
    assert evaluate(REQ, others, replace(policy, hourly_budget=3), T0).gate == "budget"
    assert evaluate(REQ, others, replace(policy, hourly_budget=4), T0).allowed


def test_backoff_doubles_and_resets_after_a_healthy_period() -> None:
    policy = Policy(cooldown=timedelta(0), backoff_base=4 * M, healthy_reset=timedelta(hours=1))
    assert backoff_delay(3, policy) == 16 * M
    assert backoff_delay(100, policy) == policy.backoff_max
    fails = [
        _fix(1, "failed", T0 - 10 * M, T0 - 9 * M),
        _fix(2, "rolled_back", T0 - 3 * M, T0 - 2 * M),
    ]
    verdict = evaluate(REQ, fails, policy, T0)
    assert verdict.gate == "backoff"
    assert "2 consecutive" in verdict.reason
    assert evaluate(REQ, fails, policy, T0 + 6 * M).allowed
    old = [
        replace(
            f,
            started_at=f.started_at - timedelta(hours=3),
            finished_at=f.finished_at - timedelta(hours=3),
        )
        for f in fails
    ]  # type: ignore[operator]
    assert evaluate(REQ, old, policy, T0).allowed


def test_breaker_opens_after_k_failures_and_escalates() -> None:
    policy = Policy(
        cooldown=timedelta(0), backoff_base=timedelta(0), breaker_failures=2, max_runs=10
    )
    fails = [_fix(i, "failed", T0 - (10 - i) * M, T0 - (9 - i) * M) for i in range(2)]
    verdict = evaluate(REQ, fails, policy, T0)
    assert (verdict.gate, verdict.escalate) == ("breaker", True)
    assert evaluate(REQ, fails, policy, T0 + policy.breaker_hold).allowed
    healed = [*fails, _fix(5, "succeeded", T0 - 2 * M, T0 - M)]
    assert evaluate(REQ, healed, policy, T0).allowed


def test_flapping_guard() -> None:
    seen = [_fix(i, "refused", None) for i in range(6)]
    seen = [replace(s, requested_at=T0 - i * M) for i, s in enumerate(seen)]
    verdict = evaluate(REQ, seen, Policy(flap_count=6), T0)
    assert (verdict.gate, verdict.escalate) == ("flapping", True)


def test_blast_radius() -> None:
    members = ("w1", "w2", "w3", "w4", "w5", "w6")
    req = Request("service.restart", "w1", "web", members)
    busy = [_fix(1, "running", T0 - M, action="service.restart", target="w2")]
    policy = Policy(blast_radius=0.34)
    assert evaluate(req, busy, policy, T0).allowed  # 2 of 6 allowed
    busy.append(_fix(2, "running", T0 - M, action="service.restart", target="w3"))
    assert evaluate(req, busy, policy, T0).gate == "blast_radius"
    sick = [
        replace(_fix(i, "refused", None, target=m), requested_at=T0 - M)
        for i, m in enumerate(members[1:4])
    ]
    verdict = evaluate(req, sick, policy, T0)
    assert (verdict.gate, verdict.escalate) == ("blast_radius", True)


def test_maintenance_windows() -> None:
    req = replace(REQ, downtime=True)
    assert evaluate(req, [], Policy(), T0).gate == "maintenance"
    policy = Policy(maintenance_windows=parse_windows("mon 11:00-13:00"))
    assert evaluate(req, [], policy, T0).allowed
    assert evaluate(req, [], policy, T0 + timedelta(days=1)).gate == "maintenance"
    wrap = parse_windows("daily 22:00-02:00")[0]
    assert wrap.contains(T0.replace(hour=23))
    assert wrap.contains(T0.replace(hour=1))
    assert not wrap.contains(T0)
    assert parse_windows("*")[0].contains(T0)
    with pytest.raises(ConfigError):
        parse_windows("someday 25:00-26:00")


def test_overrides_per_action_and_target() -> None:
    pipeline = Pipeline.model_validate(
        {
            "targets": [
                {"name": "tmp", "kind": "logdir", "path": "/tmp", "gates": {"cooldown": "1m"}}
            ],
            "gates": {"files.clean_temp": {"cooldown": "1h", "max_runs": 9}},
        }
    )
    policy = resolve_policy(load_settings(environ={}), pipeline, "files.clean_temp", "tmp")
    assert (policy.cooldown, policy.max_runs) == (M, 9)


def test_approval_ttl() -> None:
    ttl = timedelta(hours=1)
    ok = [ApprovalRecord("approved", "ann", T0 + 10 * M)]
    assert approval_state(T0, ok, ttl, T0 + 11 * M)[0] == "approved"
    assert approval_state(T0, ok, ttl, T0 + ttl)[0] == "expired"
    late = [ApprovalRecord("approved", "ann", T0 + 2 * ttl)]
    assert approval_state(T0, late, ttl, T0 + 2 * ttl)[0] == "expired"
    assert approval_state(T0, [], ttl, T0)[0] == "waiting"
    assert approval_state(T0, [ApprovalRecord("rejected", "bob", T0)], ttl, T0)[0] == "rejected"


# -- property tests ----------------------------------------------------------------------

POLICY = Policy(
    mode="auto",
    cooldown=5 * M,
    backoff_base=2 * M,
    backoff_max=20 * M,
    healthy_reset=30 * M,
    max_runs=2,
    runs_window=30 * M,
    hourly_budget=4,
    flap_count=1000,
    breaker_failures=2,
    breaker_hold=timedelta(hours=2),
)
PAIRS = [("a.x", "t1"), ("a.y", "t1"), ("a.x", "t2"), ("a.y", "t3")]
events = st.lists(
    st.tuples(
        st.integers(0, 12),  # minutes since the previous event
        st.sampled_from(["request", "ok", "fail"]),
        st.integers(0, len(PAIRS) - 1),
    ),
    max_size=80,
)


def _simulate(seq: list[tuple[int, str, int]]) -> list[PastFix]:
    now, history, next_id = T0, [], 1
    for minutes, kind, index in seq:
        now += minutes * M
        action, target = PAIRS[index]
        if kind == "request":
            verdict = evaluate(Request(action, target), history, POLICY, now)
            state, start = ("running", now) if verdict.allowed else ("refused", None)
            history.append(PastFix(next_id, action, target, None, state, now, start, None))
            next_id += 1
        else:
            running = [p for p in history if p.state == "running" and p.target == target]
            if running:
                done = "succeeded" if kind == "ok" else "failed"
                history[history.index(running[0])] = replace(
                    running[0], state=done, finished_at=now
                )
    return history


@settings(max_examples=300, deadline=None)
@given(events)
def test_invariants_hold_over_random_sequences(seq: list[tuple[int, str, int]]) -> None:
    applied = sorted((p for p in _simulate(seq) if p.started_at), key=lambda p: p.started_at)  # type: ignore[arg-type,return-value]
    for i, p in enumerate(applied):
        earlier = applied[:i]
        start = p.started_at
        assert start is not None
        # lock: nothing else on the target still running when p started
        assert all(
            q.finished_at is not None and q.finished_at <= start
            for q in earlier
            if q.target == p.target
        )
        same = [q for q in earlier if (q.action, q.target) == (p.action, p.target)]
        if same:  # cooldown after the previous run of the pair ended
            assert start >= same[-1].finished_at + POLICY.cooldown  # type: ignore[operator]
        window = [q for q in same if q.started_at > start - POLICY.runs_window]  # type: ignore[operator]
        assert len(window) + 1 <= POLICY.max_runs
        hour = [q for q in earlier if q.started_at > start - timedelta(hours=1)]  # type: ignore[operator]
        assert len(hour) + 1 <= POLICY.hourly_budget
        chain = 0
        for q in reversed(same):  # breaker: K consecutive recent failures hold the pair
            if q.state != "failed" or q.finished_at < start - POLICY.breaker_hold:  # type: ignore[operator]
                break
            chain += 1
        assert chain < POLICY.breaker_failures


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 240),
    st.lists(st.tuples(st.integers(0, 300), st.booleans()), max_size=5),
    st.integers(0, 400),
)
def test_expired_approval_never_executes(
    ttl_min: int, approvals: list[tuple[int, bool]], at: int
) -> None:
    ttl, now = ttl_min * M, T0 + at * M
    records = [
        ApprovalRecord("approved" if ok else "rejected", "x", T0 + m * M) for m, ok in approvals
    ]
    state, _ = approval_state(T0, records, ttl, now)
    if state == "approved":
        assert now < T0 + ttl
        assert any(r.verdict == "approved" and r.ts <= T0 + ttl for r in records)
        assert not any(r.verdict == "rejected" and r.ts <= T0 + ttl for r in records)


def test_blast_radius_counts_the_hosts_of_a_fleet_action() -> None:
    """ansible.playbook: one fix changing 2 of 3 hosts at once is 2 hosts, not 1 fix."""
    now = datetime(2026, 1, 1, 12)
    wide = Request("ansible.playbook", "web", hosts=2, fleet=3)
    verdict = evaluate(wide, [], Policy(blast_radius=0.34), now)
    assert (verdict.allowed, verdict.gate) == (False, "blast_radius")
    assert "batch of 2 of 3 hosts" in verdict.reason
    assert evaluate(replace(wide, hosts=1), [], Policy(blast_radius=0.34), now).allowed
    assert evaluate(wide, [], Policy(blast_radius=0.67), now).allowed
    tenth = Request("ansible.playbook", "web", hosts=100, fleet=1000)
    assert evaluate(tenth, [], Policy(blast_radius=0.1), now).allowed
    assert not evaluate(replace(tenth, hosts=101), [], Policy(blast_radius=0.1), now).allowed
