"""Import metric history from a Prometheus server through ``/api/v1/query_range``.

Prometheus refuses a range query of more than 11,000 points per series, so a long range
is pulled in chunks of at most ``CHUNK_POINTS`` evaluation steps that meet edge to edge
on one grid: no timestamp is asked for twice. The grid starts at a multiple of ``step``
since the epoch, so two imports of overlapping ranges land on the same timestamps and
the store's (series, ts) dedupe makes a re-import a no-op.

Each series becomes rows of the store's write frame (``collect.base.FRAME_COLUMNS``):
the metric from ``__name__`` (or the ``metric`` override, required for expressions such
as ``rate(...)`` that drop the name), the host from ``instance`` without its port (or
the ``host`` override, which keeps ``instance`` as a label), every other label kept.
NaN and ±Inf points are dropped and counted. The URL and the query are untrusted input:
the URL must be http(s) and the query only ever travels as a form field.

>>> from autofix.store import MetricStore
>>> summary = import_prometheus(  # doctest: +SKIP
...     MetricStore(":memory:"), "http://127.0.0.1:9090", ["up"],
...     since=datetime.now(UTC) - timedelta(hours=1), until=datetime.now(UTC),
...     step=timedelta(seconds=60))
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import pandas as pd

from autofix.collect.base import FRAME_COLUMNS, format_labels
from autofix.config import parse_duration
from autofix.errors import CollectError, InputError
from autofix.store import MetricStore, WriteResult

log = logging.getLogger(__name__)

#: Evaluation steps per request; Prometheus refuses more than 11,000 points per series.
CHUNK_POINTS = 10_000
#: Seconds one request may take when the caller does not say.
DEFAULT_TIMEOUT = 30.0

#: ``(chunks done, chunks in total)`` over a whole pull.
Progress = Callable[[int, int], None]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_UNIT_SUFFIXES = (("_bytes", "bytes"), ("_seconds", "seconds"), ("_ratio", "ratio"))
_QUOTE_LIMIT = 120


@dataclass(frozen=True)
class RangeResult:
    """One query's pull: the rows in write format and what was left out of them."""

    query: str
    frame: pd.DataFrame
    series: int
    dropped_non_finite: int
    chunks: int


@dataclass(frozen=True)
class QuerySummary:
    """What one query of an import brought in."""

    query: str
    series: int
    points: int
    dropped_non_finite: int
    chunks: int

    def as_dict(self) -> dict[str, object]:
        return {
            "query": self.query,
            "series": self.series,
            "points": self.points,
            "dropped_non_finite": self.dropped_non_finite,
            "chunks": self.chunks,
        }


@dataclass(frozen=True)
class PrometheusImport:
    """What ``import_prometheus`` did, per query and in total."""

    url: str
    since: datetime
    until: datetime
    step: timedelta
    queries: list[QuerySummary] = field(default_factory=list)
    result: WriteResult = field(default_factory=WriteResult)

    @property
    def points(self) -> int:
        return sum(q.points for q in self.queries)

    @property
    def series(self) -> int:
        return sum(q.series for q in self.queries)

    @property
    def dropped_non_finite(self) -> int:
        return sum(q.dropped_non_finite for q in self.queries)

    def as_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "step_seconds": self.step.total_seconds(),
            "queries": [q.as_dict() for q in self.queries],
            "series": self.series,
            "points": self.points,
            "dropped_non_finite": self.dropped_non_finite,
            **self.result.as_dict(),
        }


# -- user input ---------------------------------------------------------------------------


def parse_time(value: str, now: datetime) -> datetime:
    """Read ``now``, a duration ago (``6h``, ``90m``) or an ISO 8601 time (no zone: UTC).

    >>> parse_time("2h", datetime(2026, 1, 1, 12, tzinfo=UTC)).hour
    10
    """
    text = value.strip()
    if text.lower() == "now":
        return now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"{value!r} is neither a duration ago nor a time (use e.g. 6h, now or "
            "2026-01-01T00:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def check_url(url: str) -> str:
    """The base URL without a trailing slash; InputError unless it is http(s)://host."""
    try:
        parts = urlsplit(url.strip())
        hostname = parts.hostname
    except ValueError:
        hostname = None
    if hostname is None or parts.scheme not in {"http", "https"}:
        raise InputError(f"Prometheus URL {redact(url)!r} must be http(s)://host[:port][/path]")
    if parts.query or parts.fragment:
        raise InputError(f"Prometheus URL {redact(url)!r} must not carry a query or fragment")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and summaries."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<unparsable URL>"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _quote(query: str) -> str:
    flat = " ".join(query.split())
    return repr(flat if len(flat) <= _QUOTE_LIMIT else flat[: _QUOTE_LIMIT - 1] + "…")


def _epoch_ms(moment: datetime) -> int:
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return round(aware.timestamp() * 1000)


def _step_ms(step: timedelta) -> int:
    ms = round(step.total_seconds() * 1000)
    if ms <= 0:
        raise InputError(f"step must be at least 1ms, not {step.total_seconds():g}s")
    return ms


def plan_chunks(
    since: datetime, until: datetime, step: timedelta, chunk_points: int = CHUNK_POINTS
) -> list[tuple[int, int]]:
    """``(start_ms, end_ms)`` of each request, on one step grid aligned to the epoch.

    Each chunk holds at most ``chunk_points`` evaluation times and the next one starts
    one step after it ends, so no timestamp is requested twice.

    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> plan_chunks(t0, t0 + timedelta(seconds=25), timedelta(seconds=1), chunk_points=10)
    [(1767225600000, 1767225609000), (1767225610000, 1767225619000), (1767225620000, 1767225625000)]
    """
    step_ms = _step_ms(step)
    start_ms, end_ms = _epoch_ms(since), _epoch_ms(until)
    if start_ms >= end_ms:
        raise InputError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    first = -(-start_ms // step_ms) * step_ms  # ceil: no point before `since`
    span = (chunk_points - 1) * step_ms
    chunks = []
    begin = first
    while begin <= end_ms:
        chunks.append((begin, min(end_ms, begin + span)))
        begin += span + step_ms
    return chunks


# -- the HTTP API -------------------------------------------------------------------------


def _fetch(
    client: httpx.Client, base: str, query: str, start_ms: int, end_ms: int, step_ms: int
) -> list[Any]:
    """One ``query_range`` request; returns ``data.result`` or raises one clear line."""
    endpoint = base + "/api/v1/query_range"
    shown = redact(base)
    form = {
        "query": query,
        "start": f"{start_ms / 1000:.3f}",
        "end": f"{end_ms / 1000:.3f}",
        "step": f"{step_ms / 1000:.3f}",
    }
    try:
        # POST with a form body: long expressions never hit URL length limits.
        response = client.post(endpoint, data=form)
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
        raise CollectError(
            f"Prometheus at {shown} did not answer query {_quote(query)} within "
            f"{client.timeout.read:g}s"
        ) from None
    except httpx.HTTPError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise CollectError(f"cannot reach Prometheus at {shown}: {reason}") from None
    body = _json_body(response)
    if isinstance(body, dict) and body.get("status") == "error":
        kind, message = str(body.get("errorType", "error")), str(body.get("error", ""))
        message = " ".join(message.split())
        if kind == "bad_data":
            raise InputError(f"Prometheus rejected query {_quote(query)}: {message}")
        raise CollectError(f"Prometheus at {shown} failed query {_quote(query)}: {kind}: {message}")
    if response.is_redirect:
        raise CollectError(
            f"Prometheus at {shown} answered HTTP {response.status_code} (a redirect to "
            f"{redact(response.headers.get('location', '?'))}): give the final base URL"
        )
    if response.status_code >= 400:
        raise CollectError(
            f"Prometheus at {shown} answered HTTP {response.status_code} "
            f"{response.reason_phrase} to /api/v1/query_range"
            + ("" if body is not None else " (not a Prometheus API response)")
        )
    if body is None:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise CollectError(
            f"{shown} did not answer like a Prometheus API ({kind} instead of JSON): "
            "give the server's base URL, e.g. http://prometheus:9090"
        )
    data = body.get("data") if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or body.get("status") != "success"
        or not isinstance(data, dict)
        or not isinstance(data.get("result"), list)
    ):
        raise CollectError(f"{shown} answered JSON that is not a Prometheus query_range result")
    if data.get("resultType") != "matrix":
        raise CollectError(
            f"Prometheus at {shown} returned a {data.get('resultType')!r} for a range query"
        )
    for warning in body.get("warnings") or ():
        log.warning("Prometheus warns about query %s: %s", _quote(query), warning)
    return list(data["result"])


def _json_body(response: httpx.Response) -> Any:
    """The decoded JSON body, or None when it is not JSON (an HTML page, a proxy error)."""
    try:
        return json.loads(response.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


# -- series to rows -----------------------------------------------------------------------


def host_of(instance: str) -> str:
    """The host part of an ``instance`` label: ``web-1:9100`` → ``web-1``, ``[::1]:9090`` → ``::1``.

    >>> host_of("web-1:9100"), host_of("[::1]:9090"), host_of("db-1")
    ('web-1', '::1', 'db-1')
    """
    if instance.startswith("["):
        end = instance.find("]")
        return instance[1:end] if end > 0 else instance
    name, sep, port = instance.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name
    return instance


def _unit(metric: str) -> str:
    for suffix, unit in _UNIT_SUFFIXES:
        if metric.endswith(suffix):
            return unit
    return ""


class _Shaper:
    """Turns ``query_range`` results into write frames, one query at a time.

    It remembers which Prometheus series each (host, metric, labels) came from, so two
    different series that would merge into one (they differ only in the port of
    ``instance``, or only in the name replaced by ``metric``) stop the import instead of
    silently overwriting each other.
    """

    def __init__(self, source: str, query: str, metric: str | None, host: str | None) -> None:
        self.source = source
        self.query = query
        self.metric = metric
        self.host = host
        self.origin: dict[tuple[str, str, str], str] = {}

    def frame(self, result: Sequence[Any]) -> tuple[pd.DataFrame, int]:
        """The rows of one chunk, and how many NaN/Inf points were dropped from it."""
        parts: list[pd.DataFrame] = []
        dropped = 0
        for series in result:
            if isinstance(series, dict) and "histograms" in series and "values" not in series:
                raise InputError(
                    f"query {_quote(self.query)} returns native histograms: import a float "
                    "expression instead, e.g. histogram_quantile(0.99, ...)"
                )
            try:
                labels = {str(k): str(v) for k, v in dict(series["metric"]).items()}
                points = series["values"]
                stamps = np.fromiter((p[0] for p in points), dtype=np.float64, count=len(points))
                values = np.fromiter(
                    (float(p[1]) for p in points), dtype=np.float64, count=len(points)
                )
            except (KeyError, TypeError, ValueError, IndexError):
                raise CollectError(
                    f"Prometheus at {self.source} answered query {_quote(self.query)} with a "
                    "series that is not [timestamp, value] pairs"
                ) from None
            host, metric, rest = self._identity(labels)
            finite = np.isfinite(values)
            dropped += int((~finite).sum())
            if not finite.any():
                continue
            ms = np.rint(stamps[finite] * 1000).astype("int64")
            rows = {
                "ts": pd.to_datetime(ms, unit="ms"),
                "host": host,
                "metric": metric,
                "labels": rest,
                "value": values[finite],
                "unit": _unit(metric),
                "capacity": np.full(len(ms), np.nan),
            }
            parts.append(pd.DataFrame({name: rows[name] for name in FRAME_COLUMNS}))
        frame = pd.concat(parts, ignore_index=True) if parts else _empty_frame()
        return frame, dropped

    def _identity(self, labels: dict[str, str]) -> tuple[str, str, str]:
        original = format_labels(labels)
        name = labels.pop("__name__", None)
        metric = self.metric or name
        if not metric:
            raise InputError(
                f"query {_quote(self.query)} returns series without a metric name "
                f"(e.g. {original}): name them with --metric NAME"
            )
        if self.host:
            host = self.host
        else:
            instance = labels.pop("instance", None)
            if not instance:
                raise InputError(
                    f"query {_quote(self.query)} returns series without an instance label "
                    f"(e.g. {original}): say which host they belong to with --host NAME"
                )
            host = host_of(instance)
        rest = format_labels(labels)
        key = (host, metric, rest)
        first = self.origin.setdefault(key, original)
        if first != original:
            raise InputError(
                f"query {_quote(self.query)}: series {first} and {original} would both become "
                f"{metric}{rest} on host {host}; tell them apart with label_replace, or "
                "give --host (which keeps instance as a label)"
            )
        return key


def _empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype="object") for name in FRAME_COLUMNS})
    frame["ts"] = pd.Series(dtype="datetime64[ns]")
    frame["value"] = pd.Series(dtype="float64")
    frame["capacity"] = pd.Series(dtype="float64")
    return frame


def _check_overrides(metric: str | None, host: str | None) -> None:
    if metric is not None and not _METRIC_NAME.match(metric):
        raise InputError(
            f"metric name {metric!r} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )
    if host is not None and not host.strip():
        raise InputError("host must not be empty")


def _pull(
    client: httpx.Client,
    base: str,
    query: str,
    chunks: Sequence[tuple[int, int]],
    step_ms: int,
    shaper: _Shaper,
    tick: Callable[[], None],
) -> Iterator[tuple[pd.DataFrame, int]]:
    for start_ms, end_ms in chunks:
        result = _fetch(client, base, query, start_ms, end_ms, step_ms)
        yield shaper.frame(result)
        tick()


def query_range(
    url: str,
    query: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    *,
    timeout: float,
    metric: str | None = None,
    host: str | None = None,
    transport: httpx.BaseTransport | None = None,
    progress: Progress | None = None,
) -> RangeResult:
    """Pull ``query`` over ``[start, end]`` every ``step``, in as many chunks as it takes.

    Returns the rows in the store's write format (no duplicate timestamps), the number
    of series and of NaN/Inf points dropped. Raises InputError for what the caller can
    fix (URL, names, a query Prometheus rejects) and CollectError when the server is
    unreachable or does not answer like Prometheus.
    """
    base = check_url(url)
    _check_overrides(metric, host)
    if not query.strip():
        raise InputError("the query is empty")
    chunks = plan_chunks(start, end, step)
    step_ms = _step_ms(step)
    shaper = _Shaper(redact(base), query, metric, host)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(chunks))

    frames: list[pd.DataFrame] = []
    dropped = 0
    with httpx.Client(transport=transport, timeout=timeout) as client:
        for frame, lost in _pull(client, base, query, chunks, step_ms, shaper, tick):
            frames.append(frame)
            dropped += lost
    frame = pd.concat(frames, ignore_index=True) if frames else _empty_frame()
    # The chunks never overlap by construction; this guards a server that rounds edges.
    frame = frame.drop_duplicates(["host", "metric", "labels", "ts"], ignore_index=True)
    return RangeResult(query, frame, len(shaper.origin), dropped, len(chunks))


def import_prometheus(
    store: MetricStore,
    url: str,
    queries: Sequence[str],
    since: datetime,
    until: datetime,
    step: timedelta,
    *,
    metric: str | None = None,
    host: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    transport: httpx.BaseTransport | None = None,
    progress: Progress | None = None,
) -> PrometheusImport:
    """Pull every query over ``[since, until]`` and write it to ``store`` chunk by chunk.

    Each chunk is written as it arrives, so memory stays bounded by one chunk. When a
    query fails midway, what was written stays; running the same import again is
    idempotent (the store keeps one value per series and timestamp).
    """
    base = check_url(url)
    _check_overrides(metric, host)
    if not queries:
        raise InputError("give at least one query")
    if any(not q.strip() for q in queries):
        raise InputError("a query is empty")
    if metric is not None and len(queries) > 1:
        raise InputError(
            "--metric names the series of one query: give a single --query with it "
            "(run one import per expression)"
        )
    chunks = plan_chunks(since, until, step)
    step_ms = _step_ms(step)
    total = len(chunks) * len(queries)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    summaries: list[QuerySummary] = []
    written = WriteResult()
    if progress:
        progress(0, total)
    with httpx.Client(transport=transport, timeout=timeout) as client:
        for query in queries:
            shaper = _Shaper(redact(base), query, metric, host)
            points = dropped = 0
            for frame, lost in _pull(client, base, query, chunks, step_ms, shaper, tick):
                points += len(frame)
                dropped += lost
                if len(frame):
                    written = written + store.write(frame)
            summaries.append(QuerySummary(query, len(shaper.origin), points, dropped, len(chunks)))
            log.debug(
                "imported %s from %s: %d series, %d points, %d NaN/Inf dropped",
                _quote(query),
                redact(base),
                len(shaper.origin),
                points,
                dropped,
            )
    return PrometheusImport(redact(base), _aware(since), _aware(until), step, summaries, written)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
