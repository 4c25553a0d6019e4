"""Per-component health checks for the self-healing loop, each telling *why* it failed.

One check per target kind, each bounded by ``AUTOFIX_PROBE_TIMEOUT``: HTTP status, TCP
connect, PostgreSQL connect + canary (so an exhausted connection pool is a failed check),
Redis PING, a supervisord program or systemd unit running and its ``health_url``
answering, processes present and not stopped, a command target's ``check_argv`` exiting 0.
Targets of other kinds (log directories, endpoints, DuckDB files) have no health check.
A check never raises: any failure is an unhealthy result with its reason.

A failed check names its cause (``autofix.targets.Cause``), because the right fix depends
on it: ``down`` (nothing runs), ``refused`` (runs, does not accept connections),
``hang`` (accepts or exists but does not answer: a SIGSTOPped or wedged process),
``error`` (answers with an error status), ``slow`` (answers, later than half the probe
timeout), ``dependency`` (the answer names a target this one depends on — a web worker's
``503 database unavailable``) and ``planned`` (a stop or restart someone started:
supervisord STOPPING / STOPPED / STARTING, or a fresh start still inside its grace).
The self-healing loop never restarts a target for ``dependency`` or ``planned``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import httpx
import psutil
import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from autofix.actions.base import Context, Runner, run_argv
from autofix.actions.service import service_state
from autofix.collect.host import ProcessCollector
from autofix.collect.probes import LIBPQ_MIN_CONNECT_TIMEOUT
from autofix.pipeline import Pipeline
from autofix.targets import (
    CommandTarget,
    HttpTarget,
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
#: How much of an error response is read to find the dependency it names.
_BODY_LIMIT = 2048
#: Words by which an error page names a dependency of a kind (besides its target name).
_KIND_WORDS = {
    "postgres": ("postgres", "postgresql", "database", "db"),
    "redis": ("redis", "cache"),
    "duckdb": ("duckdb", "database"),
}
#: supervisord states (systemd's are mapped onto them) that mean someone asked for a stop.
_PLANNED_STATES = frozenset({"STOPPING", "STOPPED", "STARTING"})


@dataclass(frozen=True)
class HealthResult:
    """One check of one target: ``cause`` is None when healthy.

    ``dependency`` is the declared dependency the failure names, when it names one.
    """

    target: str
    ok: bool
    detail: str
    seconds: float
    cause: str | None = None
    dependency: str | None = None


def has_check(target: Target) -> bool:
    """Whether the self-healing loop checks this target."""
    if isinstance(target, CommandTarget) and target.check_argv is None:
        return False
    return target.health and isinstance(target, CHECKED_KINDS)


@dataclass(frozen=True)
class _Verdict:
    ok: bool
    detail: str
    cause: str | None = None
    dependency: str | None = None


def check_target(
    target: Target,
    timeout: float,
    *,
    runner: Runner = run_argv,
    http_transport: httpx.BaseTransport | None = None,
    pipeline: Pipeline | None = None,
) -> HealthResult:
    """Check one target; never raises. ``pipeline`` resolves the dependencies it names."""
    start = time.perf_counter()
    try:
        verdict = _check(target, timeout, runner, http_transport, pipeline)
    except Exception as exc:  # a health check reports, it never crashes the loop
        verdict = _Verdict(False, f"{type(exc).__name__}: {' '.join(str(exc).split())}", "error")
    seconds = time.perf_counter() - start
    return HealthResult(
        target.name, verdict.ok, verdict.detail, seconds, verdict.cause, verdict.dependency
    )


def _check(
    target: Target,
    timeout: float,
    runner: Runner,
    transport: httpx.BaseTransport | None,
    pipeline: Pipeline | None,
) -> _Verdict:
    match target:
        case HttpTarget():
            return check_http(
                target.url, timeout, transport, target, pipeline, expect=target.expect_status
            )
        case TcpTarget():
            return _tcp(target, timeout)
        case PostgresTarget():
            return _postgres(target, timeout)
        case RedisTarget():
            return _redis(target, timeout)
        case SupervisorTarget() | SystemdTarget():
            return _service(target, timeout, runner, transport, pipeline)
        case ProcessTarget():
            processes = ProcessCollector(target)._find()
            if not processes:
                return _Verdict(False, "no matching process", "down")
            stopped = [p.pid for p in processes if _stopped(p)]
            if stopped:
                pids = ", ".join(map(str, stopped))
                return _Verdict(False, f"stopped (SIGSTOP?): pid {pids}", "hang")
            return _Verdict(True, f"{len(processes)} running")
        case CommandTarget() if target.check_argv is not None:
            done = runner(target.check_argv, timeout)
            if done.returncode == 0:
                return _Verdict(True, "check exit 0")
            return _Verdict(
                False, f"check exit {done.returncode}: {done.stderr.strip()[:200]}", "error"
            )
    return _Verdict(True, "no health check")


def _stopped(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_STOPPED)
    except psutil.Error:
        return False


def names_dependency(text: str, target: Target | None, pipeline: Pipeline | None) -> str | None:
    """The declared dependency of ``target`` that an error text names, or None.

    A dependency is named by its target name, or by a word of its kind (``database`` for
    a ``postgres`` target, ``cache`` for a ``redis`` one). A JSON body's ``failing`` list
    (``{"status": "unhealthy", "failing": ["redis"]}``, the usual health-endpoint shape)
    is read first: it says which dependency fails, where the rest of the body may mention
    every dependency the app has. When several dependencies are named, the first declared
    one is given: any of them explains the symptom.

    >>> p = Pipeline.model_validate({"targets": [
    ...     {"name": "news-db", "kind": "postgres", "dsn": "postgresql:///news"},
    ...     {"name": "cache", "kind": "redis", "url": "redis://c/0"},
    ...     {"name": "web", "kind": "http", "url": "http://w/",
    ...      "depends_on": ["news-db", "cache"]}]})
    >>> names_dependency("503: database unavailable", p.targets[2], p)
    'news-db'
    >>> names_dependency('{"failing": ["redis"], "errors": {"redis": "OOM", "postgres": "ok"}}',
    ...                  p.targets[2], p)
    'cache'
    """
    if target is None or pipeline is None or not target.depends_on:
        return None
    failing = _failing_list(text)
    if failing:
        named = _named(" ".join(failing), target, pipeline)
        if named is not None:
            return named
    return _named(text, target, pipeline)


def _failing_list(text: str) -> list[str]:
    """The ``failing`` list of a JSON health body, or []."""
    try:
        body = json.loads(text)
    except ValueError:
        return []
    failing = body.get("failing") if isinstance(body, dict) else None
    if not isinstance(failing, list):
        return []
    return [str(item) for item in failing]


def _named(text: str, target: Target, pipeline: Pipeline) -> str | None:
    lowered = text.lower()
    words = set(re.findall(r"[a-z0-9_.-]+", lowered))
    for name in target.depends_on:
        if name.lower() in words or name.lower() in lowered:
            return name
    for name in target.depends_on:
        dep = pipeline.target(name)
        if dep is not None and any(w in words for w in _KIND_WORDS.get(dep.kind, ())):
            return name
    return None


def check_http(
    url: str,
    timeout: float,
    transport: httpx.BaseTransport | None,
    target: Target | None = None,
    pipeline: Pipeline | None = None,
    *,
    expect: int | None = None,
) -> _Verdict:
    """GET ``url``: refused, hung, an error status (naming a dependency?), slow, or fine.

    ``expect``: the one status that counts as up; None: any 2xx.
    """
    started = time.perf_counter()
    try:
        with (
            httpx.Client(
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
                transport=transport,
                headers={"User-Agent": "autofix-health"},
            ) as client,
            client.stream("GET", url) as response,
        ):
            status = response.status_code
            body = b""
            if status >= 400:
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= _BODY_LIMIT:
                        break
    except httpx.ConnectError as exc:
        text = str(exc).lower()
        if "refused" in text or "errno 111" in text:
            return _Verdict(False, "connection refused", "refused")
        return _Verdict(False, f"cannot connect: {' '.join(str(exc).split())}", "refused")
    except httpx.ConnectTimeout:
        return _Verdict(False, f"connect timed out after {timeout:g}s", "hang")
    except httpx.TimeoutException:
        return _Verdict(False, f"accepted but no answer within {timeout:g}s", "hang")
    except httpx.HTTPError as exc:
        return _Verdict(False, f"{type(exc).__name__}: {' '.join(str(exc).split())}", "error")
    elapsed = time.perf_counter() - started
    up = status == expect if expect is not None else 200 <= status < 300
    if not up:
        text = body.decode("utf-8", "replace")
        summary = " ".join(text.split())[:120]
        detail = f"HTTP {status}" + (f": {summary}" if summary else "")
        dependency = names_dependency(text, target, pipeline)
        if dependency is not None:
            return _Verdict(False, detail, "dependency", dependency)
        return _Verdict(False, detail, "error")
    if elapsed > timeout / 2:
        return _Verdict(False, f"HTTP {status} after {elapsed:.2f}s (slow)", "slow")
    return _Verdict(True, f"HTTP {status}")


def _tcp(target: TcpTarget, timeout: float) -> _Verdict:
    try:
        with socket.create_connection((target.host, target.port), timeout):
            pass
    except ConnectionRefusedError:
        return _Verdict(False, "connection refused", "refused")
    except TimeoutError:
        return _Verdict(False, f"connect timed out after {timeout:g}s", "hang")
    except OSError as exc:
        return _Verdict(False, f"cannot connect: {exc.strerror or exc}", "refused")
    return _Verdict(True, "accepting")


_PG_USAGE = """
    SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
           current_setting('max_connections')::int,
           current_setting('superuser_reserved_connections')::int
             + coalesce(current_setting('reserved_connections', true)::int, 0)
"""


#: Roles the target's applications log in as, at their CONNECTION LIMIT.
_PG_ROLES_FULL = """
    SELECT r.rolname, count(*) AS used, r.rolconnlimit
    FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
    WHERE r.rolconnlimit >= 0
      AND r.rolname IN (SELECT usename FROM pg_stat_activity
                        WHERE application_name = ANY(%s) AND usename IS NOT NULL)
    GROUP BY r.rolname, r.rolconnlimit
    HAVING count(*) >= r.rolconnlimit
    ORDER BY r.rolname
"""


def _postgres(target: PostgresTarget, timeout: float) -> _Verdict:
    """Connect and run the canary, then look at the pool: a superuser's connection uses
    the reserved slots, so "it connects" does not mean the application can."""
    overrides: dict[str, str | int] = {
        "connect_timeout": max(LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(timeout))
    }
    if "application_name" not in conninfo_to_dict(target.dsn):
        overrides["application_name"] = "autofix-health"
    try:
        conn = psycopg.connect(make_conninfo(target.dsn, **overrides))
    except psycopg.Error as exc:
        error = " ".join(str(exc).split())
        lowered = error.lower()
        if "refused" in lowered or "no such file" in lowered:
            return _Verdict(False, error, "refused")
        if "timeout" in lowered or "timed out" in lowered:
            return _Verdict(False, error, "hang")
        return _Verdict(False, error, "error")  # "too many clients": the pool is exhausted
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(max(1, math.ceil(timeout * 1000)))
                )
            )
            try:
                cur.execute(target.canary.encode())  # trusted: from the pipelines file
                if cur.description is not None:
                    cur.fetchone()
            except psycopg.errors.QueryCanceled:
                return _Verdict(False, f"canary query ran past {timeout:g}s", "slow")
            cur.execute(_PG_USAGE)
            row = cur.fetchone()
            full_roles: list[tuple[str, int, int]] = []
            if target.applications:
                cur.execute(_PG_ROLES_FULL, [list(target.applications)])
                full_roles = [(str(r), int(n), int(m)) for r, n, m in cur.fetchall()]
        conn.rollback()
    except psycopg.Error as exc:
        return _Verdict(False, " ".join(str(exc).split()), "error")
    finally:
        conn.close()
    if full_roles:
        role, used_by_role, limit = full_roles[0]
        return _Verdict(
            False,
            f"role {role} at its connection limit ({used_by_role} of {limit}): "
            f"{', '.join(target.applications)} cannot connect",
            "error",
        )
    if row is not None:
        used, most, reserved = (int(v) for v in row)
        if used - 1 >= most - reserved:  # ourselves left out: we may hold a reserved slot
            return _Verdict(
                False,
                f"connections exhausted: {used} in use of {most} ({reserved} reserved)",
                "error",
            )
    return _Verdict(True, "up")


def _redis(target: RedisTarget, timeout: float) -> _Verdict:
    client = redis.Redis.from_url(
        target.url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        client.ping()
    except redis.TimeoutError:
        return _Verdict(False, f"no answer to PING within {timeout:g}s", "hang")
    except redis.ConnectionError as exc:
        text = " ".join(str(exc).split())
        cause = "refused" if "refused" in text.lower() else "error"
        return _Verdict(False, text, cause)
    except redis.RedisError as exc:
        return _Verdict(False, " ".join(str(exc).split()), "error")
    finally:
        client.close()
    return _Verdict(True, "PONG")


def _service(
    target: SupervisorTarget | SystemdTarget,
    timeout: float,
    runner: Runner,
    transport: httpx.BaseTransport | None,
    pipeline: Pipeline | None,
) -> _Verdict:
    ctx = Context(timeout=timeout, runner=runner, http_transport=transport)
    state = service_state(target, ctx)
    name, detail = state["state"], state["detail"]
    if name in _PLANNED_STATES:
        return _Verdict(False, f"state {name} ({detail}): a stop or start in progress", "planned")
    if name != "RUNNING":
        return _Verdict(False, f"state {name} ({detail})", "down")
    pid = int(state["pid"] or 0)
    if target.health_url is None:
        if _pid_stopped(pid):
            return _Verdict(False, f"pid {pid} stopped (SIGSTOP?)", "hang")
        return _Verdict(True, f"running as pid {pid}")
    # The answer decides; a stopped pid only explains a missing one (a process stopped for
    # a moment that answers within the timeout is not hung).
    verdict = check_http(target.health_url, timeout, transport, target, pipeline)
    if verdict.ok:
        return _Verdict(True, f"running as pid {pid}, {verdict.detail}")
    if verdict.cause in {"hang", "refused", "slow"} and _pid_stopped(pid):
        return _Verdict(False, f"pid {pid} stopped (SIGSTOP?): {verdict.detail}", "hang")
    uptime = state.get("uptime")
    if (
        verdict.cause in {"refused", "error", "slow"}
        and uptime is not None
        and uptime < target.start_grace.total_seconds()
    ):
        return _Verdict(
            False, f"started {uptime:.0f}s ago, not answering yet: {verdict.detail}", "planned"
        )
    detail = f"health check failed: {verdict.detail}"
    return _Verdict(False, detail, verdict.cause, verdict.dependency)


def _pid_stopped(pid: int) -> bool:
    if not pid:
        return False
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    except psutil.Error:
        return False  # not on this host, or gone since


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
            (
                t,
                pool.submit(
                    check_target,
                    t,
                    timeout,
                    runner=runner,
                    http_transport=http_transport,
                    pipeline=pipeline,
                ),
            )
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
                results.append(
                    HealthResult(target.name, False, "health check hung", timeout, "hang")
                )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return results


__all__ = [
    "CHECKED_KINDS",
    "HealthResult",
    "check_all",
    "check_http",
    "check_target",
    "has_check",
    "names_dependency",
]
