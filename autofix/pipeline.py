"""The pipelines file: the user's declarative configuration (YAML).

This module holds the ``targets`` section, the things autofix watches (and, later, acts
on). Loading validates the whole file; an error names the file and the path of the bad
field, e.g. ``pipelines/local.yaml: targets[2].url: Input should be a valid URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autofix.errors import ConfigError

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, description="Unique name; becomes the `target` label.")
    group: str | None = Field(None, description="Group for blast-radius accounting.")


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
    path: Path = Field(description="Directory to measure (not followed through symlinks).")


Target = Annotated[
    HttpTarget | TcpTarget | PostgresTarget | DuckDBTarget | ProcessTarget | LogDirTarget,
    Field(discriminator="kind"),
]


class Pipeline(BaseModel):
    """A whole pipelines file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[Target] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Pipeline:
        seen: set[str] = set()
        for index, target in enumerate(self.targets):
            if target.name in seen:
                raise ValueError(f"targets[{index}].name: duplicate target {target.name!r}")
            seen.add(target.name)
        return self


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"http", "tcp", "postgres", "duckdb", "process", "logdir"}:
            continue  # the discriminator tag pydantic inserts; not a path the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_pipeline(path: Path) -> Pipeline:
    """Read and validate a pipelines file, or raise ConfigError naming file and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: pipelines file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    try:
        return Pipeline.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _location(tuple(first["loc"]))
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
