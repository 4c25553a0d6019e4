"""The pause and silences hold the service's fixes: rules still decide (shadow/silenced,
recorded once per hold), nothing is applied, and the next run after the hold acts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from autofix import pause, silences
from autofix.errors import InputError, PausedError
from autofix.jobs import Service
from autofix.store import MetricStore
from tests.test_jobs import SPOOL_FULL, T0, Clock, _size_sample, spool_service


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[tuple[Service, Clock, Path]]:
    rules = [
        {
            "name": "spool-full",
            "when": SPOOL_FULL,
            "actions": [{"action": "files.clean_temp", "params": {"older_than": "1h"}}],
            "horizon": "10m",
        }
    ]
    with spool_service(tmp_path, rules, AUTOFIX_HOSTNAME="h") as made:
        yield made


def _stale_file(root: Path) -> Path:
    old = root / "old.tmp"
    old.write_bytes(b"x" * 800)
    stamp = (T0 - timedelta(days=1)).replace(tzinfo=UTC).timestamp()
    os.utime(old, (stamp, stamp))
    return old


def _decisions(service: Service) -> list[tuple[str, str]]:
    rows = service.store._run("SELECT rule, mode FROM decisions ORDER BY ts, rowid")
    return [(r[0], r[1]) for r in rows]


def test_pause_records_shadow_once_applies_nothing_and_resume_acts(
    svc: tuple[Service, Clock, Path],
) -> None:
    service, clock, root = svc
    old = _stale_file(root)
    pause.pause(service.store, clock.now, reason="deploy", actor="cli:ann")
    for _ in range(3):  # three runs while paused: one decision, in shadow, nothing applied
        clock.now += timedelta(seconds=20)
        _size_sample(service, clock.now - timedelta(seconds=5), 800)
        run = service.run_job("remediate")
        assert run.ok, run.error
    assert old.exists()
    assert _decisions(service) == [("spool-full", "shadow")]
    assert service.executor.audit.list() == []
    reason = service.store._run("SELECT reason FROM decisions")[0][0]
    assert "paused since" in reason
    assert "cli:ann" in reason
    assert "deploy" in reason
    # Resumed: the next run decides again and the fix is applied.
    clock.now += timedelta(seconds=20)
    assert pause.resume(service.store, clock.now, actor="cli:ann") is not None
    _size_sample(service, clock.now - timedelta(seconds=5), 800)
    run = service.run_job("remediate")
    assert run.ok, run.error
    assert not old.exists()
    assert [r.state for r in service.executor.audit.list()] == ["succeeded"]
    assert _decisions(service)[-1] == ("spool-full", "auto")


def test_a_pause_ends_by_itself(svc: tuple[Service, Clock, Path]) -> None:
    service, clock, _ = svc
    held = pause.pause(
        service.store, clock.now, reason="window", actor="api:ops", duration=timedelta(minutes=5)
    )
    assert pause.current(service.store, clock.now + timedelta(minutes=4)) == held
    assert pause.current(service.store, clock.now + timedelta(minutes=5)) is None
    with pytest.raises(InputError, match="reason"):
        pause.pause(service.store, clock.now, reason="  ", actor="x")


def test_silence_records_silenced_once_and_expires(svc: tuple[Service, Clock, Path]) -> None:
    service, clock, root = svc
    old = _stale_file(root)
    made = silences.add(
        service.store,
        clock.now,
        silences.parse_matchers(["target=spool", "rule=~spool-.*"]),
        creator="cli:ann",
        comment="known, cleanup tonight",
        duration=timedelta(minutes=1),
    )
    for _ in range(2):
        clock.now += timedelta(seconds=20)
        _size_sample(service, clock.now - timedelta(seconds=5), 800)
        assert service.run_job("remediate").summary["held"] == 1
    assert old.exists()
    assert _decisions(service) == [("spool-full", "silenced")]
    # A silence of another target does not hold this one; the expired one holds nothing.
    silences.add(
        service.store,
        clock.now,
        silences.parse_matchers(["target=other"]),
        creator="cli:ann",
        comment="x",
        duration=timedelta(hours=1),
    )
    clock.now += timedelta(seconds=30)  # past the first silence's end
    assert made.state(clock.now) == "expired"
    _size_sample(service, clock.now - timedelta(seconds=5), 800)
    run = service.run_job("remediate")
    assert run.summary["held"] == 0
    assert not old.exists()


def test_paused_executor_plans_operator_fixes_and_refuses_approvals(
    svc: tuple[Service, Clock, Path],
) -> None:
    service, clock, root = svc
    old = _stale_file(root)
    pause.pause(service.store, clock.now, reason="incident review", actor="cli:ann")
    record = service.executor.run("files.clean_temp", "spool", {"older_than": "1h"})
    assert record.state == "planned"
    assert "paused since" in (record.reason or "")
    assert old.exists()
    with pytest.raises(PausedError, match="autofix resume"):
        service.executor.approve(1, "cli:ann")


def test_matchers_parse_and_refuse_silencing_everything() -> None:
    m = silences.parse_matcher('severity!~"info|debug"')
    assert (m.name, m.op, m.value) == ("severity", "!~", "info|debug")
    assert silences.matches([m], {"severity": "critical"})
    assert not silences.matches([m], {"severity": "info"})
    assert silences.matches(silences.parse_matchers(["host=web-1"]), {"host": "web-1"})
    for bad in ("target", "9x=1", "a=~(", ""):
        with pytest.raises(InputError):
            silences.parse_matchers([bad])
    with pytest.raises(InputError, match="everything"):
        silences.parse_matchers(["target=~.*"])
    facts = silences.decision_facts("r", None, "h1", {"target": "db", "rule": "spoofed"})
    assert facts == {"target": "db", "rule": "r", "host": "h1"}  # rule/host never from labels


def test_a_hold_past_the_year_9999_is_bad_input(tmp_path: Path) -> None:
    forever = timedelta(weeks=599474)  # what the API's duration pattern lets through
    with MetricStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(InputError, match="year 9999"):
            silences.add(store, T0, silences.parse_matchers(["target=web"]), creator="t",
                         comment="known", duration=forever)  # fmt: skip
        with pytest.raises(InputError, match="year 9999"):
            pause.pause(store, T0, reason="migration", actor="t", duration=forever)
        assert silences.in_force(store, T0) == []
        assert pause.current(store, T0) is None


def test_holds_survive_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with MetricStore(path) as store:
        pause.pause(store, T0, reason="migration", actor="cli:ann")
        silences.add(
            store,
            T0,
            silences.parse_matchers(["target=web"]),
            creator="cli:ann",
            comment="c",
            duration=timedelta(hours=2),
        )
    with MetricStore(path) as store:
        assert pause.current(store, T0 + timedelta(hours=1)) is not None
        assert [s.id for s in silences.in_force(store, T0 + timedelta(hours=1))] == [1]
        expired = silences.expire(store, 1, T0 + timedelta(hours=1), actor="cli:bob")
        assert expired.expired_by == "cli:bob"
        assert silences.in_force(store, T0 + timedelta(hours=1)) == []
        with pytest.raises(InputError, match="already expired"):
            silences.expire(store, 1, T0 + timedelta(hours=1), actor="cli:bob")
