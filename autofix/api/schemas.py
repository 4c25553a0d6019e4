"""Bodies of the operator's routes: fix requests, decisions, escalations, jobs, the pause,
silences and ``whoami`` (the read models of ``autofix.api.models`` stay there).

Times are UTC with an explicit ``Z``; request bodies refuse unknown fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from autofix.actions.registry import ACTIONS
from autofix.api.models import Fix, UtcNaive

#: A duration as the CLI takes it: 90s, 30m, 2h, 7d, 2w.
Duration = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,5}(s|m|h|d|w)$")]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
ParamValue = (
    Annotated[str, StringConstraints(max_length=1024, pattern=r"^[^\x00]*$")] | int | float | bool
)


def _known_action(name: str) -> str:
    if name not in ACTIONS:
        raise ValueError(f"unknown action {name!r} (see `autofix actions`)")
    return name


#: An action of the catalog (``autofix actions``): the schema lists them.
ActionName = Annotated[
    str,
    AfterValidator(_known_action),
    WithJsonSchema({"type": "string", "enum": sorted(ACTIONS)}),
]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"\S")]


class Whoami(BaseModel):
    """The caller, as its token says, and what it may do."""

    name: str
    role: Literal["viewer", "operator"]
    actor: str = Field(description="How the audit log records this caller's actions.")
    can: dict[str, bool] = Field(
        description="approve, reject, rollback, label, request_fix, run_jobs, pause, silence."
    )


class FixRequest(BaseModel):
    """A fix an operator asks for: it goes through every gate, as ``autofix fix run``."""

    model_config = ConfigDict(extra="forbid")

    action: ActionName
    target: Name
    params: dict[Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,64}$")], ParamValue] = Field(
        default_factory=dict,
        max_length=32,
        # The schema says what the validator does: no other names than the pattern's.
        json_schema_extra={"additionalProperties": False},
    )
    dry_run: bool = Field(False, description="Plan only; apply nothing.")
    approve: bool = Field(
        False, description="Approve it yourself (a rule mode of approve does not wait)."
    )


class FixRequested(Fix):
    """The fix as recorded: ``state`` and ``gate`` say whether a gate refused it."""


class Decision(BaseModel):
    """A decision of a rule, an alert or the self-healing loop, and the fixes it led to."""

    id: str
    ts: datetime
    detected_at: datetime
    rule: str
    kind: str
    source: str
    subject: str
    series_id: int | None
    target: str | None
    mode: str = Field(
        description="off, shadow, approve, auto, dry_run; inhibited (a troubled dependency), "
        "silenced (a silence matched)."
    )
    reason: str
    fixes: list[int]
    fix_state: str | None = Field(description="The current state of its newest fix.")


class EscalationItem(BaseModel):
    """A request for a human: a failed or held fix, or nothing left to try."""

    fix_id: int | None
    ts: datetime
    action: str
    target: str
    gate: str | None
    reason: str


class Job(BaseModel):
    """One job of the service: its schedule, whether it runs here, its recorded runs."""

    job: str
    schedule: str = Field(description="`every 15s` or a crontab line (UTC).")
    enabled: bool
    scheduled: bool = Field(description="Scheduled in this process now.")
    next_run: datetime | None
    last_run: datetime | None
    last_ok: bool | None
    last_error: str | None
    runs: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None


class JobRun(BaseModel):
    """One run of a job, as ``autofix run JOB --json`` prints it."""

    job: str
    ok: bool
    started_at: datetime
    duration_ms: float
    summary: dict[str, Any]
    error: str | None


class PauseIn(BaseModel):
    """Pause autofix: nothing is applied until resumed (or until ``for`` has passed)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    reason: Reason
    duration: Duration | None = Field(None, alias="for", description="e.g. 2h; else: resume.")


class PauseState(BaseModel):
    paused: bool
    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None
    by: str | None = None


class MatcherIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00]*$")]


class SilenceIn(BaseModel):
    """A silence: ``matchers`` all hold on a decision's rule, target, host or labels."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    matchers: list[MatcherIn] = Field(min_length=1, max_length=16)
    comment: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=r"\S")]
    starts_at: UtcNaive | None = Field(None, description="Default: now.")
    ends_at: UtcNaive | None = Field(None, description="Default: `for` after the start.")
    duration: Duration | None = Field(None, alias="for", description="e.g. 2h (default 1h).")


class Matcher(BaseModel):
    name: str
    op: str
    value: str


class Silence(BaseModel):
    id: int
    state: Literal["pending", "active", "expired"]
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    creator: str
    comment: str
    expired_at: datetime | None
    expired_by: str | None


__all__ = [
    "Decision",
    "EscalationItem",
    "FixRequest",
    "FixRequested",
    "Job",
    "JobRun",
    "PauseIn",
    "PauseState",
    "Silence",
    "SilenceIn",
    "Whoami",
]
