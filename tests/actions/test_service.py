"""service.* against a real supervisord; systemd argv building and parsing (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest

from autofix.actions.base import ActionError, CommandResult, Context
from autofix.actions.service import (
    Reload,
    Restart,
    StopStart,
    parse_supervisor_info,
    parse_systemctl_show,
    systemctl_argv,
)
from autofix.pipeline import SupervisorTarget, SystemdTarget
from tests.actions._util import run_phases
from tests.servers import Supervisor

RECORDED_SHOW = "ActiveState=active\nSubState=running\nMainPID=4242\n"


def _target(sup: Supervisor) -> SupervisorTarget:
    return SupervisorTarget(
        name="demo", kind="supervisor", url=sup.url, program=sup.program, health_url=sup.health_url
    )


def _health(sup: Supervisor) -> dict[str, int]:
    with httpx.Client(timeout=5) as client:
        data: dict[str, int] = client.get(sup.health_url).json()
        return data


def test_restart_gives_a_new_healthy_pid(supervisor: Supervisor) -> None:
    action = Restart.bind(_target(supervisor), {}, Context(timeout=20))
    before, applied, check = run_phases(action)
    assert check.ok, check.reason
    assert "supervisor stop demo" in applied.output
    assert _health(supervisor)["pid"] != before["pid"]
    assert Restart.rolls_back is False
    with pytest.raises(ActionError):
        action.rollback({})


def test_reload_sends_hup_and_keeps_the_pid(supervisor: Supervisor) -> None:
    reloads = _health(supervisor)["reloads"]
    action = Reload.bind(_target(supervisor), {}, Context(timeout=20))
    before, _, check = run_phases(action)
    assert check.ok, check.reason
    assert _health(supervisor) == {"pid": before["pid"], "reloads": reloads + 1}


def test_only_if_unhealthy_is_a_noop_on_a_healthy_service(supervisor: Supervisor) -> None:
    action = Restart.bind(_target(supervisor), {"only_if_unhealthy": True}, Context())
    plan = action.plan(action.facts())
    assert getattr(plan, "reason", "").startswith("running")


def test_unknown_program_is_an_action_error(supervisor: Supervisor) -> None:
    target = SupervisorTarget(name="x", kind="supervisor", url=supervisor.url, program="nope")
    with pytest.raises(ActionError, match="BAD_NAME"):
        Restart.bind(target, {}, Context()).facts()


def test_stop_start_needs_downtime() -> None:
    assert StopStart.downtime is True
    assert Restart.downtime is False


def test_systemctl_argv() -> None:
    assert systemctl_argv("restart", "nginx.service") == [
        "systemctl", "--no-ask-password", "--no-pager", "restart", "--", "nginx.service",
    ]  # fmt: skip
    assert systemctl_argv("show", "a@b.service", user=True)[4:] == [
        "show", "--property=ActiveState,SubState,MainPID", "--", "a@b.service",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unsupported"):
        systemctl_argv("mask", "x.service")


def test_parse_recorded_systemctl_show() -> None:
    assert parse_systemctl_show(RECORDED_SHOW) == {
        "state": "RUNNING",
        "pid": 4242,
        "detail": "active/running",
    }
    assert parse_systemctl_show("ActiveState=failed\nMainPID=0\n")["state"] == "FATAL"


def test_parse_recorded_supervisor_info() -> None:
    info = {"statename": "RUNNING", "pid": 17, "description": "pid 17, uptime 0:00:03"}
    assert parse_supervisor_info(info)["pid"] == 17


def test_systemd_restart_runs_argv_through_the_runner() -> None:
    calls: list[list[str]] = []
    pids = iter(["100", "200"])

    def runner(argv: Sequence[str], timeout: float) -> CommandResult:
        calls.append(list(argv))
        out = (
            f"ActiveState=active\nSubState=running\nMainPID={next(pids)}\n"
            if "show" in argv
            else ""
        )
        return CommandResult(tuple(argv), 0, out, "")

    target = SystemdTarget(name="web", kind="systemd", unit="web.service")
    action = Restart.bind(target, {}, Context(runner=runner))
    before = action.facts()
    steps = action.plan(before)
    assert [s.op for s in steps] == ["restart"]  # type: ignore[union-attr]
    action.apply(steps)  # type: ignore[arg-type]
    assert calls[1] == systemctl_argv("restart", "web.service")
    assert action.verify(before, action.facts()).ok
    assert all(isinstance(a, str) for call in calls for a in call)


def test_systemd_unit_names_are_validated() -> None:
    for bad in ("web.service; rm -rf /", "$(id).service", "../x.service", "a\nb.service"):
        with pytest.raises(ValueError, match="unit"):
            SystemdTarget(name="w", kind="systemd", unit=bad)
