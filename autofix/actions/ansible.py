"""ansible.playbook: a fleet change run by ansible-runner, in canary-first batches.

Everything Ansible sees comes from the pipelines file: the inventory is written from the
target's ``hosts`` (and nothing else), the playbooks are the target's, and every run gets
an explicit ``--limit`` listing host names of that group — an empty selection is refused,
never widened to "all". A fix may narrow the selection (the ``hosts`` parameter, or the
trigger's ``host_label``) and set the extra variables the target declares, each value
fully matching its declared expression; template delimiters are refused outright, since
Ansible would evaluate them.

Phases: ``facts`` runs the playbook with ``--check --diff`` over the selection (the plan
and the dry run; nothing changes); ``plan`` turns that into batches as Ansible's
``serial`` would (the first is the canary) and refuses when the group would fall below
its ``min_healthy`` share; ``apply`` runs one ``ansible-playbook`` per batch and stops
when the canary fails or a batch fails past ``max_fail_percentage``; ``rollback`` runs
the declared rollback playbook on every host the change ran on. Per-host results and
their output go to the audit log. autofix runs the batches itself (rather than relying
on the playbook's own ``serial``) so the canary and the threshold hold whatever the
playbook declares.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from autofix.actions.base import Action, Applied, Check, Facts, NoOp, Params, Plan, Step
from autofix.errors import ActionError, PartialApplyError, RefusedError
from autofix.targets import HOST_PATTERN, AnsibleTarget, Scalar

_HOST = re.compile(HOST_PATTERN)
#: Jinja2 delimiters: Ansible templates extra variables when a task uses them.
_TEMPLATE = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_OUTPUT_PER_HOST = 400


class PlaybookParams(Params):
    """``hosts``, and the extra variables the target declares as further keys."""

    model_config = ConfigDict(extra="allow", frozen=True)

    hosts: list[str] | None = Field(
        None,
        description="Hosts of the group to change, a list or comma-separated text (unset: "
        "the whole group); an empty selection is refused, never read as all. Other "
        "params are extra variables the target declares.",
    )

    @field_validator("hosts", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        if isinstance(value, str):  # `--param hosts=web1,web2` on the command line
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list) and not [v for v in value if v != ""]:
            raise ValueError("an empty host selection is refused (it never means all)")
        return value


# -- pure helpers ----------------------------------------------------------------------


def batches(hosts: Sequence[str], serial: Sequence[int | str]) -> list[list[str]]:
    """Split ``hosts`` as Ansible's ``serial`` does: counts or percentages of the whole,
    at least one host each; the last size repeats until every host is in a batch.

    >>> batches(["a", "b", "c", "d", "e"], [1, "50%"])
    [['a'], ['b', 'c'], ['d', 'e']]
    """
    total = len(hosts)
    sizes = []
    for item in serial:
        if isinstance(item, str):
            sizes.append(max(1, int(total * int(item.rstrip("%")) / 100)))
        else:
            sizes.append(item)
    out: list[list[str]] = []
    pos = 0
    i = 0
    while pos < total:
        size = sizes[min(i, len(sizes) - 1)]
        out.append(list(hosts[pos : pos + size]))
        pos += size
        i += 1
    return out


def batch_failed(results: Mapping[str, str], batch: Sequence[str], limit: float) -> bool:
    """Whether a batch stops the rollout: more than ``limit`` percent of it failed or was
    unreachable (Ansible's ``max_fail_percentage``)."""
    bad = sum(results.get(h) in {"failed", "unreachable"} for h in batch)
    return bad > 0 and bad * 100.0 / len(batch) > limit


@dataclass
class RunResult:
    """One ansible-playbook run: a status per host and what each host said."""

    rc: int
    status: str
    hosts: dict[str, str] = field(default_factory=dict)
    output: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        return ", ".join(f"{h}: {s}" for h, s in sorted(self.hosts.items())) or "no host ran"


def host_status(stats: Mapping[str, Mapping[str, int]] | None, host: str) -> str | None:
    """``unreachable`` / ``failed`` / ``changed`` / ``ok`` from ansible-runner's stats."""
    stats = stats or {}
    for key, status in (
        ("dark", "unreachable"),
        ("failures", "failed"),
        ("changed", "changed"),
        ("ok", "ok"),
        ("skipped", "ok"),
    ):
        if stats.get(key, {}).get(host):
            return status
    return None


def parse_events(
    events: Sequence[Mapping[str, Any]], stats: Mapping[str, Mapping[str, int]] | None
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Per-host status and output lines (failures, changes with their diff) from events."""
    output: dict[str, list[str]] = {}
    for event in events:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host")
        if not host or kind not in {
            "runner_on_ok",
            "runner_on_failed",
            "runner_on_unreachable",
        }:
            continue
        res = data.get("res") or {}
        task = str(data.get("task", ""))
        if kind == "runner_on_ok" and not res.get("changed"):
            continue
        word = {"runner_on_ok": "changed", "runner_on_failed": "failed"}.get(kind, "unreachable")
        if kind == "runner_on_failed" and data.get("ignore_errors"):
            continue
        line = f"{task}: {word}"
        if isinstance(res.get("dest") or res.get("path"), str):
            line += f" ({res.get('dest') or res.get('path')})"
        if res.get("msg"):
            line += f": {str(res['msg'])[:200]}"
        diff = _diff_text(res.get("diff"))
        if diff:
            line += f"\n{diff}"
        output.setdefault(host, []).append(line)
    hosts = {}
    for host in {*output, *(h for part in (stats or {}).values() for h in part)}:
        status = host_status(stats, host)
        if status is not None:
            hosts[host] = status
    return hosts, output


def _diff_text(diff: Any) -> str:
    parts = diff if isinstance(diff, list) else [diff] if isinstance(diff, dict) else []
    lines = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        for side in ("before", "after"):
            header = part.get(f"{side}_header")
            if header:
                lines.append(f"{'---' if side == 'before' else '+++'} {header}")
        if isinstance(part.get("prepared"), str):
            lines.append(part["prepared"])
    return "\n".join(lines)[:_OUTPUT_PER_HOST]


# -- the action ------------------------------------------------------------------------


class Playbook(Action[PlaybookParams, AnsibleTarget]):
    name = "ansible.playbook"
    summary = (
        "Run the target's playbook on its hosts in canary-first batches (ansible-runner); "
        "check mode is the plan, the rollback playbook undoes what ran."
    )
    params_model = PlaybookParams
    target_kinds = (AnsibleTarget,)
    idempotent = False
    rolls_back = True  # when the target declares rollback_playbook
    reverify_after_crash = False

    # -- selection and variables (authorize: before anything runs) -------------------

    def authorize(self) -> None:
        declared = list(self.target.hosts)
        chosen = self.params.hosts if self.params.hosts is not None else declared
        for host in chosen:
            if host not in self.target.hosts:
                raise RefusedError(
                    "allowlist",
                    f"host {_quote(host)} is not in the group of {self.target.name!r}",
                )
        selection = [h for h in declared if h in set(chosen)]  # declared order, no repeats
        if self.target.host_label is not None and self.ctx.labels:
            value = self.ctx.labels.get(self.target.host_label)
            if value is not None:
                picked = self._host_for(value)
                if picked is None or picked not in selection:
                    raise RefusedError(
                        "allowlist",
                        f"label {self.target.host_label}={_quote(value)} names no selected "
                        f"host of {self.target.name!r}",
                    )
                selection = [picked]
        if not selection:
            raise RefusedError("selection", "empty host selection: refused, never all")
        self.selection = selection
        self.extra_vars = self._checked_vars()

    def _host_for(self, value: str) -> str | None:
        """The declared host a label names: its inventory name or address (a Prometheus
        ``instance`` like ``10.0.0.5:9100`` names the host at 10.0.0.5)."""
        if value in self.target.hosts:
            return value
        address = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
        for name, hostvars in self.target.hosts.items():
            if address in {name, str(hostvars.get("ansible_host", ""))}:
                return name
        return None

    def _checked_vars(self) -> dict[str, Scalar]:
        declared = self.target.params
        out: dict[str, Scalar] = {}
        for key, value in (self.params.model_extra or {}).items():
            if key not in declared:
                raise RefusedError(
                    "params", f"var {_quote(key)} is not declared by {self.target.name!r}"
                )
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise RefusedError("params", f"var {key!r}: give text or a number")
            text = value if isinstance(value, str) else str(value)
            if _TEMPLATE.search(text) or _CONTROL.search(text):
                raise RefusedError("params", f"var {key!r}: template or control characters")
            try:
                ok = re.fullmatch(declared[key], text) is not None
            except re.error as exc:
                raise RefusedError(
                    "params", f"var {key!r}: invalid declared expression ({exc})"
                ) from None
            if not ok:
                raise RefusedError(
                    "params", f"var {key!r}: {_quote(text)} does not match {declared[key]!r}"
                )
            out[key] = value
        return out

    def footprint(self) -> tuple[int, int]:
        """Hosts changed at once (the largest batch) and the group's size: blast radius
        counts hosts, not fixes."""
        largest = max(len(b) for b in batches(self.selection, self.target.serial))
        return largest, len(self.target.hosts)

    # -- running ansible-playbook ----------------------------------------------------

    def _inventory(self) -> dict[str, Any]:
        group = re.sub(r"[^A-Za-z0-9_]", "_", self.target.name)
        hosts = {name: dict(hostvars) for name, hostvars in self.target.hosts.items()}
        return {"all": {"children": {group: {"hosts": hosts, "vars": dict(self.target.vars)}}}}

    def _run(self, playbook: Path, hosts: Sequence[str], check: bool = False) -> RunResult:
        """One ansible-playbook run limited to ``hosts`` (names from the group only)."""
        import ansible_runner

        if not hosts or any(h not in self.target.hosts or not _HOST.match(h) for h in hosts):
            raise ActionError(f"refusing to run on {list(hosts)!r}: not a selection of the group")
        if not playbook.is_file():
            raise ActionError(f"playbook {str(playbook)!r} does not exist")
        with _private_dir() as pdd:
            envvars = {
                # ansible-playbook sits beside this interpreter in a virtualenv.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.defpath]),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_RETRY_FILES_ENABLED": "0",
                "LC_ALL": "C.UTF-8",
            }
            if self.target.config is not None:
                envvars["ANSIBLE_CONFIG"] = str(self.target.config.resolve())
            try:
                run = ansible_runner.run(
                    private_data_dir=str(pdd),
                    playbook=str(playbook.resolve()),
                    inventory=self._inventory(),
                    limit=",".join(hosts),
                    extravars=dict(self.extra_vars),
                    cmdline="--check --diff" if check else None,
                    forks=self.target.forks,
                    timeout=int(self.target.timeout.total_seconds()),
                    envvars=envvars,
                    quiet=True,
                    suppress_env_files=True,
                )
                events = list(run.events)
                stats = run.stats
            except Exception as exc:  # ansible-runner raises plain exceptions
                raise ActionError(f"ansible-runner: {type(exc).__name__}: {exc}") from None
            status, rc = str(run.status), int(run.rc if run.rc is not None else -1)
            if status == "timeout":
                raise ActionError(f"ansible-playbook timed out after {self.target.timeout}")
            found, output = parse_events(events, stats)
            if not found and rc != 0:
                tail = _stdout_tail(pdd)
                raise ActionError(f"ansible-playbook exit {rc} before any host ran: {tail}")
        return RunResult(rc, status, {h: s for h, s in found.items() if h in hosts}, output)

    # -- phases ----------------------------------------------------------------------

    def facts(self) -> Facts:
        if hasattr(self, "results"):  # read again after apply: the post-check
            return self._facts_after()
        if not self.target.check_mode:
            return {"selection": list(self.selection), "checked": False}
        done = self._run(self.target.playbook, self.selection, check=True)
        return {
            "selection": list(self.selection),
            "checked": True,
            "check": done.hosts,
            "diff": {h: "\n".join(lines)[-2000:] for h, lines in done.output.items()},
        }

    def plan(self, facts: Facts) -> Plan:
        selection = list(facts.get("selection") or self.selection)
        check: dict[str, str] = dict(facts.get("check") or {})
        unreachable = [h for h in selection if check.get(h) == "unreachable"]
        failing = [h for h in selection if check.get(h) == "failed"]
        if failing:
            raise RefusedError(
                "precheck",
                f"check mode fails on {', '.join(failing)}: the change would fail there",
            )
        if facts.get("checked"):
            todo = [h for h in selection if check.get(h) == "changed"]
            if not todo:
                return NoOp("check mode: no host of the selection would change")
        else:
            todo = [h for h in selection if h not in unreachable]
        planned = batches(todo, self.target.serial)
        size = len(self.target.hosts)
        largest = max(len(b) for b in planned)
        healthy = size - len(unreachable) - largest
        need = math.ceil(self.target.min_healthy * size)
        if healthy < need:
            raise RefusedError(
                "min_healthy",
                f"{healthy} of {size} hosts would stay healthy during a batch of {largest} "
                f"({len(unreachable)} unreachable); min_healthy needs {need}",
            )
        steps = []
        for i, batch in enumerate(planned, start=1):
            role = "canary batch" if i == 1 else "batch"
            steps.append(
                Step(
                    "batch",
                    f"{role} {i}/{len(planned)}: {', '.join(batch)}",
                    {"hosts": batch, "canary": i == 1},
                )
            )
        if unreachable:
            steps.append(
                Step("skip", f"unreachable, left out: {', '.join(unreachable)}", {"hosts": []})
            )
        return steps

    def prepare(self, steps: Sequence[Step]) -> dict[str, Any]:
        """Every host the rollout may touch, recorded with ``running``: after a crash,
        ``autofix fix rollback`` knows where to run the rollback playbook."""
        planned = [h for step in steps if step.op == "batch" for h in step.args.get("hosts", [])]
        return {"hosts": planned, "interrupted": True}

    def apply(self, steps: Sequence[Step]) -> Applied:
        results: dict[str, str] = {}
        lines: list[str] = []
        ran: list[str] = []
        for step in steps:
            hosts = list(step.args.get("hosts") or [])
            if step.op != "batch" or not hosts:
                continue
            try:
                done = self._run(self.target.playbook, hosts)
            except ActionError as exc:
                if ran:
                    raise PartialApplyError(f"{step.detail}: {exc}", self._undo(ran)) from None
                raise
            ran.extend(h for h in hosts if h in done.hosts)
            results.update(done.hosts)
            lines.append(f"{step.detail} -> {done.summary()}")
            lines.extend(_host_lines(done))
            limit = 0.0 if step.args.get("canary") else self.target.max_fail_percentage
            if batch_failed(done.hosts, hosts, limit):
                why = f"{step.detail} failed ({done.summary()}); rollout stopped" + (
                    "" if step.args.get("canary") else f" past max_fail_percentage {limit:g}"
                )
                detail = "\n".join(lines)
                if ran:
                    raise PartialApplyError(f"{why}\n{detail}", self._undo(ran))
                raise ActionError(f"{why}\n{detail}")
        self.results = results
        return Applied("\n".join(lines), self._undo(ran, results))

    def _undo(self, ran: Sequence[str], results: Mapping[str, str] | None = None) -> dict[str, Any]:
        undo: dict[str, Any] = {"hosts": list(dict.fromkeys(ran))}
        if results is not None:
            undo["results"] = dict(results)
        return undo

    def verify(self, before: Facts, after: Facts) -> Check:
        bad = {h: s for h, s in (after.get("results") or {}).items() if s not in {"ok", "changed"}}
        if "results" not in after:
            return Check(False, "post-check: no per-host results (the rollout did not finish)")
        if bad:
            return Check(False, "post-check: " + ", ".join(f"{h}: {s}" for h, s in bad.items()))
        return Check(True, f"{len(after.get('results') or {})} host(s) passed the post-check")

    def _facts_after(self) -> Facts:
        """After apply: the verify playbook's per-host results, else the change's own."""
        changed = list(getattr(self, "results", {}))
        if self.target.verify_playbook is None or not changed:
            return {"results": dict(getattr(self, "results", {})), "verified": None}
        done = self._run(self.target.verify_playbook, changed)
        missing = {h: "unreachable" for h in changed if h not in done.hosts}
        return {"results": {**done.hosts, **missing}, "verified": True}

    def rollback(self, undo: Mapping[str, Any]) -> str:
        if self.target.rollback_playbook is None:
            raise ActionError(f"{self.target.name}: no rollback_playbook declared")
        hosts = [h for h in undo.get("hosts") or [] if h in self.target.hosts]
        if not hosts:
            return "nothing ran: nothing to roll back"
        done = self._run(self.target.rollback_playbook, hosts)
        lines = [f"rollback on {', '.join(hosts)} -> {done.summary()}", *_host_lines(done)]
        bad = [h for h in hosts if done.hosts.get(h) not in {"ok", "changed"}]
        if bad:
            raise ActionError("\n".join([f"rollback failed on {', '.join(bad)}", *lines]))
        return "\n".join(lines)


def _host_lines(done: RunResult) -> list[str]:
    return [
        f"  {host}: {line}"[:_OUTPUT_PER_HOST]
        for host in sorted(done.output)
        for line in done.output[host]
    ]


def _quote(text: object, limit: int = 64) -> str:
    """Untrusted text in a reason: repr, cut short."""
    shown = str(text)
    return repr(shown[:limit]) + ("…" if len(shown) > limit else "")


@contextmanager
def _private_dir() -> Iterator[Path]:
    """ansible-runner's private data dir: the inventory and vars it writes live only for
    the run (output is kept in the audit log instead)."""
    path = Path(tempfile.mkdtemp(prefix="autofix-ansible-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _stdout_tail(pdd: Path) -> str:
    for stdout in sorted(pdd.glob("artifacts/*/stdout")):
        text = stdout.read_text(errors="replace").strip()
        return " ".join(text.splitlines()[-3:])[-400:]
    return "(no output)"
