"""The pipelines file: the user's declarative configuration (YAML).

Three sections: ``targets`` (what autofix watches and may act on, each with an optional
``recovery`` for the self-healing loop), ``jobs`` (when each scheduled job runs) and
``rules`` (a condition on predictions or on the latest samples → ordered candidate
actions, a mode and gate overrides). Loading validates the whole file; an error names
the file and the path of the bad field, e.g.
``pipelines/local.yaml: targets[2].url: Input should be a valid URL``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from autofix._yaml import load_yaml
from autofix.errors import ConfigError

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_ACTION = r"^[a-z]+\.[a-z_]+$"


def _duration(value: object) -> timedelta:
    from autofix.config import parse_duration  # config imports nothing from here

    return parse_duration(value)


_Duration = Annotated[timedelta, BeforeValidator(_duration)]


class GateOverrides(BaseModel):
    """Gate settings for one action or one target; unset fields keep the AUTOFIX_FIX_* value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["off", "shadow", "approve", "auto"] | None = None
    cooldown: _Duration | None = None
    backoff_base: _Duration | None = None
    backoff_max: _Duration | None = None
    healthy_reset: _Duration | None = None
    max_runs: int | None = Field(None, ge=0)
    runs_window: _Duration | None = None
    flap_count: int | None = Field(None, ge=1)
    flap_window: _Duration | None = None
    blast_radius: float | None = Field(None, gt=0, le=1)
    unhealthy_share: float | None = Field(None, gt=0, le=1)
    unhealthy_window: _Duration | None = None
    breaker_failures: int | None = Field(None, ge=1)
    breaker_hold: _Duration | None = None
    maintenance_windows: str | None = None
    approval_ttl: _Duration | None = None
    verify_wait: _Duration | None = None
    timeout: _Duration | None = None


class ActionSpec(BaseModel):
    """One candidate fix: an action, the target it runs on and its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str = Field(pattern=_ACTION, description="Action name, e.g. service.restart.")
    target: str | None = Field(
        None,
        pattern=_NAME,
        description="Declared target to act on; unset: the target the condition is about "
        "(the series' `target` label, or the target being recovered).",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Action parameters.")


class Recovery(BaseModel):
    """How the self-healing loop recovers a target whose health check fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after: int = Field(
        2, ge=1, le=100, description="Consecutive failed health checks before acting."
    )
    actions: list[ActionSpec] = Field(
        min_length=1, description="Candidate fixes in the order they are tried."
    )
    mode: Literal["off", "shadow", "approve", "auto"] | None = Field(
        None, description="Mode of these fixes (unset: gates, then AUTOFIX_FIX_MODE)."
    )
    gates: GateOverrides | None = None


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, description="Unique name; becomes the `target` label.")
    group: str | None = Field(None, description="Group for blast-radius accounting.")
    actions: list[Annotated[str, Field(pattern=_ACTION)]] | None = Field(
        None,
        description="Allowlist of fix actions for this target; unset allows every action "
        "that fits the kind.",
    )
    gates: GateOverrides | None = Field(None, description="Gate settings for this target.")
    health: bool = Field(True, description="Health-check this target in the self-healing loop.")
    recovery: Recovery | None = Field(
        None, description="What the self-healing loop does when the health check keeps failing."
    )


class HttpTarget(_Target):
    """An HTTP endpoint probed for status and latency."""

    kind: Literal["http"]
    url: str = Field(pattern=r"^https?://", description="URL to GET.")
    expect_status: int = Field(200, ge=100, le=599, description="Status that counts as up.")


class TcpTarget(_Target):
    """A TCP port probed by connecting to it."""

    kind: Literal["tcp"]
    host: str = Field(description="Host name or address.")
    port: int = Field(ge=1, le=65535, description="Port number.")


class PostgresTarget(_Target):
    """A PostgreSQL server probed by connecting and running a canary query."""

    kind: Literal["postgres"]
    dsn: str = Field(description="libpq connection string or URL.")
    canary: str = Field("SELECT 1", description="Cheap query whose latency is measured.")
    applications: list[str] = Field(
        default_factory=list,
        description="application_name values whose idle sessions may be terminated.",
    )
    tables: list[
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")]
    ] = Field(
        default_factory=list,
        description="Tables (schema.table) that vacuum, reindex and amcheck may touch.",
    )


class DuckDBTarget(_Target):
    """A DuckDB file probed by opening it read-only and running a canary query."""

    kind: Literal["duckdb"]
    path: Path = Field(description="DuckDB database file.")
    canary: str = Field("SELECT 1", description="Cheap query whose latency is measured.")


class ProcessTarget(_Target):
    """Processes to watch, chosen by pidfile, exact name or a cmdline regular expression."""

    kind: Literal["process"]
    pidfile: Path | None = None
    process_name: str | None = None
    cmdline: str | None = Field(None, description="Regular expression over the joined argv.")

    @model_validator(mode="after")
    def _one_matcher(self) -> ProcessTarget:
        given = [m for m in (self.pidfile, self.process_name, self.cmdline) if m is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of pidfile, process_name, cmdline")
        return self


class LogDirTarget(_Target):
    """A log directory whose size and growth rate (bytes/day) are tracked."""

    kind: Literal["logdir"]
    path: Path = Field(
        description="Directory to measure (not followed through symlinks); the allowlisted "
        "root of files actions."
    )
    quarantine: Path | None = Field(
        None, description="Quarantine for files actions (default AUTOFIX_QUARANTINE_DIR)."
    )
    capacity: float | None = Field(
        None,
        gt=0,
        description="Bytes the directory may use (a quota): the capacity of "
        "autofix_dir_size_bytes. Unset: the filesystem's size when the path is a mount point.",
    )


_PROGRAM = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class SupervisorTarget(_Target):
    """A program managed by supervisord, controlled over its XML-RPC interface."""

    kind: Literal["supervisor"]
    url: str = Field(
        "http://127.0.0.1:9001/RPC2", pattern=r"^https?://", description="XML-RPC URL."
    )
    program: str = Field(pattern=_PROGRAM, description="Program name (group:name allowed).")
    health_url: str | None = Field(
        None, pattern=r"^https?://", description="Health check that must pass after a fix."
    )


class SystemdTarget(_Target):
    """A systemd unit, controlled with systemctl (argv, never a shell)."""

    kind: Literal["systemd"]
    unit: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,200}\.(service|socket|timer|target|mount)$",
        description="Unit name, e.g. nginx.service.",
    )
    user: bool = Field(False, description="Use the user manager (systemctl --user).")
    health_url: str | None = Field(
        None, pattern=r"^https?://", description="Health check that must pass after a fix."
    )


class RedisTarget(_Target):
    """A Redis server."""

    kind: Literal["redis"]
    url: str = Field(pattern=r"^rediss?://", description="redis://host:port/db")
    key_patterns: list[str] = Field(
        default_factory=list, description="SCAN patterns that delete_keys may use (exact match)."
    )


class EndpointTarget(_Target):
    """An HTTP control endpoint: config reload, load-balancer weight, scale webhook."""

    kind: Literal["endpoint"]
    url: str = Field(pattern=r"^https?://", description="URL the call is sent to.")
    method: Literal["POST", "PUT", "PATCH"] = Field("PUT", description="HTTP method.")
    field: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="JSON field set by the call; its previous value (GET url) is kept "
        "for rollback. Unset: a trigger without a value (a reload).",
    )
    allowed_values: list[str | int | float | bool] | None = Field(
        None, description="Values the call may set (else any within min/max)."
    )
    min_value: float | None = Field(None, description="Lowest numeric value allowed.")
    max_value: float | None = Field(None, description="Highest numeric value allowed.")
    headers: dict[str, str] = Field(default_factory=dict, description="Static headers.")


class CommandTarget(_Target):
    """A command declared in configuration; parameters become whole argv elements."""

    kind: Literal["command"]
    argv: list[str] = Field(
        min_length=1,
        description="Program and arguments; an element exactly '{name}' takes a parameter.",
    )
    params: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")], str] = Field(
        default_factory=dict,
        description="Parameter name -> regular expression its value must fully match.",
    )
    check_argv: list[str] | None = Field(
        None, description="Exit 0 means healthy: a no-op before, required after (verify)."
    )
    rollback_argv: list[str] | None = Field(None, description="Undo command, if any.")
    idempotent: bool = Field(False, description="Running twice is the same as once.")
    timeout: _Duration = Field(timedelta(seconds=60), description="Kill the command after this.")

    @field_validator("argv", "check_argv", "rollback_argv")
    @classmethod
    def _no_nul(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any("\x00" in part for part in value):
            raise ValueError("argv elements cannot contain NUL")
        return value


Target = Annotated[
    HttpTarget
    | TcpTarget
    | PostgresTarget
    | DuckDBTarget
    | ProcessTarget
    | LogDirTarget
    | SupervisorTarget
    | SystemdTarget
    | RedisTarget
    | EndpointTarget
    | CommandTarget,
    Field(discriminator="kind"),
]
_KINDS = {
    "http",
    "tcp",
    "postgres",
    "duckdb",
    "process",
    "logdir",
    "supervisor",
    "systemd",
    "redis",
    "endpoint",
    "command",
}


# -- jobs --------------------------------------------------------------------------------

JOB_NAMES = (
    "collect",
    "remediate",
    "health",
    "train",
    "maintenance",
    "report",
    "retention",
    "kpi",
    "snapshot",
)
JobName = Literal[
    "collect",
    "remediate",
    "health",
    "train",
    "maintenance",
    "report",
    "retention",
    "kpi",
    "snapshot",
]


class JobSpec(BaseModel):
    """When one job runs: every fixed interval, or on a crontab line (UTC)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: _Duration | None = Field(None, description="Run at this interval.")
    cron: str | None = Field(None, description="Crontab line, e.g. '30 3 * * *' (UTC).")
    enabled: bool = Field(True, description="False: never scheduled (`autofix run` still works).")

    @model_validator(mode="after")
    def _one_trigger(self) -> JobSpec:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of every, cron")
        if self.every is not None and self.every <= timedelta(0):
            raise ValueError("every must be positive")
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"bad crontab line {self.cron!r}: {exc}") from None
        return self


DEFAULT_JOBS: dict[str, JobSpec] = {
    "collect": JobSpec(every=timedelta(seconds=15)),
    "remediate": JobSpec(every=timedelta(minutes=1)),
    "health": JobSpec(every=timedelta(seconds=30)),
    "train": JobSpec(cron="30 3 * * *"),
    "maintenance": JobSpec(every=timedelta(hours=1)),
    "report": JobSpec(cron="0 6 * * *"),
    "retention": JobSpec(cron="15 4 * * *"),
    "kpi": JobSpec(cron="45 23 * * *"),
    "snapshot": JobSpec(every=timedelta(minutes=5)),
}


# -- rules -------------------------------------------------------------------------------

_METRIC = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"


class _When(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    metric: str = Field(pattern=_METRIC, description="Metric name the condition reads.")
    match: dict[str, str] = Field(
        default_factory=dict, description="Label values a series must have (exact match)."
    )


class ThresholdWhen(_When):
    """The latest samples cross a threshold, and have for ``for``."""

    type: Literal["threshold"]
    above: float | None = Field(None, description="True when the value is above this.")
    below: float | None = Field(None, description="True when the value is below this.")
    of_capacity: bool = Field(
        False, description="Compare value / capacity (a share) instead of the raw value."
    )
    hold: _Duration = Field(
        timedelta(0), alias="for", description="How long it must hold before it counts."
    )

    @model_validator(mode="after")
    def _one_bound(self) -> ThresholdWhen:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above, below")
        return self


class ExhaustionWhen(_When):
    """A forecast: P(the series reaches its capacity within ``within``) ≥ ``probability``."""

    type: Literal["exhaustion"]
    within: Literal["1h", "4h", "24h", "4d"] = Field(description="Forecast horizon.")
    probability: float = Field(0.8, gt=0, le=1, description="Least probability that counts.")


class AnomalyWhen(_When):
    """The anomaly score of a (latency) series is at least ``score`` for ``for``."""

    type: Literal["anomaly"]
    score: float = Field(0.9, gt=0, le=1, description="Least anomaly score that counts.")
    hold: _Duration = Field(timedelta(0), alias="for", description="How long it must hold.")


class BaselineWhen(_When):
    """Performance against its own past: baseline median / recent median of a latency."""

    type: Literal["baseline"]
    window: _Duration = Field(timedelta(minutes=15), description="Recent window.")
    baseline: _Duration = Field(
        timedelta(hours=24), description="Baseline window, ending where the recent one starts."
    )
    performance_below: float = Field(
        0.8, gt=0, lt=1, description="True when baseline / recent latency is below this."
    )
    min_samples: int = Field(5, ge=1, description="Fewer samples in either window: no verdict.")


class AlertWhen(BaseModel):
    """A firing Alertmanager alert (``POST /api/v1/alerts/alertmanager``) named ``alertname``.

    The alert's ``target`` label picks the target when an action names none, and only
    when it equals a declared target's name; labels never fill parameters.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["alert"]
    alertname: str = Field(
        pattern=r"^[A-Za-z0-9_:.-]{1,128}$", description="The alert's alertname label."
    )
    match: dict[str, str] = Field(
        default_factory=dict, description="Other label values the alert must have (exact match)."
    )


Condition = Annotated[
    ThresholdWhen | ExhaustionWhen | AnomalyWhen | BaselineWhen | AlertWhen,
    Field(discriminator="type"),
]
_CONDITION_TYPES = {"threshold", "exhaustion", "anomaly", "baseline", "alert"}


class Rule(BaseModel):
    """A condition → ordered candidate fixes, with a mode and gate overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, description="Unique rule name (recorded with decisions).")
    description: str = Field("", description="What the rule is for.")
    when: Condition
    actions: list[ActionSpec] = Field(
        default_factory=list,
        description="Candidate fixes, tried in order until one verifies; empty: the "
        "decision is a request for manual intervention.",
    )
    mode: Literal["off", "shadow", "approve", "auto"] | None = Field(
        None, description="Mode of this rule's fixes (unset: gates, then AUTOFIX_FIX_MODE)."
    )
    gates: GateOverrides | None = Field(None, description="Gate settings for this rule's fixes.")
    horizon: _Duration | None = Field(
        None,
        description="When a shadow decision is scored (was the problem real?); default: "
        "the forecast horizon, else 15m.",
    )
    repeat: _Duration = Field(
        timedelta(minutes=15),
        description="Least time between two decisions of this rule on the same subject.",
    )

    @property
    def score_after(self) -> timedelta:
        """How long after a decision its outcome can be scored."""
        if self.horizon is not None:
            return self.horizon
        if isinstance(self.when, ExhaustionWhen):
            from autofix.models.base import HORIZONS

            return HORIZONS[self.when.within]
        return timedelta(minutes=15)


# -- preventive maintenance --------------------------------------------------------------


class MaintenanceSpec(BaseModel):
    """What preventive maintenance looks for and where it may run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: str | None = Field(
        None,
        description="UTC maintenance windows, e.g. 'sun 02:00-04:00' (unset: "
        "AUTOFIX_FIX_MAINTENANCE_WINDOWS).",
    )
    patch_target: str | None = Field(
        None,
        pattern=_NAME,
        description="A `command` target that installs security updates; unset: upgradable "
        "security packages are reported as a need but nothing installs them.",
    )
    upgradable_argv: list[str] = Field(
        default_factory=lambda: ["apt", "list", "--upgradable"],
        min_length=1,
        description="Command that lists upgradable packages (apt's format).",
    )
    log_growth_per_day: float = Field(
        100e6, gt=0, description="Log growth (bytes/day) above which rotation is needed."
    )
    dead_tuple_ratio: float = Field(
        0.1, gt=0, le=1, description="Dead/live tuple share above which a table needs VACUUM."
    )


class Pipeline(BaseModel):
    """A whole pipelines file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[Target] = Field(default_factory=list)
    jobs: dict[JobName, JobSpec] = Field(
        default_factory=dict, description="Schedules; a job not named keeps its default."
    )
    rules: list[Rule] = Field(default_factory=list)
    gates: dict[Annotated[str, Field(pattern=_ACTION)], GateOverrides] = Field(
        default_factory=dict, description="Gate settings per fix action."
    )
    maintenance: MaintenanceSpec = Field(default_factory=MaintenanceSpec)

    @model_validator(mode="after")
    def _cross_check(self) -> Pipeline:
        from autofix.actions.registry import ACTIONS  # actions import this module

        seen: set[str] = set()
        for index, target in enumerate(self.targets):
            if target.name in seen:
                raise ValueError(f"targets[{index}].name: duplicate target {target.name!r}")
            seen.add(target.name)
            for j, name in enumerate(target.actions or []):
                if name not in ACTIONS:
                    raise ValueError(f"targets[{index}].actions[{j}]: unknown action {name!r}")
            _check_patterns(f"targets[{index}]", target)
        specs: list[tuple[str, ActionSpec]] = []
        for index, target in enumerate(self.targets):
            if target.recovery is not None:
                for j, spec in enumerate(target.recovery.actions):
                    specs.append((f"targets[{index}].recovery.actions[{j}]", spec))
        rule_names: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.name in rule_names:
                raise ValueError(f"rules[{index}].name: duplicate rule {rule.name!r}")
            rule_names.add(rule.name)
            for j, spec in enumerate(rule.actions):
                specs.append((f"rules[{index}].actions[{j}]", spec))
        for where, spec in specs:
            if spec.action not in ACTIONS:
                raise ValueError(f"{where}.action: unknown action {spec.action!r}")
            if spec.target is not None and spec.target not in seen:
                raise ValueError(f"{where}.target: no target named {spec.target!r}")
        patch = self.maintenance.patch_target
        if patch is not None and patch not in seen:
            raise ValueError(f"maintenance.patch_target: no target named {patch!r}")
        return self

    def job(self, name: str) -> JobSpec:
        """The schedule of job ``name``: the file's, else the default."""
        for job, spec in self.jobs.items():
            if job == name:
                return spec
        return DEFAULT_JOBS[name]

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name``, or None."""
        return next((r for r in self.rules if r.name == name), None)

    def target(self, name: str) -> Target | None:
        """The target called ``name``, or None."""
        return next((t for t in self.targets if t.name == name), None)


def _check_patterns(where: str, target: Any) -> None:
    """Regular expressions in a target compile (else every fix on it fails at run time)."""
    patterns: dict[str, Any] = {}
    if getattr(target, "kind", None) == "command":
        patterns = {f"params.{k}": v for k, v in target.params.items()}
    elif getattr(target, "kind", None) == "process" and target.cmdline is not None:
        patterns = {"cmdline": target.cmdline}
    for field, pattern in patterns.items():
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            raise ValueError(f"{where}.{field}: invalid regular expression: {exc}") from None


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _KINDS or part in _CONDITION_TYPES:
            continue  # the discriminator tag pydantic inserts; not a path the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_pipeline(path: Path) -> Pipeline:
    """Read and validate a pipelines file, or raise ConfigError naming file and field."""
    data = load_yaml(path, "pipelines file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _location(tuple(first["loc"]))
        message = " ".join(first["msg"].removeprefix("Value error, ").split())
        # A cross-check names its own field path: "targets[1].name: duplicate ...".
        if where == "(top level)" and re.match(r"^[a-z]+(\[\d+\]|\.[A-Za-z_.]+)", message):
            raise ConfigError(f"{path}: {message}") from None
        raise ConfigError(f"{path}: {where}: {message}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
