"""The action contract: facts → pure plan → apply → verify → rollback.

An action is a small typed class (pyinfra's operations are the model). ``facts()`` reads
the target; fact readers split the command from a pure ``parse_*`` function so parsing
is tested on recorded output. ``plan(facts)`` is pure and returns steps or a
``NoOp(reason)``. ``apply(steps)`` does the work and returns what ``rollback`` needs;
``verify(before, after)`` is pure over the facts read before and after (the executor
waits ``verify_wait`` in between). Nothing here runs a shell: commands are argv lists.

>>> Step("signal", "send TERM to 42", {"pid": 42}).as_dict()["op"]
'signal'
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, get_args

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from autofix.errors import ActionError, RefusedError

Facts = dict[str, Any]


@dataclass(frozen=True)
class Step:
    """One thing ``apply`` will do, readable by a human and stored in the audit log."""

    op: str
    detail: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "detail": self.detail, "args": dict(self.args)}


@dataclass(frozen=True)
class NoOp:
    """Nothing to do, and why (the pre-check found the condition gone)."""

    reason: str


Plan = list[Step] | NoOp


@dataclass(frozen=True)
class Applied:
    """What ``apply`` did: its output and the JSON-able record ``rollback`` needs."""

    output: str
    undo: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """A verify verdict."""

    ok: bool
    reason: str


@dataclass(frozen=True)
class CommandResult:
    """A finished command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], float], CommandResult]


def run_argv(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run an argv list (never through a shell), capture output, kill after ``timeout``."""
    args = [str(part) for part in argv]
    try:
        done = subprocess.run(
            args,
            shell=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            text=True,
            errors="replace",
        )
    except subprocess.TimeoutExpired:
        raise ActionError(f"{args[0]}: timed out after {timeout:g}s") from None
    except OSError as exc:
        raise ActionError(f"{args[0]}: cannot run: {exc.strerror or exc}") from None
    return CommandResult(tuple(args), done.returncode, done.stdout, done.stderr)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Context:
    """What an action may use besides its target: injected so tests need no patching."""

    fix_id: int = 0
    quarantine_dir: Path = Path("data/quarantine")
    timeout: float = 60.0
    clock: Callable[[], datetime] = _utcnow
    sleep: Callable[[float], None] = time.sleep
    runner: Runner = run_argv
    http_transport: httpx.BaseTransport | None = None
    #: The caller verifies the condition that triggered the fix (a health check, the
    #: metric back under its limit): ``verify`` then checks only that the action did what
    #: it says, not an absolute a live service may never meet.
    condition: bool = False
    #: Timeout of one health probe in facts (AUTOFIX_PROBE_TIMEOUT): a hung service must
    #: not hold a fix for the whole action timeout.
    probe_timeout: float = 5.0
    #: Labels of the series or alert that triggered the fix (untrusted text): an action
    #: may use them only to pick among what its target declares (ansible ``host_label``).
    labels: Mapping[str, str] = field(default_factory=dict)

    def http(self, timeout: float | None = None) -> httpx.Client:
        """An HTTP client on the injected transport (close it: ``with ctx.http() as c``)."""
        return httpx.Client(transport=self.http_transport, timeout=timeout or self.timeout)


class Params(BaseModel):
    """Base of every action's parameters: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=Params)
T = TypeVar("T")


class Action(Generic[P, T]):
    """Base class. Subclasses set the class attributes and implement the phases."""

    name: ClassVar[str]
    summary: ClassVar[str]
    params_model: ClassVar[type[Params]]
    target_kinds: ClassVar[tuple[type[Any], ...]]
    idempotent: ClassVar[bool] = True
    rolls_back: ClassVar[bool] = False
    downtime: ClassVar[bool] = False
    #: Whether facts can be re-read to verify a fix a crash interrupted. A fleet rollout's
    #: facts are a whole check-mode run: at start-up it is escalated instead.
    reverify_after_crash: ClassVar[bool] = True

    def __init__(self, target: T, params: P, ctx: Context) -> None:
        self.target = target
        self.params = params
        self.ctx = ctx

    @classmethod
    def bind(cls, target: Any, raw: Mapping[str, Any], ctx: Context) -> Action[Any, Any]:
        """Validate params against the model and the target's allowlists, or raise RefusedError."""
        if not isinstance(target, cls.target_kinds):
            kinds = ", ".join(kind_names(cls.target_kinds))
            raise RefusedError(
                "allowlist",
                f"{cls.name} does not apply to target {getattr(target, 'name', '?')!r} "
                f"(kind {getattr(target, 'kind', '?')}; needs {kinds})",
            )
        allowed = getattr(target, "actions", None)
        if allowed is not None and cls.name not in allowed:
            raise RefusedError(
                "allowlist", f"{cls.name} is not in the actions allowlist of {target.name!r}"
            )
        try:
            params = cls.params_model.model_validate(dict(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "params"
            raise RefusedError("params", f"param {where!r}: {first['msg']}") from None
        action = cls(target, params, ctx)  # type: ignore[arg-type]
        action.authorize()
        return action

    @classmethod
    def catalog_entry(cls) -> dict[str, Any]:
        """Name, summary, params (type, default, help), kinds, and the safety flags."""
        params = []
        for pname, pfield in cls.params_model.model_fields.items():
            annotation = pfield.annotation
            params.append(
                {
                    "name": pname,
                    "type": getattr(annotation, "__name__", str(annotation)).replace("typing.", ""),
                    "required": pfield.is_required(),
                    "default": None if pfield.is_required() else _plain(pfield.default),
                    "help": pfield.description or "",
                }
            )
        return {
            "name": cls.name,
            "summary": cls.summary,
            "targets": kind_names(cls.target_kinds),
            "params": params,
            "idempotent": cls.idempotent,
            "rolls_back": cls.rolls_back,
            "downtime": cls.downtime,
        }

    # -- phases --------------------------------------------------------------------------

    def authorize(self) -> None:
        """Check params against the target's allowlists; raise RefusedError. Default: nothing."""

    def facts(self) -> Facts:
        raise NotImplementedError

    def plan(self, facts: Facts) -> Plan:
        raise NotImplementedError

    def prepare(self, steps: Sequence[Step]) -> dict[str, Any]:
        """Before ``apply``: make where the undo will live; return it (recorded durably
        with ``running``, so a fix interrupted by a crash can still be rolled back).
        Default: nothing to prepare."""
        return {}

    def apply(self, steps: Sequence[Step]) -> Applied:
        raise NotImplementedError

    def verify(self, before: Facts, after: Facts) -> Check:
        raise NotImplementedError

    def rollback(self, undo: Mapping[str, Any]) -> str:
        raise ActionError(f"{self.name} cannot roll back")

    def footprint(self) -> tuple[int, int] | None:
        """Hosts changed at once and hosts in the group, for an action that changes many
        hosts (blast radius counts hosts); None: one target, counted as one."""
        return None


def kind_names(models: Sequence[type[Any]]) -> list[str]:
    """The ``kind`` tags of target models, sorted."""
    return sorted(str(get_args(m.model_fields["kind"].annotation)[0]) for m in models)


def _plain(value: Any) -> Any:
    from datetime import timedelta

    from autofix.config import format_duration

    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
