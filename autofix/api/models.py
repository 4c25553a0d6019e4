"""Request and response bodies of the HTTP API (pydantic; they make ``/openapi.json``).

Times are UTC with an explicit ``Z``. Numbers that are not finite (no data) are null.
Request bodies refuse unknown fields except the Alertmanager payload, which ignores what
a newer Alertmanager may add; its labels are untrusted text, bounded in size and shape.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

Horizon = Literal["1h", "4h", "24h", "4d"]
#: autofix.audit.STATES and autofix.maintenance.TASK_STATES (a test keeps them equal).
FixState = Literal[
    "planned",
    "pending_approval",
    "refused",
    "running",
    "succeeded",
    "failed",
    "rolled_back",
    "interrupted",
    "noop",
]
TaskState = Literal["planned", "started", "executed", "failed", "cancelled", "missed"]
T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list: ``total`` matches the filters, ``items`` starts at ``offset``."""

    total: int
    limit: int
    offset: int
    items: list[T]


class ErrorOut(BaseModel):
    """Every error: a status code and this body."""

    detail: Any = Field(description="What was wrong (a list of field errors for 422).")


# -- status ----------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class JobAge(BaseModel):
    """The last recorded run of one job."""

    job: str
    last_run: datetime
    age_seconds: float
    ok: bool
    duration_ms: float
    runs: int
    failures: int


class Readiness(BaseModel):
    """Ready when the store answers and the scheduler (if this process has one) runs."""

    ready: bool
    store: str = Field(description="`ok`, or why the store does not answer.")
    scheduler: Literal["running", "stopped", "absent"]
    jobs: list[JobAge]


# -- forecasts and anomalies -----------------------------------------------------------


class Forecast(BaseModel):
    """The newest forecast of one series."""

    series_id: int
    host: str
    metric: str
    labels: dict[str, str]
    capacity: float | None
    made_at: datetime = Field(description="When the forecast was made.")
    origin: datetime = Field(description="Time of the last sample it starts from.")
    eta: datetime | None = Field(description="When the series reaches its threshold.")
    eta_lo: datetime | None = Field(description="Earliest ETA of the 80 % interval.")
    eta_hi: datetime | None = Field(description="Latest ETA of the 80 % interval.")
    within: Horizon = Field(description="The horizon `p_within` is for.")
    p_within: float | None = Field(description="P(exhaustion within `within`).")
    probabilities: dict[Horizon, float | None] = Field(description="P(exhaustion) per horizon.")
    threshold: float = Field(description="Fill ratio counted as exhausted (1.0 = capacity).")
    model: str
    model_version: str


class HistoryPoint(BaseModel):
    """A bucket of history: its worst value (highest fill) and that value's fill ratio."""

    ts: datetime
    value: float | None
    fill: float | None


class ForecastPoint(BaseModel):
    """A point of the forecast path (``value``) between the 80 % band (``lo``..``hi``)."""

    ts: datetime
    value: float | None
    lo: float | None
    hi: float | None
    fill: float
    fill_lo: float
    fill_hi: float


class CapacityPoint(BaseModel):
    ts: datetime
    capacity: float | None


class SeriesForecast(BaseModel):
    """What a chart of one series needs: history, the forecast path and its band."""

    series_id: int
    host: str
    metric: str
    labels: dict[str, str]
    unit: str
    capacity: float | None
    direction: Literal["up", "down"] = Field(
        description="`down`: the value counts what is left (avail, free); `up`: what is used."
    )
    eta: datetime | None
    eta_lo: datetime | None
    eta_hi: datetime | None
    prediction: Forecast | None
    history: list[HistoryPoint]
    forecast: list[ForecastPoint] = Field(
        description="From the last sample to the threshold: straight to the ETA, the band "
        "bounded by the lines to the interval's ends. Empty without an ETA."
    )
    capacity_history: list[CapacityPoint]


class Anomaly(BaseModel):
    """One scored point of a (latency) series."""

    series_id: int
    host: str
    metric: str
    labels: dict[str, str]
    ts: datetime
    value: float | None
    score: float | None
    model: str
    made_at: datetime


# -- fixes ------------------------------------------------------------------------------


class Fix(BaseModel):
    """A fix and its current state (its latest event)."""

    id: int
    action: str
    target: str
    state: str
    plan: list[dict[str, Any]]
    gate: str | None
    output: str | None
    error: str | None
    reason: str | None
    params: dict[str, Any]
    approved_by: str | None
    requested_by: str
    requested_at: datetime
    updated_at: datetime | None


class FixEvent(BaseModel):
    seq: int
    ts: datetime
    state: str
    step: str
    gate: str | None
    reason: str | None
    output: str | None
    error: str | None
    duration_ms: float | None
    actor: str | None


class FixLabel(BaseModel):
    ts: datetime
    false_fix: bool
    actor: str
    comment: str | None


class Escalation(BaseModel):
    ts: datetime
    action: str
    target: str
    gate: str | None
    reason: str


class FixDetail(Fix):
    """A fix with every transition, its operator labels and escalations."""

    events: list[FixEvent]
    labels: list[FixLabel]
    escalations: list[Escalation]


class LabelIn(BaseModel):
    """An operator's verdict on a fix: was it a false fix (the problem was not real)?"""

    model_config = ConfigDict(extra="forbid")

    false_fix: bool = Field(strict=True)
    comment: str | None = Field(None, max_length=2000)


# -- KPIs and maintenance ---------------------------------------------------------------


class KpiTarget(BaseModel):
    seed: float
    goal: float
    better: Literal["higher", "lower"]
    strict: bool


class Kpis(BaseModel):
    """The KPIs over ``window_seconds`` before ``now`` (null: no data); see `autofix kpi`."""

    now: datetime
    window_seconds: float
    manual_mttr_seconds: float
    auto_fix_success_rate: float | None
    applied_fixes: int
    succeeded_fixes: int
    mttr_seconds: float | None
    recovery_p50_seconds: float | None
    recovery_p95_seconds: float | None
    recovered_incidents: int
    mttr_reduction: float | None
    preventive_execution_rate: float | None
    maintenance_due: int
    maintenance_on_time: int
    false_fix_rate: float | None
    false_fix_rate_labels: float | None
    false_fix_rate_shadow: float | None
    labelled_fixes: int
    false_labels: int
    scored_decisions: int
    not_real_decisions: int
    escalations: int
    pending_approvals: int
    fixes_by_state: dict[str, int]
    decisions_by_mode: dict[str, int]
    status: dict[str, Literal["meets_goal", "meets_target", "misses", "no_data"]]
    targets: dict[str, KpiTarget]


class MaintenanceTask(BaseModel):
    """A preventive maintenance task and its state."""

    task_id: int | None
    need: str
    target: str
    action: str | None
    params: dict[str, Any]
    urgency: str
    state: str
    due_by: datetime | None
    window_start: datetime | None
    window_end: datetime | None
    downtime: bool
    estimated_s: float
    reason: str
    state_reason: str | None
    fix_id: int | None
    created_at: datetime | None
    updated_at: datetime | None


# -- the Alertmanager webhook -----------------------------------------------------------


def _utc_naive(moment: datetime) -> datetime:
    try:
        return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError("time out of range") from None


# RFC 3339, as the schema's `format: date-time` says: a date, a time with seconds and an
# offset (`Z` for UTC). Epoch numbers and times without an offset are refused rather than
# guessed (is 1700000000 seconds or milliseconds; is 10:00 local or UTC?).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(f"{str(value)[:40]!r} is not an RFC 3339 time (e.g. 2026-12-02T10:00:00Z)")
    return value


UtcNaive = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_utc_naive)]
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
LabelValue = Annotated[str, StringConstraints(max_length=1024)]
# additionalProperties: the schema says what the validator does (names like labels).
Labels = Annotated[
    dict[LabelName, LabelValue],
    Field(max_length=64, json_schema_extra={"additionalProperties": False}),
]
Annotations = Annotated[
    dict[str, Annotated[str, StringConstraints(max_length=16384)]], Field(max_length=64)
]


class AlertIn(BaseModel):
    """One alert as Alertmanager sends it (webhook version 4)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Annotations = Field(default_factory=dict)
    starts_at: UtcNaive | None = Field(None, alias="startsAt")
    ends_at: UtcNaive | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL", max_length=4096)
    fingerprint: str = Field("", pattern=r"^[0-9a-f]{0,64}$")


class AlertmanagerWebhook(BaseModel):
    """Alertmanager's webhook notification, version 4."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: Literal["4"]
    group_key: str = Field("", alias="groupKey", max_length=4096)
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = Field("", max_length=1024)
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Annotations = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL", max_length=4096)
    alerts: list[AlertIn] = Field(max_length=1000)


class AlertResult(BaseModel):
    """What one alert did under one rule."""

    alertname: str
    fingerprint: str
    rule: str | None
    outcome: Literal["decided", "ignored", "refused", "repeat"] = Field(
        description="`refused`: its `target` label names no declared target (nothing "
        "recorded); `ignored`: resolved, no matching rule, or the rule is off; `repeat`: "
        "decided on lately."
    )
    reason: str
    decision_id: str | None
    mode: str | None
    target: str | None
    fixes: list[Fix]


class AlertsResult(BaseModel):
    received: int
    firing: int
    decided: int
    results: list[AlertResult]
