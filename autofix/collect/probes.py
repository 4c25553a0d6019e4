"""Black-box probes: HTTP, TCP, PostgreSQL and DuckDB, each under its own timeout.

Every probe emits ``probe_up{target,kind}`` (1 or 0). A successful probe adds
``probe_duration_seconds``; the SQL probes also split it into connect and query time.
A failed probe never raises out of ``collect``: it reports ``probe_up 0``, keeps the
reason in ``last_error``, logs it, and emits no latency (the latency of a failure is not
a latency, and NaN is never stored). No probe starts a subprocess or a shell.

>>> from autofix.targets import TcpTarget
>>> probe = TcpProbe(TcpTarget(kind="tcp", name="nothing", host="127.0.0.1", port=1), 1.0)
>>> [(s.metric, s.value) for s in probe.collect()]
[('probe_up', 0.0)]
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import duckdb
import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from autofix.collect.base import Sample
from autofix.errors import CollectError
from autofix.targets import DuckDBTarget, HttpTarget, PostgresTarget, TcpTarget

log = logging.getLogger(__name__)

#: libpq treats any connect_timeout below 2 seconds as 2 seconds.
LIBPQ_MIN_CONNECT_TIMEOUT = 2


class _ProbeError(CollectError):
    """A probe's reason for being down; raised inside a probe, never out of ``collect``.

    ``samples`` are observations that are still true of a failed probe, such as the
    status code of a wrong HTTP response.
    """

    def __init__(self, reason: str, samples: Sequence[Sample] = ()) -> None:
        super().__init__(reason)
        self.samples = list(samples)


def _reason(exc: BaseException) -> str:
    # Driver messages (libpq especially) span several lines; a log line should not.
    text = " ".join(str(exc).split())
    if isinstance(exc, _ProbeError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Probe:
    """Shared bookkeeping: labels, timing, turning any exception into ``probe_up 0``."""

    kind: str

    def __init__(self, name: str, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"probe timeout must be positive, got {timeout!r}")
        self.name = name
        self.timeout = float(timeout)
        #: Why the last probe failed, or None after a success.
        self.last_error: str | None = None

    def collect(self) -> list[Sample]:
        labels = {"target": self.name, "kind": self.kind}
        start = time.perf_counter()
        try:
            extra = self._probe(labels)
        except Exception as exc:  # any failure is a down probe, never a crash
            self.last_error = _reason(exc)
            log.warning("%s probe %s down: %s", self.kind, self.name, self.last_error)
            kept = exc.samples if isinstance(exc, _ProbeError) else []
            return [Sample("probe_up", 0.0, labels), *kept]
        elapsed = time.perf_counter() - start
        self.last_error = None
        return [
            Sample("probe_up", 1.0, labels),
            Sample("probe_duration_seconds", elapsed, labels, unit="seconds"),
            *extra,
            *self._after(),
        ]

    def _probe(self, labels: dict[str, str]) -> list[Sample]:
        """Check the target; return extra samples, or raise with a clear reason."""
        raise NotImplementedError

    def _after(self) -> list[Sample]:
        """Samples read after a successful probe, outside its timing (a server's own
        statistics); must not raise: a failure here leaves the probe up."""
        return []

    def close(self) -> None:
        """Release what the probe keeps between cycles (nothing, for most probes)."""


class HttpProbe(_Probe):
    """GET a URL; up when the status is ``expect_status``. Redirects are not followed.

    Emits ``probe_http_status_code`` whenever a response arrived, the wrong one too. The
    body is never read: the status line is the answer, and a large body would cost time
    and memory every cycle. ``transport`` is for tests and proxies (httpx transports).
    """

    kind = "http"

    def __init__(
        self,
        target: HttpTarget,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(target.name, timeout)
        self.target = target
        self._transport = transport
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _get_client(self) -> httpx.Client:
        # Built once and reused: creating the TLS context costs more CPU than a probe.
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout),
                    # A new connection per probe: we measure what a new client sees,
                    # and no idle socket outlives the cycle.
                    limits=httpx.Limits(max_keepalive_connections=0),
                    follow_redirects=False,
                    transport=self._transport,
                    headers={"User-Agent": "autofix-probe"},
                )
            return self._client

    def _probe(self, labels: dict[str, str]) -> list[Sample]:
        try:
            with self._get_client().stream("GET", self.target.url) as response:
                status = response.status_code
        except httpx.TimeoutException as exc:
            raise _ProbeError(f"timed out after {self.timeout:g}s ({type(exc).__name__})") from exc
        code = Sample("probe_http_status_code", float(status), labels)
        if status != self.target.expect_status:
            raise _ProbeError(f"status {status}, expected {self.target.expect_status}", [code])
        return [code]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class TcpProbe(_Probe):
    """Open a TCP connection and close it again; the latency is the connect time.

    The timeout bounds the connect; name resolution goes through the system resolver,
    which has its own timeouts (the cycle runner's deadline is the backstop).
    """

    kind = "tcp"

    def __init__(self, target: TcpTarget, timeout: float) -> None:
        super().__init__(target.name, timeout)
        self.target = target

    def _probe(self, labels: dict[str, str]) -> list[Sample]:
        try:
            with socket.create_connection((self.target.host, self.target.port), self.timeout):
                pass
        except TimeoutError as exc:
            raise _ProbeError(f"connect timed out after {self.timeout:g}s") from exc
        return []


class PostgresProbe(_Probe):
    """Connect, run the canary query inside a transaction that is rolled back, close.

    The connect is bounded by libpq's ``connect_timeout`` (at least 2 s, libpq's own
    floor) and the query by ``SET LOCAL statement_timeout``; SET LOCAL rather than a
    startup option so that it works through PgBouncer. The rollback means a canary can
    never change data, whatever it says.
    """

    kind = "postgres"

    def __init__(self, target: PostgresTarget, timeout: float) -> None:
        super().__init__(target.name, timeout)
        self.target = target

    def _probe(self, labels: dict[str, str]) -> list[Sample]:
        # The probe's timeout wins over one in the DSN: the cycle must not hang.
        overrides: dict[str, str | int] = {
            "connect_timeout": max(LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(self.timeout))
        }
        if "application_name" not in conninfo_to_dict(self.target.dsn):
            overrides["application_name"] = "autofix-probe"
        start = time.perf_counter()
        conn = psycopg.connect(make_conninfo(self.target.dsn, **overrides))
        connected = time.perf_counter()
        try:
            with conn.cursor() as cur:
                timeout_ms = sql.Literal(max(1, math.ceil(self.timeout * 1000)))
                cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(timeout_ms))
                query_start = time.perf_counter()
                cur.execute(self.target.canary.encode())  # trusted: from the pipelines file
                if cur.description is not None:
                    cur.fetchone()
                done = time.perf_counter()
            conn.rollback()
        except BaseException:
            conn.close()
            raise
        self._keep(conn)
        return [
            Sample("probe_connect_duration_seconds", connected - start, labels, "seconds"),
            Sample("probe_query_duration_seconds", done - query_start, labels, "seconds"),
        ]

    def _keep(self, conn: psycopg.Connection[Any]) -> None:
        """The probe is done with its connection (a subclass may read more on it first)."""
        conn.close()


class DuckDBProbe(_Probe):
    """Open a DuckDB file read-only and run the canary query.

    A missing file, or a file another process holds open for writing (DuckDB allows one
    writer and no readers beside it across processes), is a down probe with the reason.
    The canary is interrupted when it runs past the timeout.
    """

    kind = "duckdb"

    def __init__(self, target: DuckDBTarget, timeout: float) -> None:
        super().__init__(target.name, timeout)
        self.target = target

    def _probe(self, labels: dict[str, str]) -> list[Sample]:
        path = self.target.path
        if not path.is_file():
            raise _ProbeError(f"{path}: no such file")
        start = time.perf_counter()
        try:
            conn = duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:
            raise _ProbeError(f"cannot open {path} read-only: {_reason(exc)}") from exc
        connected = time.perf_counter()
        timer = threading.Timer(self.timeout, conn.interrupt)
        timer.daemon = True
        try:
            timer.start()
            query_start = time.perf_counter()
            try:
                conn.execute(self.target.canary).fetchone()
            except duckdb.InterruptException as exc:
                raise _ProbeError(f"canary query ran past {self.timeout:g}s") from exc
            done = time.perf_counter()
        finally:
            timer.cancel()
            timer.join()
            conn.close()
        return [
            Sample("probe_connect_duration_seconds", connected - start, labels, "seconds"),
            Sample("probe_query_duration_seconds", done - query_start, labels, "seconds"),
        ]
