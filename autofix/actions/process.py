"""Processes: signal by pidfile / name / cmdline with TERM → wait → KILL, restart, reload.

Processes are identified by (pid, create_time) so a pid reused while we wait is never
signalled. The matcher comes from the ``process`` target; parameters only choose the
signal and the grace period.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any

import psutil
from pydantic import Field

from autofix.actions.base import Action, Applied, Check, Facts, NoOp, Params, Plan, Step
from autofix.config import Duration
from autofix.errors import ActionError
from autofix.targets import ProcessTarget


class SignalName(StrEnum):
    TERM = "TERM"
    INT = "INT"
    QUIT = "QUIT"
    HUP = "HUP"
    USR1 = "USR1"
    USR2 = "USR2"
    KILL = "KILL"


_ENDING = {SignalName.TERM, SignalName.INT, SignalName.QUIT, SignalName.KILL}


def parse_pidfile(text: str) -> int | None:
    """The pid in a pidfile's text, or None when it holds none.

    >>> parse_pidfile("1234\\n")
    1234
    """
    first = text.strip().split("\n", 1)[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def _alive(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class SignalParams(Params):
    signal: SignalName = Field(SignalName.TERM, description="Signal to send.")
    grace: Duration = Field(timedelta(seconds=10), description="Wait before escalating to KILL.")
    escalate: bool = Field(True, description="KILL what survives TERM/INT/QUIT after the grace.")
    expect_restart: bool = Field(
        False, description="Verify that a new process replaced the old (a supervised worker)."
    )


class SignalProcess(Action[SignalParams, ProcessTarget]):
    name = "process.signal"
    summary = "Send a signal to the target's processes; TERM escalates to KILL after a grace."
    params_model = SignalParams
    target_kinds = (ProcessTarget,)
    idempotent = False

    def facts(self) -> Facts:
        me = os.getpid()
        found: list[dict[str, Any]] = []
        if self.target.pidfile is not None:
            try:
                pid = parse_pidfile(self.target.pidfile.read_text(errors="replace"))
            except FileNotFoundError:
                pid = None
            candidates = [psutil.Process(pid)] if pid and psutil.pid_exists(pid) else []
        else:
            pattern = re.compile(self.target.cmdline) if self.target.cmdline else None
            candidates = []
            for proc in psutil.process_iter(["name", "cmdline"]):
                if pattern is not None:
                    if pattern.search(" ".join(proc.info["cmdline"] or ())):
                        candidates.append(proc)
                elif proc.info["name"] == self.target.process_name:
                    candidates.append(proc)
        for proc in candidates:
            try:
                if proc.pid != me and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append({"pid": proc.pid, "created": proc.create_time()})
            except psutil.Error:
                continue
        return {"processes": sorted(found, key=lambda p: int(p["pid"]))}

    def plan(self, facts: Facts) -> Plan:
        procs = facts["processes"]
        if not procs:
            return NoOp(f"no process matches target {self.target.name!r}")
        sig = self.params.signal
        steps = [
            Step(
                "signal",
                f"send {sig.value} to pid(s) {[p['pid'] for p in procs]}",
                {"signal": sig.value, "processes": procs},
            )
        ]
        if self.params.escalate and sig in _ENDING - {SignalName.KILL}:
            grace = self.params.grace.total_seconds()
            steps.append(
                Step(
                    "escalate",
                    f"after {grace:g}s send KILL to survivors",
                    {"grace": grace, "processes": procs},
                )
            )
        return steps

    def apply(self, steps: Sequence[Step]) -> Applied:
        lines = []
        for step in steps:
            procs = [(int(p["pid"]), float(p["created"])) for p in step.args["processes"]]
            if step.op == "signal":
                lines += self._send(procs, getattr(signal, f"SIG{step.args['signal']}"))
            elif step.op == "escalate":
                deadline = time.monotonic() + float(step.args["grace"])
                while time.monotonic() < deadline and any(_alive(*p) for p in procs):
                    self.ctx.sleep(0.05)
                survivors = [p for p in procs if _alive(*p)]
                lines += (
                    self._send(survivors, signal.SIGKILL)
                    if survivors
                    else ["all exited within the grace"]
                )
        return Applied("\n".join(lines))

    def _send(self, procs: Sequence[tuple[int, float]], sig: signal.Signals) -> list[str]:
        lines = []
        for pid, created in procs:
            if not _alive(pid, created):
                lines.append(f"pid {pid}: already gone")
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                lines.append(f"pid {pid}: already gone")
            except PermissionError:
                raise ActionError(f"pid {pid}: not permitted to send {sig.name}") from None
            else:
                lines.append(f"pid {pid}: sent {sig.name}")
        return lines

    def verify(self, before: Facts, after: Facts) -> Check:
        old = {(p["pid"], p["created"]) for p in before["processes"]}
        now = {(p["pid"], p["created"]) for p in after["processes"]}
        if self.params.signal in _ENDING:
            if old & now:
                return Check(False, f"still running: {sorted(p for p, _ in old & now)}")
            if self.params.expect_restart and not now:
                return Check(False, "no new process came up")
            return Check(True, f"old process(es) gone; now {sorted(p for p, _ in now)}")
        if old - now:
            return Check(
                False, f"exited after {self.params.signal.value}: {sorted(p for p, _ in old - now)}"
            )
        return Check(True, f"{len(old)} process(es) still running after {self.params.signal.value}")


class RestartParams(SignalParams):
    expect_restart: bool = Field(True, description="Verify that a new process came up.")


class RestartWorker(SignalProcess):
    name = "process.restart"
    summary = "Restart a supervised worker: TERM (then KILL), verify a new pid came up."
    params_model = RestartParams


class ReloadParams(SignalParams):
    signal: SignalName = Field(SignalName.HUP, description="Reload signal (HUP by default).")
    escalate: bool = Field(False, description="Never KILL on a reload.")


class ReloadConfig(SignalProcess):
    name = "process.reload"
    summary = "Reload a process's configuration with SIGHUP; verify it is still running."
    params_model = ReloadParams
    idempotent = True
