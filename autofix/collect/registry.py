"""Turn a pipelines file into the list of collectors one cycle runs."""

from __future__ import annotations

from collections.abc import Iterable

from autofix.collect.base import Collector
from autofix.collect.files import LogDirCollector
from autofix.collect.host import HostCollector, parse_fs_include
from autofix.collect.postgres_metrics import PostgresCollector
from autofix.collect.probes import DuckDBProbe, HttpProbe, TcpProbe
from autofix.collect.process import ProcessCollector, SupervisorCollector
from autofix.collect.redis_metrics import RedisCollector
from autofix.config import Settings
from autofix.pipeline import Pipeline
from autofix.targets import (
    DuckDBTarget,
    HttpTarget,
    LogDirTarget,
    PostgresTarget,
    ProcessTarget,
    RedisTarget,
    SupervisorTarget,
    TcpTarget,
)


def build_collectors(pipeline: Pipeline, settings: Settings) -> list[Collector]:
    """The host collector, then one collector per target, in the file's order.

    Each target's collector is named after the target, so ``Service.collect_now(name)``
    can re-read one target alone (a fix's verify). Raises ConfigError for a target that
    cannot be watched as written (a bad regex).
    """
    timeout = settings.probe_timeout.total_seconds()
    fstypes, mounts = parse_fs_include(settings.host_fs_include)
    collectors: list[Collector] = [HostCollector(fstypes, mounts)]
    for target in pipeline.targets:
        collector: Collector
        match target:
            case HttpTarget():
                collector = HttpProbe(target, timeout)
            case TcpTarget():
                collector = TcpProbe(target, timeout)
            case PostgresTarget():
                collector = PostgresCollector(target, timeout)
            case DuckDBTarget():
                collector = DuckDBProbe(target, timeout)
            case ProcessTarget():
                collector = ProcessCollector(target)
            case LogDirTarget():
                collector = LogDirCollector(target)
            case RedisTarget():
                collector = RedisCollector(target, timeout)
            case SupervisorTarget():
                collector = SupervisorCollector(target, timeout)
            case _:
                # Targets that are only acted on (systemd, endpoint, command) have
                # nothing to collect here.
                continue
        collectors.append(collector)
    return collectors


def close_collectors(collectors: Iterable[Collector]) -> None:
    """Release what collectors hold between cycles (HTTP clients); safe to call twice."""
    for collector in collectors:
        close = getattr(collector, "close", None)
        if callable(close):
            close()
