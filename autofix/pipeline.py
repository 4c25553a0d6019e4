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
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from autofix._yaml import load_yaml
from autofix.actions.registry import ACTIONS
from autofix.errors import ConfigError
from autofix.jobnames import JOB_NAMES
from autofix.targets import (
    ACTION_PATTERN,
    NAME_PATTERN,
    TARGET_KINDS,
    ActionSpec,
    CommandTarget,
    DuckDBTarget,
    DurationField,
    EndpointTarget,
    GateOverrides,
    HttpTarget,
    LogDirTarget,
    PostgresTarget,
    ProcessTarget,
    Recovery,
    RedisTarget,
    SupervisorTarget,
    SystemdTarget,
    Target,
    TcpTarget,
)

# The target models live in autofix.targets; they are re-exported here because a
# pipelines file is where users meet them.
__all__ = [
    "JOB_NAMES",
    "ActionSpec",
    "AlertWhen",
    "AnomalyWhen",
    "BaselineWhen",
    "CommandTarget",
    "Condition",
    "DuckDBTarget",
    "EndpointTarget",
    "ExhaustionWhen",
    "GateOverrides",
    "HttpTarget",
    "JobSpec",
    "LogDirTarget",
    "MaintenanceSpec",
    "Pipeline",
    "PostgresTarget",
    "ProcessTarget",
    "Recovery",
    "RedisTarget",
    "Rule",
    "SupervisorTarget",
    "SystemdTarget",
    "Target",
    "TcpTarget",
    "ThresholdWhen",
    "load_pipeline",
]

# -- jobs --------------------------------------------------------------------------------

# JOB_NAMES lives in autofix.jobnames (imported above): the CLI lists it without pydantic.
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

    every: DurationField | None = Field(None, description="Run at this interval.")
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
    hold: DurationField = Field(
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
    hold: DurationField = Field(timedelta(0), alias="for", description="How long it must hold.")


class BaselineWhen(_When):
    """Performance against its own past: baseline median / recent median of a latency."""

    type: Literal["baseline"]
    window: DurationField = Field(timedelta(minutes=15), description="Recent window.")
    baseline: DurationField = Field(
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


class TargetSelector(BaseModel):
    """The declared targets a rule is about, written once for a whole group.

    ``target: {group: web}`` makes the rule fire per member whose series match (a series
    belongs to a member through its ``target`` label) and act on that member: the
    restart goes to the worker that leaks. Every given field must match.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str | None = Field(None, description="Members of this group.")
    kind: str | None = Field(None, description="Targets of this kind (supervisor, redis …).")
    names: list[Annotated[str, Field(pattern=NAME_PATTERN)]] | None = Field(
        None, description="These targets by name."
    )

    @model_validator(mode="after")
    def _something(self) -> TargetSelector:
        if self.group is None and self.kind is None and self.names is None:
            raise ValueError("give at least one of group, kind, names")
        if self.kind is not None and self.kind not in TARGET_KINDS:
            raise ValueError(f"unknown target kind {self.kind!r}")
        return self

    def members(self, targets: Sequence[Target]) -> list[Target]:
        """The targets this selector picks, in the file's order."""
        return [
            t
            for t in targets
            if (self.group is None or t.group == self.group)
            and (self.kind is None or t.kind == self.kind)
            and (self.names is None or t.name in self.names)
        ]


class Rule(BaseModel):
    """A condition → ordered candidate fixes, with a mode and gate overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=NAME_PATTERN, description="Unique rule name (recorded with decisions)."
    )
    description: str = Field("", description="What the rule is for.")
    when: Condition
    target: TargetSelector | None = Field(
        None,
        description="Fire per member of these targets (e.g. {group: web}) whose series "
        "match, acting on that member; unset: every series that matches `when`.",
    )
    actions: list[ActionSpec] = Field(
        default_factory=list,
        description="Candidate fixes, tried in order until one verifies; empty: the "
        "decision is a request for manual intervention.",
    )
    mode: Literal["off", "shadow", "approve", "auto"] | None = Field(
        None, description="Mode of this rule's fixes (unset: gates, then AUTOFIX_FIX_MODE)."
    )
    gates: GateOverrides | None = Field(None, description="Gate settings for this rule's fixes.")
    horizon: DurationField | None = Field(
        None,
        description="When a shadow decision is scored (was the problem real?); default: "
        "the forecast horizon, else 15m.",
    )
    repeat: DurationField = Field(
        timedelta(minutes=15),
        description="Least time between two decisions of this rule on the same subject.",
    )
    runbook_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Runbook link carried into every notification about this rule's fixes "
        "(escalations, approvals, PagerDuty and Alertmanager); unset: "
        "AUTOFIX_NOTIFY_RUNBOOK_URL.",
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
        pattern=NAME_PATTERN,
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
    gates: dict[Annotated[str, Field(pattern=ACTION_PATTERN)], GateOverrides] = Field(
        default_factory=dict, description="Gate settings per fix action."
    )
    maintenance: MaintenanceSpec = Field(default_factory=MaintenanceSpec)

    @model_validator(mode="after")
    def _cross_check(self) -> Pipeline:
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

    @model_validator(mode="after")
    def _check_dependencies(self) -> Pipeline:
        """``depends_on`` names declared targets and has no cycle; recoveries never overlap."""
        names = {t.name: i for i, t in enumerate(self.targets)}
        for index, target in enumerate(self.targets):
            for j, dep in enumerate(target.depends_on):
                where = f"targets[{index}].depends_on[{j}]"
                if dep not in names:
                    raise ValueError(f"{where}: no target named {dep!r}")
                if dep == target.name:
                    raise ValueError(f"{where}: {target.name!r} cannot depend on itself")
        cycle = find_cycle({t.name: list(t.depends_on) for t in self.targets})
        if cycle is not None:
            index = names[cycle[0]]
            raise ValueError(f"targets[{index}].depends_on: dependency cycle {' -> '.join(cycle)}")
        for index, rule in enumerate(self.rules):
            for j, spec in enumerate(rule.actions):
                if spec.causes is not None:
                    raise ValueError(
                        f"rules[{index}].actions[{j}].causes: only recovery actions "
                        "choose by health cause"
                    )
            if rule.target is not None and not rule.target.members(self.targets):
                raise ValueError(f"rules[{index}].target: selects no declared target")
        overlap = recovery_overlap(self.targets)
        if overlap is not None:
            raise ValueError(overlap)
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


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of ``graph`` (node → what it depends on) as a closed path, or None.

    >>> find_cycle({"web": ["db"], "db": ["web"]})
    ['web', 'db', 'web']
    >>> find_cycle({"web": ["db"], "db": []}) is None
    True
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if state.get(dep) is None and (found := visit(dep)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if state.get(node) is None and (found := visit(node)) is not None:
            return found
    return None


def recovery_overlap(targets: Sequence[Target]) -> str | None:
    """Two targets whose recoveries act on one program (two restarts for one fault), or None.

    They overlap when their recovery actions act on the same target, or when a
    ``process`` target with a recovery watches the program of a ``supervisor`` /
    ``systemd`` target that has one too (its process name, or its cmdline pattern
    matching the program or unit name).
    """
    recovering = [(i, t) for i, t in enumerate(targets) if t.recovery is not None]
    acted: dict[str, tuple[int, str]] = {}
    for index, target in recovering:
        assert target.recovery is not None
        for spec in target.recovery.actions:
            on = spec.target or target.name
            if on in acted and acted[on][1] != target.name:
                first = acted[on][1]
                return (
                    f"targets[{index}].recovery: {target.name!r} and {first!r} both recover "
                    f"{on!r} (two fixes for one fault); keep one recovery"
                )
            acted.setdefault(on, (index, target.name))
    for index, target in recovering:
        if not isinstance(target, ProcessTarget):
            continue
        for _, other in recovering:
            if isinstance(other, SupervisorTarget):
                program = other.program.split(":")[-1]
            elif isinstance(other, SystemdTarget):
                program = other.unit.rsplit(".", 1)[0]
            else:
                continue
            if _watches(target, program):
                return (
                    f"targets[{index}].recovery: process target {target.name!r} watches the "
                    f"program of {other.kind} target {other.name!r}, which has its own "
                    "recovery (two restarts for one fault); keep the recovery on one of them"
                )
    return None


def _watches(target: ProcessTarget, program: str) -> bool:
    if target.process_name is not None:
        return target.process_name == program
    if target.cmdline is not None:
        try:
            return re.search(target.cmdline, program) is not None
        except re.error:
            return False
    return False


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in TARGET_KINDS or part in _CONDITION_TYPES:
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
