"""ansible.playbook against three real sshd hosts (127.0.0.2–4), through the executor.

ansible-playbook runs are slow (seconds each), so the module has few of them: a dry run
(check mode), one rollout, one failing rollout; the refusals run nothing at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autofix.actions.ansible import Playbook, batch_failed, batches, parse_events
from autofix.actions.base import Context, NoOp, Step
from autofix.config import load_settings
from autofix.errors import RefusedError
from autofix.executor import Executor
from autofix.pipeline import Pipeline
from autofix.store import MetricStore
from autofix.targets import AnsibleTarget
from tests.servers import ServerUnavailableError
from tests.sshd import SshFleet, ssh_fleet

PLAYBOOKS = Path(__file__).parent / "playbooks"
LOG = "line one\nline two\n"


@pytest.fixture(scope="module")
def fleet() -> Iterator[SshFleet]:
    try:
        with ssh_fleet() as started:
            yield started
    except ServerUnavailableError as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true but {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def logs(fleet: SshFleet) -> SshFleet:
    """Every host starts with the same app.log and nothing else."""
    for host in fleet.hosts:
        for old in host.directory.iterdir():
            old.unlink()
        (host.directory / "app.log").write_text(LOG)
    return fleet


def _target(fleet: SshFleet, **extra: Any) -> dict[str, Any]:
    return {
        "name": "web",
        "kind": "ansible",
        "playbook": str(PLAYBOOKS / "rotate.yml"),
        "rollback_playbook": str(PLAYBOOKS / "rotate-rollback.yml"),
        "hosts": fleet.inventory(),
        "params": {"suffix": r"[0-9]{1,2}"},
        "config": str(fleet.config),
        "timeout": "2m",
        **extra,
    }


def _executor(store: MetricStore, target: dict[str, Any], tmp_path: Path) -> Executor:
    settings = load_settings(
        environ={
            "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "q"),
            "AUTOFIX_FIX_MODE": "auto",
            "AUTOFIX_FIX_VERIFY_WAIT": "0s",
            # The check-mode plan runs once (no second check right before the change):
            # each ansible-playbook run costs seconds.
            "AUTOFIX_FIX_PRECHECK": "false",
        }
    )
    pipeline = Pipeline.model_validate({"targets": [target]})
    return Executor(store, pipeline, settings, sleep=lambda s: None)


def _state(fleet: SshFleet) -> dict[str, dict[str, str]]:
    return {
        h.name: {p.name: p.read_text() for p in sorted(h.directory.iterdir())} for h in fleet.hosts
    }


# -- real runs -------------------------------------------------------------------------


def test_check_mode_is_the_plan_and_changes_nothing(logs: SshFleet, tmp_path: Path) -> None:
    before = _state(logs)
    mtimes = {h.name: (h.directory / "app.log").stat().st_mtime_ns for h in logs.hosts}
    # (check mode: nothing may be touched, not even a timestamp)
    with MetricStore(tmp_path / "a.duckdb") as store:
        ex = _executor(store, _target(logs, serial=[1, "100%"]), tmp_path)
        record = ex.run("ansible.playbook", "web", {"suffix": "7"}, dry_run=True)
    # The default blast radius (0.34 of 3 hosts = 1 at once) refuses a batch of 2.
    assert (record.state, record.gate) == ("refused", "blast_radius")
    assert "batch of 2 of 3 hosts" in (record.reason or "")
    with MetricStore(tmp_path / "b.duckdb") as store:
        target = _target(logs, serial=[1, "100%"], gates={"blast_radius": 1.0}, min_healthy=0.3)
        ex = _executor(store, target, tmp_path)
        record = ex.run("ansible.playbook", "web", {"suffix": "7"}, dry_run=True)
    assert record.state == "planned", record.error
    assert [s["args"]["hosts"] for s in record.plan or []] == [["web1"], ["web2", "web3"]]
    assert record.plan is not None
    assert record.plan[0]["args"]["canary"] is True
    facts = record.facts or {}
    assert facts["check"] == {"web1": "changed", "web2": "changed", "web3": "changed"}
    assert "app.log.7" in facts["diff"]["web1"]  # the declared var reached the playbook
    assert _state(logs) == before
    assert {h.name: (h.directory / "app.log").stat().st_mtime_ns for h in logs.hosts} == mtimes


def test_rollout_canary_first_then_the_rest(logs: SshFleet, tmp_path: Path) -> None:
    target = _target(logs, serial=[1, "100%"], gates={"blast_radius": 1.0}, min_healthy=0.3)
    with MetricStore(tmp_path / "a.duckdb") as store:
        record = _executor(store, target, tmp_path).run("ansible.playbook", "web")
    assert record.state == "succeeded", record.error
    assert _state(logs) == {h.name: {"app.log.1": LOG} for h in logs.hosts}
    output = record.output or ""
    assert output.index("canary batch 1/2: web1 -> web1: changed") < output.index(
        "batch 2/2: web2, web3 -> web2: changed, web3: changed"
    )
    assert record.undo == {
        "hosts": ["web1", "web2", "web3"],
        "results": {"web1": "changed", "web2": "changed", "web3": "changed"},
    }
    # The canary host was changed before the second batch started.
    kept = {h.name: (h.directory / "app.log.1").stat().st_mtime for h in logs.hosts}
    assert kept["web1"] <= min(kept["web2"], kept["web3"])


def test_failing_host_stops_the_rollout_and_what_ran_is_rolled_back(
    logs: SshFleet, tmp_path: Path
) -> None:
    before = _state(logs)
    hosts = logs.inventory()
    hosts["web2"]["fail_rotation"] = True
    with MetricStore(tmp_path / "a.duckdb") as store:
        target = _target(logs, serial=[1], max_fail_percentage=0, hosts=hosts)
        ex = _executor(store, target, tmp_path)
        record = ex.run("ansible.playbook", "web")
        escalations = ex.audit.escalations(record.id)
    assert record.state == "rolled_back", record.error
    assert "batch 2/3" in (record.error or "")
    assert "web2: failed" in (record.error or "")
    assert "rotation refused on web2" in (record.error or "")
    # web3 was never touched; web1 (the canary) and web2 were put back as they were.
    assert _state(logs) == before
    assert "rollback on web1, web2 -> web1: changed, web2: changed" in (record.output or "")
    assert len(escalations) == 1


# -- refusals: nothing runs -------------------------------------------------------------


def _bound(fleet: SshFleet, params: dict[str, Any], **ctx: Any) -> Playbook:
    target = AnsibleTarget.model_validate(_target(fleet, host_label="instance"))
    action = Playbook.bind(target, params, Context(**ctx))
    assert isinstance(action, Playbook)
    return action


@pytest.mark.parametrize(
    "params",
    [
        {"hosts": []},
        {"hosts": ["all"]},
        {"hosts": ["web1,web2"]},
        {"hosts": ["web*"]},
        {"hosts": ["web1:&evil"]},
        {"hosts": ["evil"]},
        {"hosts": "web1,,all"},
        {"hosts": ","},
        {"suffix": "{{ lookup('pipe', 'touch /tmp/autofix-pwned') }}"},
        {"suffix": "1; rm -rf /"},
        {"suffix": ["1"]},
        {"ansible_connection": "local"},
        {"vars": {"suffix": "1"}},
        {"limit": "all"},
    ],
)
def test_hostile_or_empty_selections_are_refused(fleet: SshFleet, params: dict[str, Any]) -> None:
    with pytest.raises(RefusedError):
        _bound(fleet, params)
    assert not Path("/tmp/autofix-pwned").exists()


def test_labels_pick_a_host_of_the_group_and_nothing_else(fleet: SshFleet) -> None:
    hostile = {
        "hosts": "web1,evil-host",
        "limit": "evil-limit",
        "suffix": "{{ lookup('pipe','id') }}",
        "ansible_host": "10.9.9.9",
    }
    both = _bound(fleet, {"hosts": "web3, web1", "suffix": 7})  # as `--param` gives them
    assert (both.selection, both.extra_vars) == (["web1", "web3"], {"suffix": 7})
    picked = _bound(fleet, {}, labels={**hostile, "instance": "127.0.0.3:9100"})
    assert picked.selection == ["web2"]
    assert picked.extra_vars == {}
    inventory = picked._inventory()["all"]["children"]["web"]["hosts"]
    assert inventory == fleet.inventory()
    text = repr(picked._inventory()) + repr(picked.extra_vars) + repr(picked.footprint())
    assert not any(v in text for v in hostile.values())
    for outside in ("127.0.0.9:9100", "all", "web1,web2", "localhost"):
        with pytest.raises(RefusedError) as caught:
            _bound(fleet, {}, labels={"instance": outside})
        assert caught.value.gate == "allowlist"
    with pytest.raises(RefusedError):  # a label cannot reach past an explicit selection
        _bound(fleet, {"hosts": ["web1"]}, labels={"instance": "web3"})


def test_min_healthy_share_refuses_the_plan(fleet: SshFleet) -> None:
    action = _bound(fleet, {})
    facts = {
        "selection": ["web1", "web2", "web3"],
        "checked": True,
        "check": {"web1": "changed", "web2": "unreachable", "web3": "changed"},
    }
    with pytest.raises(RefusedError) as caught:
        action.plan(facts)  # 3 hosts - 1 unreachable - a batch of 1 < ceil(0.5 · 3)
    assert caught.value.gate == "min_healthy"
    ok = action.plan({**facts, "check": {"web1": "changed", "web2": "ok", "web3": "ok"}})
    assert not isinstance(ok, NoOp)
    assert [s.args["hosts"] for s in ok] == [["web1"]]
    assert isinstance(action.plan({**facts, "check": {"web1": "ok"}}), NoOp)
    with pytest.raises(RefusedError, match="check mode fails on web3"):
        action.plan({**facts, "check": {"web1": "changed", "web3": "failed"}})


def test_batches_and_fail_threshold_follow_ansible() -> None:
    hosts = [f"h{i}" for i in range(10)]
    assert batches(hosts, [1, "30%"]) == [["h0"], hosts[1:4], hosts[4:7], hosts[7:10]]
    assert batches(hosts[:3], [1, "25%"]) == [["h0"], ["h1"], ["h2"]]
    assert batches(hosts[:3], [5]) == [hosts[:3]]
    assert not batch_failed({"a": "changed", "b": "failed"}, ["a", "b", "c", "d"], 25)
    assert batch_failed({"a": "changed", "b": "failed", "c": "unreachable"}, ["a", "b", "c"], 50)
    assert batch_failed({"a": "failed"}, ["a"], 0)


def test_per_host_results_from_runner_events() -> None:
    events = [
        {"event": "runner_on_ok", "event_data": {"host": "a", "task": "t", "res": {}}},
        {
            "event": "runner_on_ok",
            "event_data": {
                "host": "b",
                "task": "copy",
                "res": {"changed": True, "diff": [{"after_header": "/x"}]},
            },
        },
        {
            "event": "runner_on_failed",
            "event_data": {"host": "c", "task": "fail", "res": {"msg": "boom"}},
        },
        {"event": "runner_on_unreachable", "event_data": {"host": "d", "task": "t", "res": {}}},
    ]
    stats = {
        "ok": {"a": 1, "b": 1},
        "changed": {"b": 1},
        "failures": {"c": 1},
        "dark": {"d": 1},
    }
    hosts, output = parse_events(events, stats)
    assert hosts == {"a": "ok", "b": "changed", "c": "failed", "d": "unreachable"}
    assert output == {
        "b": ["copy: changed\n+++ /x"],
        "c": ["fail: failed: boom"],
        "d": ["t: unreachable"],
    }


def test_audit_keeps_when_nothing_ran(fleet: SshFleet, tmp_path: Path) -> None:
    """A refused fix is on record with its gate, and nothing was written for Ansible."""
    with MetricStore(tmp_path / "a.duckdb") as store:
        ex = _executor(store, _target(fleet, host_label="instance"), tmp_path)
        record = ex.run("ansible.playbook", "web", {"hosts": []})
        assert (record.state, record.gate) == ("refused", "params")
        assert "empty host selection" in (record.reason or "")
        hostile = ex.run(
            "ansible.playbook",
            "web",
            inputs={"labels": {"instance": "evil:22"}},
        )
    assert (hostile.state, hostile.gate) == ("refused", "allowlist")
    assert "'evil:22'" in (hostile.reason or "")


def test_interrupted_rollout_is_escalated_at_start_up_without_running_ansible(
    tmp_path: Path,
) -> None:
    target = {
        "name": "web",
        "kind": "ansible",
        "playbook": str(tmp_path / "missing.yml"),  # would fail loudly if it were run
        "hosts": {"web1": {"ansible_host": "127.0.0.9"}},
    }
    with MetricStore(tmp_path / "a.duckdb") as store:
        ex = _executor(store, target, tmp_path)
        action = Playbook.bind(AnsibleTarget.model_validate(target), {}, Context())
        pointer = action.prepare([Step("batch", "canary batch 1/1: web1", {"hosts": ["web1"]})])
        fix_id = ex.audit.create("ansible.playbook", "web", None, {}, "test", {})
        ex.audit.append(fix_id, "running", "apply", undo=pointer)
        (record,) = ex.recover()
        escalations = ex.audit.escalations(fix_id)
    assert record.state == "interrupted"
    assert record.undo == {"hosts": ["web1"], "interrupted": True}  # for `fix rollback`
    assert "not re-read after a crash" in escalations[0]["reason"]
