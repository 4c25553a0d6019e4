"""Per-component health checks for the self-healing loop.

One check per target kind, each bounded by ``AUTOFIX_PROBE_TIMEOUT``: HTTP status, TCP
connect, PostgreSQL connect + canary (so an exhausted connection pool is a failed check),
Redis PING, a supervisord program or systemd unit running and its ``health_url``
answering, processes present and not stopped (a SIGSTOPped process is not healthy), a
command target's ``check_argv`` exiting 0. Targets of other kinds (log directories,
endpoints, DuckDB files) have no health check. A check never raises: any failure is an
unhealthy result with its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import httpx
import psutil
import redis

from autofix.actions.base import Context, Runner, run_argv
from autofix.actions.service import service_health
from autofix.collect.host import ProcessCollector
from autofix.collect.probes import HttpProbe, PostgresProbe, TcpProbe
from autofix.pipeline import (
    CommandTarget,
    HttpTarget,
    Pipeline,
    PostgresTarget,
    ProcessTarget,
    RedisTarget,
    SupervisorTarget,
    SystemdTarget,
    Target,
    TcpTarget,
)

log = logging.getLogger(__name__)

CHECKED_KINDS = (
    HttpTarget,
    TcpTarget,
    PostgresTarget,
    RedisTarget,
    SupervisorTarget,
    SystemdTarget,
    ProcessTarget,
    CommandTarget,
)


@dataclass(frozen=True)
class HealthResult:
    """One check of one target."""

    target: str
    ok: bool
    detail: str
    seconds: float


def has_check(target: Target) -> bool:
    """Whether the self-healing loop checks this target."""
    if isinstance(target, CommandTarget) and target.check_argv is None:
        return False
    return target.health and isinstance(target, CHECKED_KINDS)


def check_target(
    target: Target,
    timeout: float,
    *,
    runner: Runner = run_argv,
    http_transport: httpx.BaseTransport | None = None,
) -> HealthResult:
    """Check one target; never raises."""
    start = time.perf_counter()
    try:
        ok, detail = _check(target, timeout, runner, http_transport)
    except Exception as exc:  # a health check reports, it never crashes the loop
        ok, detail = False, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return HealthResult(target.name, ok, detail, time.perf_counter() - start)


def _probe(probe: HttpProbe | TcpProbe | PostgresProbe) -> tuple[bool, str]:
    try:
        samples = probe.collect()
    finally:
        probe.close()
    up = next(s.value for s in samples if s.metric == "probe_up")
    return up == 1.0, probe.last_error or "up"


def _check(
    target: Target, timeout: float, runner: Runner, transport: httpx.BaseTransport | None
) -> tuple[bool, str]:
    match target:
        case HttpTarget():
            return _probe(HttpProbe(target, timeout, transport))
        case TcpTarget():
            return _probe(TcpProbe(target, timeout))
        case PostgresTarget():
            return _probe(PostgresProbe(target, timeout))
        case RedisTarget():
            client = redis.Redis.from_url(
                target.url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            try:
                client.ping()
            finally:
                client.close()
            return True, "PONG"
        case SupervisorTarget() | SystemdTarget():
            ctx = Context(timeout=timeout, runner=runner, http_transport=transport)
            return service_health(target, ctx)
        case ProcessTarget():
            processes = ProcessCollector(target)._find()
            if not processes:
                return False, "no matching process"
            stopped = [p.pid for p in processes if p.status() == psutil.STATUS_STOPPED]
            if stopped:
                return False, f"stopped (SIGSTOP?): pid {', '.join(map(str, stopped))}"
            return True, f"{len(processes)} running"
        case CommandTarget() if target.check_argv is not None:
            done = runner(target.check_argv, timeout)
            if done.returncode == 0:
                return True, "check exit 0"
            return False, f"check exit {done.returncode}: {done.stderr.strip()[:200]}"
    return True, "no health check"


def check_all(
    pipeline: Pipeline,
    timeout: float,
    *,
    runner: Runner = run_argv,
    http_transport: httpx.BaseTransport | None = None,
    workers: int = 32,
) -> list[HealthResult]:
    """Check every checked target concurrently; a started check past its deadline fails.

    One thread per target up to ``workers``. A check gets ``2 × timeout + 1`` seconds
    (connect plus request); one that was still queued then — more targets than workers,
    all slow — is left out of this round rather than reported unhealthy, so a slow
    neighbour never gets a healthy target restarted.
    """
    targets: Sequence[Target] = [t for t in pipeline.targets if has_check(t)]
    if not targets:
        return []
    results = []
    pool = ThreadPoolExecutor(max_workers=min(workers, len(targets)), thread_name_prefix="health")
    try:
        futures = [
            (t, pool.submit(check_target, t, timeout, runner=runner, http_transport=http_transport))
            for t in targets
        ]
        deadline = time.monotonic() + timeout * 2 + 1
        for target, future in futures:
            try:
                results.append(future.result(timeout=max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                if future.cancel():  # never started: not checked this round
                    log.warning("health check of %s skipped: too many slow checks", target.name)
                    continue
                results.append(HealthResult(target.name, False, "health check hung", timeout))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results


__all__ = ["CHECKED_KINDS", "HealthResult", "check_all", "check_target", "has_check"]
