"""command.run: a command declared in configuration, never a shell.

The argv comes from the ``command`` target. A parameter fills exactly one argv element
whose text is ``{name}``; its value must fully match the regular expression declared
for it and may not contain control characters. Unknown or missing parameters refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ConfigDict

from autofix.actions.base import Action, Applied, Check, Facts, NoOp, Params, Plan, Step
from autofix.errors import ActionError, RefusedError
from autofix.targets import CommandTarget

_SLOT = re.compile(r"^\{([a-z][a-z0-9_]{0,31})\}$")


def build_argv(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Substitute whole ``{name}`` elements; anything else is copied verbatim.

    >>> build_argv(["/usr/bin/du", "-s", "{dir}"], {"dir": "x; rm -rf /"})
    ['/usr/bin/du', '-s', 'x; rm -rf /']
    """
    out = []
    for part in template:
        slot = _SLOT.match(part)
        out.append(values[slot.group(1)] if slot else part)
    return out


def _text(key: str, raw: Any) -> str:
    """A parameter as the argv text it becomes: text exactly as given (``1.10``, ``007``)."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(raw)  # a YAML or JSON number: its shortest spelling
    raise RefusedError("params", f"param {key!r}: give text or a number, not {type(raw).__name__}")


class CommandParams(Params):
    """Free-form: each key is checked against the target's declared params."""

    model_config = ConfigDict(extra="allow", frozen=True)


class RunCommand(Action[CommandParams, CommandTarget]):
    name = "command.run"
    summary = "Run the target's declared argv; params fill whole '{name}' elements only."
    params_model = CommandParams
    target_kinds = (CommandTarget,)
    idempotent = False
    rolls_back = True  # when the target declares rollback_argv
    _control: ClassVar[re.Pattern[str]] = re.compile(r"[\x00-\x1f\x7f]")

    def authorize(self) -> None:
        given = {k: v for k, v in (self.params.model_extra or {}).items()}
        declared = self.target.params
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise RefusedError(
                "params", f"param {unknown[0]!r} is not declared by {self.target.name!r}"
            )
        missing = sorted(set(declared) - set(given))
        if missing:
            raise RefusedError(
                "params", f"param {missing[0]!r} is required by {self.target.name!r}"
            )
        values: dict[str, str] = {}
        for key, raw in given.items():
            value = _text(key, raw)
            try:
                pattern = re.compile(declared[key])
            except (re.error, RecursionError, OverflowError) as exc:
                raise RefusedError(
                    "params",
                    f"param {key!r}: {self.target.name!r} declares an invalid regular "
                    f"expression {declared[key]!r} ({exc})",
                ) from None
            if self._control.search(value) or pattern.fullmatch(value) is None:
                raise RefusedError(
                    "params", f"param {key!r}: {value!r} does not match {declared[key]!r}"
                )
            values[key] = value
        self.values = values

    def _run(self, template: Sequence[str]) -> tuple[int, str]:
        done = self.ctx.runner(
            build_argv(template, self.values), self.target.timeout.total_seconds()
        )
        return done.returncode, (done.stdout + done.stderr).strip()

    def facts(self) -> Facts:
        if self.target.check_argv is None:
            return {}
        code, output = self._run(self.target.check_argv)
        return {"check_exit": code, "check_output": output[-500:]}

    def plan(self, facts: Facts) -> Plan:
        if facts.get("check_exit") == 0:
            return NoOp("the check command passes: nothing to do")
        argv = build_argv(self.target.argv, self.values)
        return [Step("run", "run " + " ".join(repr(a) for a in argv), {"argv": argv})]

    def apply(self, steps: Sequence[Step]) -> Applied:
        code, output = self._run(self.target.argv)
        if code != 0:
            raise ActionError(f"exit {code}: {output[-500:]}")
        return Applied(output, {"values": self.values})

    def verify(self, before: Facts, after: Facts) -> Check:
        if "check_exit" not in after:
            return Check(True, "exit 0 (no check command declared)")
        ok = after["check_exit"] == 0
        return Check(ok, f"check exit {after['check_exit']}: {after['check_output'][-200:]}")

    def rollback(self, undo: Mapping[str, Any]) -> str:
        if self.target.rollback_argv is None:
            raise ActionError(f"{self.target.name}: no rollback_argv declared")
        code, output = self._run(self.target.rollback_argv)
        if code != 0:
            raise ActionError(f"rollback exit {code}: {output[-500:]}")
        return output
