"""Settings: one typed table, read once from the environment, ``.env`` and a TOML file.

Precedence, highest first: ``AUTOFIX_*`` environment variables, a ``.env`` file in the
working directory, the TOML file named by ``AUTOFIX_CONFIG`` (default ``autofix.toml``
when it exists), then the defaults below. Every field carries its help text; a test fails
when one does not. Nothing outside this module reads ``os.environ``.

>>> settings = load_settings(environ={"AUTOFIX_RAW_RETENTION": "7d"})
>>> settings.raw_retention.days
7
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from autofix.errors import ConfigError

ENV_PREFIX = "AUTOFIX_"
CONFIG_ENV = "AUTOFIX_CONFIG"
DEFAULT_CONFIG_FILE = Path("autofix.toml")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_API_USER = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


def parse_duration(value: object) -> timedelta:
    """Read ``15s``, ``2m``, ``1.5h``, ``14d``, ``1w`` or a number of seconds.

    >>> parse_duration("2m")
    datetime.timedelta(seconds=120)
    """
    if isinstance(value, timedelta):
        return value
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            number, unit = match.groups()
            seconds = float(number) * _UNIT_SECONDS[unit or "s"]
    if seconds is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 15s, 2m, 1h, 14d)")
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # inf, NaN, or past timedelta's 999,999,999 days
        raise ValueError(f"not a duration: {value!r} (out of range)") from None


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling parse_duration reads back: ``14d``, ``90s``, ``250ms``.

    >>> format_duration(timedelta(days=14))
    '14d'
    """
    seconds = value.total_seconds()
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:g}ms"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Settings(BaseSettings):
    """Every knob autofix has. Field descriptions are the documentation."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="forbid",
        frozen=True,
    )

    db_path: Path = Field(
        Path("data/autofix.duckdb"),
        description="DuckDB file that holds the metric history and the audit tables.",
    )
    snapshot_dir: Path = Field(
        Path("data/snapshot"),
        description="Parquet snapshot that readers use while another process writes the store.",
    )
    models_dir: Path = Field(
        Path("models"),
        description="Where trained models and the local MLflow store live.",
    )
    notebook_size: Literal["small", "full"] = Field(
        "full",
        description="Data the notebooks in notebooks/ run on: `small` (a week of scenarios, "
        "for the test suite) or `full`.",
    )
    pipeline: Path = Field(
        Path("pipelines/local.yaml"),
        description="Pipelines file: the targets to watch, the jobs and the rules.",
    )
    hostname: str = Field(
        default_factory=socket.gethostname,
        description="Host label stamped on samples collected from this machine.",
    )
    collect_interval: Duration = Field(
        timedelta(seconds=15), description="Time between two collection cycles."
    )
    collect_timeout: Duration = Field(
        timedelta(seconds=5),
        description="Longest one collector may take in a cycle before it is abandoned.",
    )
    probe_timeout: Duration = Field(
        timedelta(seconds=2), description="Timeout of one HTTP, TCP or SQL probe."
    )
    host_fs_include: str = Field(
        "",
        description="Filesystems the host collector watches beyond those backed by a "
        "device: comma-separated types (`tmpfs`) and mountpoints (`/run/news`); without "
        "them a tmpfs has no node_filesystem_* series for rules to watch.",
    )
    raw_retention: Duration = Field(
        timedelta(days=14), description="How long raw samples are kept before only rollups remain."
    )
    rollup_retention: Duration = Field(
        timedelta(days=400), description="How long 5-minute rollups are kept."
    )
    lock_wait: Duration = Field(
        timedelta(seconds=5),
        description="How long a writer waits for another process to release the store.",
    )
    import_chunk_rows: int = Field(
        250_000, gt=0, description="Rows per batch when importing a CSV or Parquet file."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Level of autofix's own log lines."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="Log lines as `json` (one object per line, for journald and ELK) or "
        "`console` (readable); `auto`: console on a terminal, JSON otherwise.",
    )
    # -- fix executor gates (each overridable per action or target in the pipelines file)
    fix_mode: Literal["off", "shadow", "approve", "auto"] = Field(
        "approve",
        description="Rule mode: off refuses, shadow plans only, approve waits for a human, "
        "auto executes.",
    )
    dry_run: bool = Field(False, description="Global dry-run: plan every fix, apply none.")
    fix_cooldown: Duration = Field(
        timedelta(minutes=10),
        description="Least time between two runs of one action on one target.",
    )
    fix_backoff_base: Duration = Field(
        timedelta(minutes=5),
        description="Wait after one failed fix; doubles with each further consecutive failure.",
    )
    fix_backoff_max: Duration = Field(
        timedelta(hours=6), description="Longest exponential-backoff wait after failures."
    )
    fix_healthy_reset: Duration = Field(
        timedelta(hours=1),
        description="Failure-free time after which the backoff (failure count) resets.",
    )
    fix_max_runs: int = Field(
        3, ge=0, description="Most runs of one action on one target per AUTOFIX_FIX_RUNS_WINDOW."
    )
    fix_runs_window: Duration = Field(
        timedelta(hours=1), description="Window over which AUTOFIX_FIX_MAX_RUNS is counted."
    )
    fix_hourly_budget: int = Field(
        20, ge=0, description="Most fixes applied across all targets in any rolling hour."
    )
    fix_flap_count: int = Field(
        6,
        ge=1,
        description="Flapping guard: refuse and escalate after this many requests of one "
        "action on one target within AUTOFIX_FIX_FLAP_WINDOW.",
    )
    fix_flap_window: Duration = Field(
        timedelta(hours=1), description="Window of the flapping guard."
    )
    fix_blast_radius: float = Field(
        0.34,
        gt=0,
        le=1,
        description="Largest share of a target group under remediation at once (at least one).",
    )
    fix_unhealthy_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="When more than this share of a group asked for fixes within "
        "AUTOFIX_FIX_UNHEALTHY_WINDOW, escalate instead of fixing.",
    )
    fix_unhealthy_window: Duration = Field(
        timedelta(minutes=15), description="Window in which group members count as unhealthy."
    )
    fix_breaker_failures: int = Field(
        3,
        ge=1,
        description="Circuit breaker: consecutive failures of one action on one target that "
        "open it (hold and escalate).",
    )
    fix_breaker_hold: Duration = Field(
        timedelta(hours=24), description="How long an open circuit breaker holds."
    )
    fix_maintenance_windows: str = Field(
        "",
        description="UTC windows for actions that need downtime, e.g. 'sat 02:00-04:00, "
        "daily 03:00-03:30'; '*' is always; empty is never.",
    )
    fix_approval_ttl: Duration = Field(
        timedelta(hours=1),
        description="How long a fix waits for approval; an expired one never executes.",
    )
    fix_precheck: bool = Field(
        True, description="Re-read facts and re-plan before applying (is it still needed?)."
    )
    fix_postcheck: bool = Field(
        True, description="Verify after applying; a failed verify rolls back and escalates."
    )
    fix_verify_wait: Duration = Field(
        timedelta(seconds=5), description="Wait between apply and the verify re-read of facts."
    )
    fix_timeout: Duration = Field(
        timedelta(minutes=2), description="Longest one action's apply or rollback may take."
    )
    fix_output_limit: int = Field(
        4000, ge=100, description="Characters of action output kept in the audit log."
    )
    fix_settle: Duration = Field(
        timedelta(minutes=1),
        description="After a fix on a target, how long symptoms on it and on the targets "
        "that depend on it are still attributed to that fix (reconnecting pools, warming "
        "caches): decisions there wait instead of fixing again.",
    )
    fix_outcome_window: Duration = Field(
        timedelta(minutes=15),
        description="How long after an applied fix its automatic outcome (effective, "
        "ineffective, unneeded) is judged: the triggering condition must stay cleared.",
    )
    quarantine_dir: Path = Field(
        Path("data/quarantine"),
        description="Where files actions move what they delete (rollback restores from here).",
    )
    quarantine_ttl: Duration = Field(
        timedelta(days=7), description="Age after which quarantined files are purged."
    )
    # -- the service: jobs, KPIs, reports, notifications
    predict_lookback: Duration = Field(
        timedelta(days=7), description="History each prediction pass forecasts from."
    )
    model_workers: int = Field(
        2,
        ge=0,
        le=64,
        description="Worker processes `autofix serve` runs model fits, anomaly scoring and "
        "training in, so they never hold up the API; `0` runs them in the service's own "
        "process.",
    )
    report_dir: Path = Field(
        Path("data/reports"), description="Where the report job writes the HTML report and charts."
    )
    # -- fleet scale: model work on Dask (autofix.compute)
    dask_scheduler: str | None = Field(
        None,
        pattern=r"^(tcp|tls|inproc|ucx)://\S+$",
        description="Dask scheduler (e.g. `tcp://dask:8786`) that forecasting, anomaly "
        "scoring and backtests fan out to; unset: in process for small stores, a "
        "LocalCluster for large ones.",
    )
    compute_dir: Path = Field(
        Path("data/compute"),
        description="Where a run's partitioned Parquet exports go for the workers to read "
        "(with a remote Dask cluster: a directory every worker can read, at the same path).",
    )
    compute_partition_series: int = Field(
        5000,
        ge=1,
        description="Series per partition of model work: a task's memory grows with this, "
        "not with the fleet.",
    )
    compute_local_series: int = Field(
        20_000,
        ge=1,
        description="With no AUTOFIX_DASK_SCHEDULER, a job over at least this many series "
        "runs on a LocalCluster of this machine (else in process, through "
        "AUTOFIX_MODEL_WORKERS under `autofix serve`).",
    )
    compute_workers: int = Field(
        2,
        ge=1,
        le=256,
        description="Worker processes of that LocalCluster.",
    )
    compute_worker_memory: str = Field(
        "2GB",
        pattern=r"^\d+(\.\d+)?\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="Memory limit of one LocalCluster worker (Dask restarts a worker past it).",
    )
    kpi_manual_mttr: Duration = Field(
        timedelta(minutes=30),
        description="Mean time to recover by hand before autofix: the baseline the MTTR "
        "reduction KPI is measured against.",
    )
    maintenance_horizon: Duration = Field(
        timedelta(days=7),
        description="How far ahead preventive maintenance is planned into windows.",
    )
    maintenance_upgradable_cache: Duration = Field(
        timedelta(hours=6),
        description="How long the list of upgradable packages (`apt list --upgradable`, "
        "seconds per run) is reused; it is read again sooner when apt's package lists or "
        "dpkg's status change. 0 reads it every time.",
    )
    notify_slack_url: str | None = Field(
        None, description="Slack incoming-webhook URL for escalations, approvals and reports."
    )
    notify_webhook_url: str | None = Field(
        None, description="Generic webhook URL that receives each notification as JSON."
    )
    notify_smtp_host: str | None = Field(
        None, description="SMTP server for e-mail notifications (unset: no e-mail)."
    )
    notify_smtp_port: int = Field(25, ge=1, le=65535, description="SMTP server port.")
    notify_smtp_starttls: bool = Field(False, description="Upgrade the SMTP session with STARTTLS.")
    notify_smtp_user: str | None = Field(None, description="SMTP login name (unset: no login).")
    notify_smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    notify_smtp_from: str = Field(
        "autofix@localhost", description="Sender address of notification e-mails."
    )
    notify_smtp_to: str = Field(
        "", description="Comma-separated recipient addresses of notification e-mails."
    )
    notify_pagerduty_routing_key: SecretStr | None = Field(
        None,
        description="PagerDuty Events API v2 integration (routing) key: escalations trigger "
        "an alert per incident, resolved when a fix verifies or the target recovers.",
    )
    notify_pagerduty_url: str = Field(
        "https://events.pagerduty.com",
        pattern=r"^https://\S+$",
        description="Base URL of the PagerDuty Events API (the EU service: "
        "https://events.eu.pagerduty.com).",
    )
    notify_alertmanager_url: str | None = Field(
        None,
        description="Alertmanager base URL (e.g. http://127.0.0.1:9093): escalations are "
        "posted as AutofixEscalation alerts to its /api/v2/alerts and resolved there.",
    )
    notify_runbook_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Runbook link for notifications whose rule has no runbook_url.",
    )
    notify_retries: int = Field(
        5, ge=0, description="Retries of a failed notification (exponential backoff)."
    )
    notify_backoff: Duration = Field(
        timedelta(seconds=1), description="First retry wait of a failed notification; doubles."
    )
    notify_timeout: Duration = Field(
        timedelta(seconds=5), description="Timeout of one notification delivery attempt."
    )
    heartbeat_interval: Duration = Field(
        timedelta(seconds=10),
        description="Time between two beats of the scheduler's heartbeat (the systemd "
        "watchdog ping and autofix_scheduler_heartbeat_timestamp_seconds); at most a third "
        "of systemd's WatchdogSec is used.",
    )
    # -- the HTTP API that `autofix serve` runs beside the jobs
    api_host: str = Field("127.0.0.1", description="Address the HTTP API listens on.")
    api_port: int = Field(8787, ge=0, le=65535, description="Port of the HTTP API; 0 runs no API.")
    api_tokens: SecretStr = Field(
        SecretStr(""),
        description="Bearer tokens of the API as comma-separated name:role:token entries "
        "(role viewer or operator, token at least 16 characters); empty: every /api/v1 "
        "request is refused.",
    )
    api_metrics_auth: bool = Field(
        False, description="Require a viewer token for GET /metrics (else it is open)."
    )
    api_max_body: int = Field(
        1_048_576, ge=1024, description="Largest request body in bytes the API accepts (413)."
    )
    # -- the CLI on another host: every command that uses the store goes to that service
    url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Base URL of the API of an `autofix serve` on another host (e.g. "
        "http://ops-1:8787): CLI commands that use the store are carried out there.",
    )
    token: SecretStr | None = Field(
        None,
        description="Bearer token the CLI sends to AUTOFIX_URL (an entry of that service's "
        "AUTOFIX_API_TOKENS); a viewer token runs the reading commands only.",
    )

    @field_validator("api_tokens")
    @classmethod
    def _check_tokens(cls, value: SecretStr) -> SecretStr:
        # Messages name the entry by position (and by name once it is well-formed), and
        # never echo what was given: in `name:token` the "role" is the token.
        names: set[str] = set()
        owners: dict[str, str] = {}
        entries = [e.strip() for e in value.get_secret_value().split(",") if e.strip()]
        for index, entry in enumerate(entries, 1):
            parts = entry.split(":", 2)
            if len(parts) != 3:
                raise ValueError(
                    f"entry {index}: give name:role:token ({len(parts) - 1} ':' found, need 2)"
                )
            name, role, token = parts
            if not re.fullmatch(_API_USER, name):
                raise ValueError(f"entry {index}: the name must be like {_API_USER}")
            if role not in ("viewer", "operator"):
                raise ValueError(f"entry {index} ({name}): the role must be viewer or operator")
            if not re.fullmatch(r"[!-~]{16,}", token):
                raise ValueError(f"{name}: token must be 16 or more printable ASCII, no spaces")
            if name in names:
                raise ValueError(f"{name}: duplicate token name")
            if token in owners:
                # Which role would it get? Whichever entry is looked up first: refuse.
                raise ValueError(f"{name}: the same token as {owners[token]}; give each its own")
            names.add(name)
            owners[token] = name
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives through init kwargs (see load_settings) so that it sits
        # below the environment in precedence.
        return env_settings, dotenv_settings, init_settings


@dataclass(frozen=True)
class SettingSource:
    """One row of ``autofix config show``."""

    name: str
    value: Any
    source: str
    help: str


def _config_file(environ: Mapping[str, str], explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    if CONFIG_ENV in environ:
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    section = data.get("autofix", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [autofix] must be a table")
    unknown = sorted(set(section) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}")
    return dict(section)


def _format_validation(exc: ValidationError, where: str) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "?"
    return f"{where}: setting {field!r}: {' '.join(first['msg'].split())}"


def load_settings(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the settings once; pass the result down instead of reading again."""
    env = os.environ if environ is None else environ
    path = _config_file(env, config_file)
    file_values = _read_toml(path) if path else {}
    env_values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV
    }
    unknown = sorted(set(env_values) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"environment: unknown setting {ENV_PREFIX}{unknown[0].upper()}")
    try:
        # Values are passed explicitly (env over file) so that an injected environ works
        # the same way as the real one; _env_file=None keeps .env out of tests.
        merged = {**file_values, **env_values}
        if environ is None:
            return Settings(**merged)
        return Settings(_env_file=None, **merged)
    except ValidationError as exc:
        where = "environment" if env_values else str(path or "settings")
        raise ConfigError(_format_validation(exc, where)) from None
    except UnicodeDecodeError as exc:  # a .env file that is not text
        raise ConfigError(f".env: not UTF-8 text (byte offset {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f".env: cannot read: {exc.strerror or exc}") from None


_SECRET_NAME = re.compile(r"token|password|secret|key", re.IGNORECASE)
_SECRET_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{16,}$")  # long enough to be a token
MASK = "***"


def redact_url(url: str) -> str:
    """A URL with its credentials masked: user:password, query values, the fragment, Slack
    webhook paths and path segments that look like tokens.

    >>> redact_url("https://u:pw@hooks.example.com/h/x?token=abc&v=1")
    'https://***@hooks.example.com/h/x?token=***&v=***'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK  # not a URL we can take apart: show none of it
    netloc = (
        (f"{MASK}@" if "@" in parts.netloc else "") + (f"[{host}]" if ":" in host else host) + port
    )
    segments = parts.path.split("/")
    if "slack" in host and "services" in segments:
        cut = segments.index("services") + 1
        segments = [*segments[:cut], MASK] if len(segments) > cut else segments
    segments = [MASK if _SECRET_SEGMENT.match(s) else s for s in segments]
    query = "&".join(
        f"{key}={MASK}" for key, _ in parse_qsl(parts.query, keep_blank_values=True)
    ) or (MASK if parts.query else "")
    return urlunsplit(
        (parts.scheme, netloc, "/".join(segments), query, MASK if parts.fragment else "")
    )


def shown(name: str, value: Any) -> Any:
    """A setting's value as ``config show`` prints it: secrets never in clear."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, str) and value:
        if _SECRET_NAME.search(name):
            return MASK
        if "://" in value:
            return redact_url(value)
    return value


def settings_problems(
    config_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings | None, list[tuple[str, str, str]], Any]:
    """Every problem of the settings at once, for ``autofix config check``.

    Returns the settings (None when invalid), the problems as ``(where, setting, message)``
    — ``where`` is ``environment`` or the TOML file — and the pipelines file the settings
    name (as given, even when other settings are invalid).
    """
    import difflib

    env = os.environ if environ is None else environ
    try:
        path = _config_file(env, config_file)
        file_values = _read_toml(path) if path else {}
    except ConfigError as exc:
        return None, [(str(config_file or env.get(CONFIG_ENV, "")), "", str(exc))], None
    env_values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV
    }
    problems: list[tuple[str, str, str]] = []
    known = list(Settings.model_fields)
    for where, values in (("environment", env_values), (str(path), file_values)):
        for name in sorted(set(values) - set(known)):
            close = difflib.get_close_matches(name, known, n=1)
            spell = (lambda n: f"{ENV_PREFIX}{n.upper()}") if where == "environment" else str
            hint = f" (did you mean {spell(close[0])}?)" if close else ""
            problems.append((where, spell(name), f"unknown setting{hint}"))
    merged = {k: v for k, v in {**file_values, **env_values}.items() if k in known}
    pipeline = merged.get("pipeline", Settings.model_fields["pipeline"].default)
    try:
        found = Settings(_env_file=None, **merged) if environ is not None else Settings(**merged)
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "?"
            where = "environment" if name in env_values else str(path or "settings")
            shown = f"{ENV_PREFIX}{name.upper()}" if where == "environment" else name
            problems.append((where, shown, error["msg"].removeprefix("Value error, ")))
        return None, problems, pipeline
    return (None if problems else found), problems, found.pipeline


def describe(settings: Settings, environ: Mapping[str, str] | None = None) -> list[SettingSource]:
    """The effective value of every setting and where it came from (secrets masked)."""
    env = os.environ if environ is None else environ
    path = _config_file(env, None)
    file_keys = set(_read_toml(path)) if path else set()
    rows = []
    for name, field in Settings.model_fields.items():
        if f"{ENV_PREFIX}{name.upper()}" in env:
            source = "env"
        elif name in file_keys:
            source = f"file:{path}"
        else:
            source = "default"
        value = shown(name, getattr(settings, name))
        rows.append(SettingSource(name, value, source, field.description or ""))
    return rows


def systemd_watchdog(environ: Mapping[str, str] | None = None) -> timedelta | None:
    """systemd's watchdog timeout for this process (``WatchdogSec=``), or None.

    Read like sd_watchdog_enabled(3): ``WATCHDOG_USEC``, for this process only when
    ``WATCHDOG_PID`` names another one.
    """
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid is not None and pid != str(os.getpid()):
        return None
    return timedelta(microseconds=int(usec))


def systemd_notify_socket(environ: Mapping[str, str] | None = None) -> str | None:
    """Where systemd listens for this service's notifications (``NOTIFY_SOCKET``), or None
    when it does not run under systemd (``Type=notify``)."""
    env = os.environ if environ is None else environ
    return env.get("NOTIFY_SOCKET") or None


def disable_library_telemetry() -> None:
    """Tell third-party libraries not to phone home (mlflow reads this at import).

    autofix never talks to the network on its own; this is the one place that writes
    the process environment, next to the one place that reads it.
    """
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
