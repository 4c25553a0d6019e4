"""build_collectors maps every target kind to its collector."""

from __future__ import annotations

from pathlib import Path

import pytest

from autofix.collect.files import LogDirCollector
from autofix.collect.host import HostCollector
from autofix.collect.postgres_metrics import PostgresCollector
from autofix.collect.probes import DuckDBProbe, HttpProbe, TcpProbe
from autofix.collect.process import ProcessCollector, SupervisorCollector
from autofix.collect.redis_metrics import RedisCollector
from autofix.collect.registry import build_collectors, close_collectors
from autofix.config import load_settings
from autofix.errors import ConfigError
from autofix.pipeline import Pipeline, ProcessTarget


def test_one_collector_per_target_plus_host(tmp_path: Path) -> None:
    pipeline = Pipeline.model_validate(
        {
            "targets": [
                {"kind": "http", "name": "web", "url": "http://127.0.0.1:1/health"},
                {"kind": "tcp", "name": "redis", "host": "127.0.0.1", "port": 6379},
                {"kind": "postgres", "name": "db", "dsn": "host=127.0.0.1"},
                {"kind": "duckdb", "name": "store", "path": str(tmp_path / "x.duckdb")},
                {"kind": "process", "name": "app", "process_name": "app"},
                {"kind": "logdir", "name": "logs", "path": str(tmp_path)},
                {"kind": "redis", "name": "cache", "url": "redis://127.0.0.1:1/0"},
                {"kind": "supervisor", "name": "web-1", "program": "web-1"},
                {"kind": "systemd", "name": "nginx", "unit": "nginx.service"},
            ]
        }
    )
    settings = load_settings(
        environ={"AUTOFIX_PROBE_TIMEOUT": "750ms", "AUTOFIX_HOST_FS_INCLUDE": "tmpfs,/run/x/"}
    )
    collectors = build_collectors(pipeline, settings)
    try:
        kinds = [type(c) for c in collectors]
        assert kinds == [
            HostCollector,
            HttpProbe,
            TcpProbe,
            PostgresCollector,
            DuckDBProbe,
            ProcessCollector,
            LogDirCollector,
            RedisCollector,
            SupervisorCollector,
        ]
        # Named after their targets: Service.collect_now(name) re-reads one of them.
        assert [c.name for c in collectors] == [
            "host",
            "web",
            "redis",
            "db",
            "store",
            "app",
            "logs",
            "cache",
            "web-1",
        ]
        timed = (HttpProbe, TcpProbe, PostgresCollector, RedisCollector, SupervisorCollector)
        assert {c.timeout for c in collectors if isinstance(c, timed)} == {0.75}
        host = collectors[0]
        assert isinstance(host, HostCollector)
        assert host.include_fstypes == {"tmpfs"}
        assert host.include_mounts == {"/run/x"}
    finally:
        close_collectors(collectors)
        close_collectors(collectors)  # idempotent


def test_empty_pipeline_still_watches_the_host() -> None:
    collectors = build_collectors(Pipeline(), load_settings(environ={}))
    assert [c.name for c in collectors] == ["host"]


def test_bad_cmdline_regex_names_the_target() -> None:
    target = {"kind": "process", "name": "worker", "cmdline": "[unclosed"}
    # Refused when the pipelines file is loaded (issue 11) …
    with pytest.raises(ValueError, match=r"targets\[0\]\.cmdline: invalid regular expression"):
        Pipeline.model_validate({"targets": [target]})
    # … and by the collector too, for a pipeline built some other way.
    pipeline = Pipeline.model_construct(targets=[ProcessTarget.model_validate(target)])
    with pytest.raises(ConfigError, match="target 'worker'"):
        build_collectors(pipeline, load_settings(environ={}))
