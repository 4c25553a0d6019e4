"""Services: restart, stop+start, reload — through supervisord (XML-RPC) or systemd.

systemd is driven with ``systemctl`` argv lists built by ``systemctl_argv`` (the unit
name is validated by the pipelines schema and passed after ``--``). Verify is: the
service runs (a new pid after a restart, the same after a reload) and its health check,
when the target has one, passes again.
"""

from __future__ import annotations

import http.client
import time
import xmlrpc.client
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import psutil
from pydantic import Field

from autofix.actions.base import Action, Applied, Check, Context, Facts, NoOp, Params, Plan, Step
from autofix.errors import ActionError
from autofix.targets import SupervisorTarget, SystemdTarget

_RUNNING = {"RUNNING"}
_SYSTEMD_STATE = {
    "active": "RUNNING",
    "reloading": "RUNNING",
    "activating": "STARTING",
    "deactivating": "STOPPING",
    "inactive": "STOPPED",
    "failed": "FATAL",
}


def systemctl_argv(verb: str, unit: str, *, user: bool = False) -> list[str]:
    """argv for ``systemctl VERB UNIT`` (never a shell; the unit after ``--``).

    >>> systemctl_argv("restart", "nginx.service")
    ['systemctl', '--no-ask-password', '--no-pager', 'restart', '--', 'nginx.service']
    """
    if verb not in {"restart", "start", "stop", "reload", "show"}:
        raise ValueError(f"unsupported systemctl verb {verb!r}")
    argv = ["systemctl", "--no-ask-password", "--no-pager"]
    if user:
        argv.append("--user")
    argv.append(verb)
    if verb == "show":
        argv.append("--property=ActiveState,SubState,MainPID")
    return [*argv, "--", unit]


def parse_systemctl_show(text: str) -> dict[str, Any]:
    """``systemctl show`` key=value output → state (supervisor vocabulary) and pid."""
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    active = values.get("ActiveState", "unknown")
    return {
        "state": _SYSTEMD_STATE.get(active, active.upper()),
        "pid": int(values.get("MainPID", "0") or 0),
        "detail": f"{active}/{values.get('SubState', '?')}",
    }


def parse_supervisor_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """supervisord ``getProcessInfo`` → state, pid and seconds since it started.

    >>> parse_supervisor_info({"statename": "RUNNING", "pid": 7, "start": 100, "now": 130})
    {'state': 'RUNNING', 'pid': 7, 'detail': '', 'uptime': 30.0}
    """
    start, now = float(info.get("start", 0) or 0), float(info.get("now", 0) or 0)
    return {
        "state": str(info.get("statename", "UNKNOWN")),
        "pid": int(info.get("pid", 0) or 0),
        "detail": str(info.get("description", "")),
        "uptime": now - start if start > 0 and now >= start else None,
    }


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class _Backend:
    def __init__(self, target: SupervisorTarget | SystemdTarget, ctx: Context) -> None:
        self.target = target
        self.ctx = ctx

    def state(self) -> dict[str, Any]:
        if isinstance(self.target, SystemdTarget):
            done = self.ctx.runner(
                systemctl_argv("show", self.target.unit, user=self.target.user), self.ctx.timeout
            )
            if done.returncode != 0:
                raise ActionError(f"systemctl show {self.target.unit}: {done.stderr.strip()}")
            return parse_systemctl_show(done.stdout)
        return parse_supervisor_info(self._rpc("getProcessInfo", self.target.program))

    def do(self, verb: str) -> str:
        if isinstance(self.target, SystemdTarget):
            argv = systemctl_argv(verb, self.target.unit, user=self.target.user)
            done = self.ctx.runner(argv, self.ctx.timeout)
            if done.returncode != 0:
                raise ActionError(
                    f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}"
                )
            return f"systemctl {verb} {self.target.unit}"
        program = self.target.program
        if verb == "reload":
            self._rpc("signalProcess", program, "HUP")
        elif verb == "stop":
            self._rpc("stopProcess", program, True)
        elif verb == "start":
            self._rpc("startProcess", program, True)
        else:
            raise ValueError(verb)
        return f"supervisor {verb} {program}"

    def _rpc(self, method: str, *args: Any) -> Any:
        assert isinstance(self.target, SupervisorTarget)
        try:
            with xmlrpc.client.ServerProxy(
                self.target.url, transport=_TimeoutTransport(self.ctx.timeout)
            ) as proxy:
                return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as exc:
            raise ActionError(f"supervisor {method}({args[0]}): {exc.faultString}") from None
        except OSError as exc:
            raise ActionError(f"supervisor at {self.target.url}: {exc}") from None

    def health(self) -> tuple[bool | None, str]:
        if self.target.health_url is None:
            return None, "no health check"
        try:
            with self.ctx.http(timeout=min(self.ctx.probe_timeout, self.ctx.timeout)) as client:
                reply = client.get(self.target.health_url)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return reply.is_success, f"HTTP {reply.status_code}"


def service_state(target: SupervisorTarget | SystemdTarget, ctx: Context) -> dict[str, Any]:
    """The service manager's view: ``state`` (supervisord's names), ``pid``, ``detail``
    and ``uptime`` (seconds since it started, None when unknown)."""
    state = _Backend(target, ctx).state()
    if state.get("uptime") is None and state["pid"]:
        try:
            state["uptime"] = time.time() - psutil.Process(state["pid"]).create_time()
        except psutil.Error:
            state["uptime"] = None
    return state


class ServiceParams(Params):
    only_if_unhealthy: bool = Field(
        False, description="No-op when the service runs and its health check passes."
    )


class _ServiceAction(Action[ServiceParams, SupervisorTarget | SystemdTarget]):
    target_kinds = (SupervisorTarget, SystemdTarget)
    params_model = ServiceParams
    idempotent = True
    verbs: tuple[str, ...] = ()

    @property
    def backend(self) -> _Backend:
        return _Backend(self.target, self.ctx)

    def facts(self) -> Facts:
        backend = self.backend
        facts = backend.state()
        facts["healthy"], facts["health"] = backend.health()
        return facts

    def _healthy(self, facts: Facts) -> bool:
        return facts["state"] in _RUNNING and facts["healthy"] is not False

    def plan(self, facts: Facts) -> Plan:
        if self.params.only_if_unhealthy and self._healthy(facts):
            return NoOp(f"running (pid {facts['pid']}) and healthy")
        return [Step(verb, f"{verb} {self._unit()}") for verb in self._verbs(facts)]

    def _verbs(self, facts: Facts) -> Sequence[str]:
        return self.verbs

    def _unit(self) -> str:
        return self.target.unit if isinstance(self.target, SystemdTarget) else self.target.program

    def apply(self, steps: Sequence[Step]) -> Applied:
        return Applied("\n".join(self.backend.do(step.op) for step in steps))

    def verify(self, before: Facts, after: Facts) -> Check:
        if after["state"] not in _RUNNING:
            return Check(False, f"state {after['state']} ({after['detail']})")
        if after["healthy"] is False and not self.ctx.condition:
            return Check(False, f"health check failed: {after['health']}")
        if before["pid"] and after["pid"] == before["pid"]:
            return Check(False, f"pid {after['pid']} unchanged: not restarted")
        return Check(True, f"running as pid {after['pid']}, {after['health']}")


class Restart(_ServiceAction):
    name = "service.restart"
    summary = "Restart a service (supervisord: stop then start; systemd: restart)."

    def _verbs(self, facts: Facts) -> Sequence[str]:
        if isinstance(self.target, SystemdTarget):
            return ("restart",)
        return (
            ("stop", "start")
            if facts["state"] in {"RUNNING", "STARTING", "BACKOFF"}
            else ("start",)
        )


class StopStart(_ServiceAction):
    name = "service.stop_start"
    summary = "Stop, then start a service (downtime: needs a maintenance window)."
    downtime = True
    verbs = ("stop", "start")


class Reload(_ServiceAction):
    name = "service.reload"
    summary = "Reload a service's configuration (supervisord: SIGHUP; systemd: reload)."
    verbs = ("reload",)

    def verify(self, before: Facts, after: Facts) -> Check:
        if after["state"] not in _RUNNING:
            return Check(False, f"state {after['state']} ({after['detail']})")
        if after["healthy"] is False and not self.ctx.condition:
            return Check(False, f"health check failed: {after['health']}")
        if before["pid"] and after["pid"] != before["pid"]:
            return Check(False, f"pid changed {before['pid']} -> {after['pid']}: it restarted")
        return Check(True, f"reloaded, pid {after['pid']}, {after['health']}")
