"""Targets: what autofix watches and may act on, as declared in the pipelines file.

Each kind is a pydantic model (``HttpTarget``, ``SupervisorTarget`` …) joined in the
``Target`` union on ``kind``. Fix actions read their allowlists from these models, and
the pipelines file (``autofix.pipeline``) holds a list of them; this module sits below
both, so neither has to import the other.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
ACTION_PATTERN = r"^[a-z]+\.[a-z_]+$"


def _duration(value: object) -> timedelta:
    from autofix.config import parse_duration  # config imports nothing from here

    return parse_duration(value)


DurationField = Annotated[timedelta, BeforeValidator(_duration)]
#: A size in bytes: a number, or with a unit (``512MiB``, ``2GB``).
SizeField = Annotated[ByteSize, Field(gt=0)]


class GateOverrides(BaseModel):
    """Gate settings for one action or one target; unset fields keep the AUTOFIX_FIX_* value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["off", "shadow", "approve", "auto"] | None = None
    cooldown: DurationField | None = None
    backoff_base: DurationField | None = None
    backoff_max: DurationField | None = None
    healthy_reset: DurationField | None = None
    max_runs: int | None = Field(None, ge=0)
    runs_window: DurationField | None = None
    flap_count: int | None = Field(None, ge=1)
    flap_window: DurationField | None = None
    blast_radius: float | None = Field(None, gt=0, le=1)
    unhealthy_share: float | None = Field(None, gt=0, le=1)
    unhealthy_window: DurationField | None = None
    breaker_failures: int | None = Field(None, ge=1)
    breaker_hold: DurationField | None = None
    maintenance_windows: str | None = None
    approval_ttl: DurationField | None = None
    verify_wait: DurationField | None = None
    timeout: DurationField | None = None


#: Why a health check failed, as the self-healing loop tells it (``autofix.health``):
#: ``down`` nothing runs (no process, the service stopped or crashed); ``refused`` it runs
#: but does not accept connections; ``hang`` it accepts (or exists) but does not answer —
#: a stopped (SIGSTOP) or wedged process; ``error`` it answers with an error status;
#: ``slow`` it answers, too slowly; ``dependency`` the failure is explained by a target it
#: depends on; ``planned`` a stop or restart someone started (supervisord STOPPING /
#: STARTING, a fresh start still warming up) — not a fault.
Cause = Literal["down", "refused", "hang", "error", "slow", "dependency", "planned"]
CAUSES: tuple[str, ...] = ("down", "refused", "hang", "error", "slow", "dependency", "planned")
#: Causes a target's own recovery answers when its candidates do not say.
OWN_CAUSES = frozenset({"down", "refused", "hang", "error", "slow"})


class ActionSpec(BaseModel):
    """One candidate fix: an action, the target it runs on and its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str = Field(pattern=ACTION_PATTERN, description="Action name, e.g. service.restart.")
    target: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Declared target to act on; unset: the target the condition is about "
        "(the series' `target` label, or the target being recovered).",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Action parameters.")
    causes: list[Cause] | None = Field(
        None,
        description="Health causes this candidate answers (recovery only), e.g. [hang, down]; "
        "unset: every cause that is the target's own (never `dependency` or `planned`).",
    )


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

    name: str = Field(pattern=NAME_PATTERN, description="Unique name; becomes the `target` label.")
    group: str | None = Field(None, description="Group for blast-radius accounting.")
    actions: list[Annotated[str, Field(pattern=ACTION_PATTERN)]] | None = Field(
        None,
        description="Allowlist of fix actions for this target; unset allows every action "
        "that fits the kind.",
    )
    gates: GateOverrides | None = Field(None, description="Gate settings for this target.")
    health: bool = Field(True, description="Health-check this target in the self-healing loop.")
    depends_on: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list,
        description="Targets this one needs (a web app: its database and cache). While one "
        "of them is unhealthy or being fixed, this target's symptoms are attributed to it: "
        "its decisions are recorded as inhibited and nothing is done to this target.",
    )
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
    memory_limit: SizeField | None = Field(
        None,
        description="Memory one process may use (e.g. 512MiB): the capacity of its "
        "process_resident_memory_bytes. Unset: its memory cgroup's limit, else the host's RAM.",
    )

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
    start_grace: DurationField = Field(
        timedelta(seconds=10),
        description="A health check failing this soon after a (re)start is the start "
        "still warming up (cause `planned`), not a fault.",
    )
    memory_limit: SizeField | None = Field(
        None,
        description="Memory one process of the program may use (e.g. 512MiB): the capacity "
        "of its process_resident_memory_bytes. Unset: its memory cgroup's limit, else the "
        "host's RAM.",
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
    start_grace: DurationField = Field(
        timedelta(seconds=10),
        description="A health check failing this soon after a (re)start is the start "
        "still warming up (cause `planned`), not a fault.",
    )


class RedisTarget(_Target):
    """A Redis server."""

    kind: Literal["redis"]
    url: str = Field(pattern=r"^rediss?://", description="redis://host:port/db")
    key_patterns: list[str] = Field(
        default_factory=list,
        description="SCAN patterns that delete_keys may use (exact match); each is counted "
        "as redis_keys_count{key=pattern}.",
    )
    memory_limit: SizeField | None = Field(
        None,
        description="Capacity of redis_memory_used_bytes when the server sets no maxmemory "
        "(e.g. 2GiB). Unset: maxmemory, else the server host's RAM (total_system_memory).",
    )
    scan_max_keys: int = Field(
        100_000,
        ge=100,
        description="Keys SCANned per pattern per collection for redis_keys_count; past it, "
        "the count is extrapolated from the share of keys that matched.",
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
    timeout: DurationField = Field(
        timedelta(seconds=60), description="Kill the command after this."
    )

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
TARGET_KINDS = {
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
