"""The API front: a process of its own that answers HTTP for ``autofix serve``.

The process that owns the store also runs the jobs, and their Python work (the policy
over 10,000 series, building frames, writing runs) holds the interpreter's lock for
tens of milliseconds at a time. A request served on that interpreter waits behind it.
So the API port is served by this process instead, whose interpreter does nothing else:

- ``GET /api/v1/forecasts`` is answered here, from a ``Snapshot`` of the forecasts
  table that the owner sends after each prediction run (asked for every second; the
  owner answers 304 while nothing changed). The answer is byte for byte the owner's.
- ``GET /metrics`` is answered here from the owner's rendered page, followed by this
  process' own request counters. A page ``METRICS_TTL`` seconds old is fetched again in
  the background (served meanwhile); a scrape after a pause, finding it twice that old
  with no fetch under way, waits for a fresh one, as the app's own route does. No scrape
  gets a page older than ``STALE_AFTER``.
- Everything else, and any request this process would answer differently from the app
  (a missing or unknown token, a query parameter it does not check itself, no table
  yet or one older than ``STALE_AFTER``), is passed to the owner's app unchanged over a
  Unix socket (mode 0600 in a private directory) and its answer streamed back.

The owner starts the front (``autofix.api.server.ApiServer``) with the bound listening
socket, and sends its settings on stdin (tokens never appear in the process list); the
front exits when stdin closes, so it never outlives the owner. ``Feed`` is the owner's
side: the two internal routes (``/_front/forecasts`` and ``/_front/metrics``), reachable
on the Unix socket only and only with the per-start secret.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import socket
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from autofix.api.bodylimit import BodyLimit
from autofix.api.snapshot import HORIZON_NAMES, Snapshot, page_json
from autofix.api.tokens import Principal, Tokens

log = logging.getLogger("autofix.api.front")  # also when run as __main__

#: Seconds between two questions to the owner about a new forecasts table.
RECHECK = 1.0
#: A table (or /metrics page) not confirmed for this long is not served from here.
STALE_AFTER = 30.0
#: Seconds a /metrics page is served before it is fetched again (in the background).
METRICS_TTL = 5.0
#: Paths of the owner's internal routes (``Feed``), never passed on from a client.
INTERNAL = "/_front/"
SECRET_HEADER = "x-autofix-front"  # noqa: S105 (a header name; the secret is per start)
#: Seconds this process' own counters on /metrics may lag (the page is composed anew).
OWN_TTL = 1.0
CONTENT_TYPE_METRICS = b"text/plain; version=0.0.4; charset=utf-8"
#: Headers that belong to one connection, not to the request or answer passed on.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"date",
        b"server",
        SECRET_HEADER.encode(),
    }
)
_FORECAST_PARAMS = frozenset({"host", "metric", "within", "min_probability", "limit", "offset"})
_PROBABILITY = re.compile(r"[01](\.[0-9]{1,17})?|\.[0-9]{1,17}")
_LIMIT = re.compile(r"[1-9][0-9]{0,3}")
_OFFSET = re.compile(r"0|[1-9][0-9]{0,7}")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


def forecast_query(query_string: bytes) -> dict[str, Any] | None:
    """The filters of a forecasts request when they are plainly valid, else None.

    None sends the request to the owner, whose validation answers it (a 422, or a value
    this parser does not take upon itself, such as ``limit=007``).
    """
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return None
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names) or not set(names) <= _FORECAST_PARAMS:
        return None
    given = dict(pairs)
    out: dict[str, Any] = {
        "host": None,
        "metric": None,
        "within": "24h",
        "min_probability": 0.0,
        "limit": 100,
        "offset": 0,
    }
    for name in ("host", "metric"):
        if name in given:
            value = given[name]
            if not 1 <= len(value) <= 256 or "\x00" in value:
                return None
            out[name] = value
    if "within" in given:
        if given["within"] not in HORIZON_NAMES:
            return None
        out["within"] = given["within"]
    if "min_probability" in given:
        if not _PROBABILITY.fullmatch(given["min_probability"]):
            return None
        out["min_probability"] = float(given["min_probability"])
        if out["min_probability"] > 1:
            return None
    if "limit" in given:
        if not _LIMIT.fullmatch(given["limit"]) or int(given["limit"]) > 1000:
            return None
        out["limit"] = int(given["limit"])
    if "offset" in given:
        if not _OFFSET.fullmatch(given["offset"]) or int(given["offset"]) > 10_000_000:
            return None
        out["offset"] = int(given["offset"])
    return out


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _answer(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Front:
    """The front's ASGI app (see the module docstring)."""

    def __init__(
        self,
        upstream: str,
        secret: str,
        tokens: Tokens,
        *,
        metrics_auth: bool = False,
        recheck: float = RECHECK,
        stale_after: float = STALE_AFTER,
        metrics_ttl: float = METRICS_TTL,
    ) -> None:
        self.upstream = upstream
        self.secret = secret
        self.tokens = tokens
        self.metrics_auth = metrics_auth
        self.recheck = recheck
        self.stale_after = stale_after
        self.metrics_ttl = metrics_ttl
        self.snapshot: Snapshot | None = None
        self._etag: str | None = None
        self._confirmed = -math.inf
        self._clock_offset = 0.0  # the owner's clock minus this one (a service clock)
        self._page: tuple[bytes, bytes, Any] | None = None  # the owner's /metrics
        self._page_at = -math.inf
        self._page_task: asyncio.Task[None] | None = None
        self._composed: dict[bool, tuple[float, float, bytes]] = {}  # gzip? -> page, at, body
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "autofix_api_front_requests",
            "Requests the API front answered itself (the rest go to the owner's app).",
            ["handler", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "autofix_api_front_request_duration_seconds",
            "Time the API front took to answer a request itself.",
            ["handler"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )

    # -- lifespan ---------------------------------------------------------------------

    async def start(self) -> None:
        transport = httpx.AsyncHTTPTransport(uds=self.upstream)
        self._client = httpx.AsyncClient(
            transport=transport,
            base_url="http://autofix",
            timeout=httpx.Timeout(None, connect=5.0),
        )
        self._tasks.append(asyncio.create_task(self._poll_forecasts()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._client is not None:
            await self._client.aclose()

    async def _poll_forecasts(self) -> None:
        assert self._client is not None
        warned = False
        while True:
            try:
                headers = {SECRET_HEADER: self.secret}
                if self._etag is not None:
                    headers["if-none-match"] = self._etag
                answer = await self._client.get(INTERNAL + "forecasts", headers=headers)
                if answer.status_code == 200:
                    self.snapshot = Snapshot.decode(answer.content)
                    self._etag = answer.headers.get("etag")
                if answer.status_code in (200, 304):
                    self._confirmed = time.monotonic()
                    owner_now = float(answer.headers.get("x-autofix-clock", time.time()))
                    self._clock_offset = owner_now - time.time()
                    warned = False
            except (httpx.HTTPError, ValueError, KeyError, OSError) as exc:
                if not warned:
                    log.warning("API front: the owner's forecasts table: %s", exc)
                    warned = True
            await asyncio.sleep(self.recheck)

    # -- requests ---------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.startswith(INTERNAL):
            await _answer(send, 404, b'{"detail":"Not Found"}', b"application/json", [])
            return
        if scope["method"] == "GET":
            started = time.perf_counter()
            if path == "/api/v1/forecasts" and await self._forecasts(scope, send):
                self._count("/api/v1/forecasts", started)
                return
            if path == "/metrics" and await self._metrics(scope, send):
                self._count("/metrics", started)
                return
        await self._proxy(scope, receive, send)

    def _count(self, handler: str, started: float) -> None:
        self._requests.labels(handler, "200").inc()
        self._latency.labels(handler).observe(time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _principal(self, scope: dict[str, Any]) -> Principal | None:
        value = _header(scope, b"authorization")
        if value is None:
            return None
        scheme, _, credentials = value.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            return None
        return self.tokens.check(credentials)

    async def _forecasts(self, scope: dict[str, Any], send: Send) -> bool:
        snapshot = self.snapshot
        if snapshot is None or time.monotonic() - self._confirmed > self.stale_after:
            return False
        query = forecast_query(scope["query_string"])
        if query is None or self._principal(scope) is None:
            return False
        within, limit, offset = query["within"], query["limit"], query["offset"]
        picked = snapshot.select(within, query["host"], query["metric"], query["min_probability"])
        now = time.time() + self._clock_offset
        items = [snapshot.row_json(int(i), within, now) for i in picked[offset : offset + limit]]
        body = page_json(len(picked), limit, offset, items)
        await _answer(send, 200, body, b"application/json", [])
        return True

    async def _metrics(self, scope: dict[str, Any], send: Send) -> bool:
        if scope["query_string"] or (self.metrics_auth and self._principal(scope) is None):
            return False
        age = time.monotonic() - self._page_at
        paused = self._page_task is None or self._page_task.done()
        if age >= self.metrics_ttl and paused:
            self._page_task = asyncio.create_task(self._fetch_page())
        # A scrape after a pause (Prometheus' usual 15 s) waits for a fresh page, as do
        # any others that come meanwhile. Under a flood a fetch is always under way and
        # the last page is served, unless the service has not rendered one for
        # STALE_AFTER: then the scrape waits (a hung service fails the scrape).
        if (age >= 2 * self.metrics_ttl and paused) or age >= self.stale_after:
            assert self._page_task is not None
            await asyncio.shield(self._page_task)
            if self._page is None or time.monotonic() - self._page_at >= self.stale_after:
                return False  # the owner did not render: its app answers (or fails) itself
        packed = b"gzip" in (_header(scope, b"accept-encoding") or b"")
        vary = [(b"vary", b"Accept-Encoding")]
        extra = [(b"content-encoding", b"gzip"), *vary] if packed else vary
        await _answer(send, 200, self._compose(packed), CONTENT_TYPE_METRICS, extra)
        return True

    def _compose(self, packed: bool) -> bytes:
        """The owner's page and this process' counters (made again at most once a second)."""
        assert self._page is not None
        now = time.monotonic()
        made = self._composed.get(packed)
        if made is not None and made[0] == self._page_at and now - made[1] < OWN_TTL:
            return made[2]
        text, gzipped, compressor = self._page
        own = generate_latest(self.registry)
        if packed:
            # The owner's page was compressed once; a copy of the compressor's state
            # takes this process' own lines on and ends the one gzip member.
            rest = compressor.copy()
            body: bytes = gzipped + rest.compress(own) + rest.flush()
        else:
            body = text + own
        self._composed[packed] = (self._page_at, now, body)
        return body

    async def _fetch_page(self) -> None:
        assert self._client is not None
        try:
            answer = await self._client.get(
                INTERNAL + "metrics", headers={SECRET_HEADER: self.secret}
            )
        except httpx.HTTPError as exc:
            log.warning("API front: the owner's /metrics page: %s", exc)
            return
        if answer.status_code == 200:
            text = answer.content
            self._page = await asyncio.to_thread(_gzip_start, text)  # zlib lets go of the GIL
            self._page_at = time.monotonic()

    async def _proxy(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Pass the request to the owner's app and stream its answer back."""
        assert self._client is not None
        body = b""
        more = True
        while more:  # BodyLimit has buffered it: one message
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        request = self._client.build_request(
            scope["method"], target.decode("latin-1"), headers=headers, content=body
        )
        try:
            answer = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("API front: the owner's app did not answer: %s", exc)
            await _answer(
                send,
                503,
                b'{"detail":"the autofix service is not answering; try again in a moment"}',
                b"application/json",
                [(b"retry-after", b"5")],
            )
            return
        try:
            kept = [(k, v) for k, v in answer.headers.raw if k.lower() not in _HOP]
            await send(
                {"type": "http.response.start", "status": answer.status_code, "headers": kept}
            )
            async for chunk in answer.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await answer.aclose()


def _gzip_start(text: bytes) -> tuple[bytes, bytes, Any]:
    """``text``, its gzip so far (flushed to a byte boundary), and the compressor."""
    compressor = zlib.compressobj(5, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return text, compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH), compressor


class Feed:
    """The owner's side: its app on the Unix socket, plus the front's two internal routes.

    ``GET /_front/forecasts`` answers the current table's snapshot (ETag: the table; 304
    when the front has it) and ``X-Autofix-Clock`` (the service clock, Unix seconds);
    ``GET /_front/metrics`` the rendered /metrics page. Both need ``X-Autofix-Front``
    to carry the per-start secret; anything else goes to the app.
    """

    def __init__(self, app: Any, secret: str) -> None:
        self.app = app
        self.secret = secret.encode()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(INTERNAL):
            await self.app(scope, receive, send)
            return
        given = _header(scope, SECRET_HEADER.encode()) or b""
        if not hmac.compare_digest(given, self.secret):
            await _answer(send, 404, b'{"detail":"Not Found"}', b"application/json", [])
            return
        ctx = self.app.state.autofix
        if scope["path"] == INTERNAL + "metrics" and ctx.metrics_page is not None:
            text, _ = await anyio.to_thread.run_sync(ctx.metrics_page)
            await _answer(send, 200, text, CONTENT_TYPE_METRICS, [])
            return
        if scope["path"] != INTERNAL + "forecasts":
            await _answer(send, 404, b'{"detail":"Not Found"}', b"application/json", [])
            return
        table = await anyio.to_thread.run_sync(ctx.predictions.get)
        now = ctx.clock()
        clock = str((now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp())
        etag = f'"{id(table)}-{ctx.predictions.builds}"'.encode()
        extra = [(b"etag", etag), (b"x-autofix-clock", clock.encode())]
        if _header(scope, b"if-none-match") == etag:
            await send({"type": "http.response.start", "status": 304, "headers": extra})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        blob = await anyio.to_thread.run_sync(lambda: table.snapshot)
        await _answer(send, 200, blob, b"application/octet-stream", extra)


# -- the front process ---------------------------------------------------------------------


def main() -> None:
    """``python -m autofix.api.front``: settings as one JSON line on stdin, then serve.

    Prints ``ready`` on stdout once the server listens; exits when stdin closes.
    """
    import os

    import uvicorn

    from autofix import logs

    config = json.loads(sys.stdin.readline())
    logs.configure(config.get("log_level", "INFO"), config.get("log_format", "json"))
    front = Front(
        config["upstream"],
        config["secret"],
        Tokens(config["tokens"]),
        metrics_auth=bool(config.get("metrics_auth")),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            BodyLimit(front, max_body=int(config["max_body"])),  # type: ignore[arg-type]
            log_config=None,
            lifespan="on",
            server_header=False,
            access_log=False,
            timeout_graceful_shutdown=int(config.get("graceful", 10)),
        )
    )
    sock = socket.socket(fileno=int(config["fd"]))

    def watch_owner() -> None:
        sys.stdin.read()  # returns when the owner closes the pipe or dies
        server.should_exit = True

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        if server.started:
            os.write(sys.stdout.fileno(), b"ready\n")

    threading.Thread(target=watch_owner, name="autofix-front-owner", daemon=True).start()
    threading.Thread(target=announce, name="autofix-front-ready", daemon=True).start()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
