"""The API front process (``autofix.api.front``): what it answers itself is byte for byte
what the app answers, everything else reaches the app unchanged, and it lives and dies
with the process that owns the store.

A real world (``world.py``) served twice at once: by uvicorn on a thread of this process
(the app alone) and by ``ApiServer(front=True)`` (a front process on its own port, the
app behind it on a Unix socket), each request sent to both.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from autofix.api.app import create_app
from autofix.api.front import INTERNAL, SECRET_HEADER, Front, _gzip_start, forecast_query
from autofix.api.server import ApiServer
from autofix.api.snapshot import HORIZON_NAMES, Snapshot, encode_rows
from autofix.api.tokens import Tokens
from tests.api.world import OPERATOR, VIEWER, World, auth, make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with make_world(tmp_path_factory.mktemp("front")) as world:
        yield world


@pytest.fixture(scope="module")
def servers(world: World) -> Iterator[tuple[ApiServer, ApiServer]]:
    app = create_app(world.service.settings, world.store, service=world.service)
    alone = ApiServer(app, "127.0.0.1", 0)
    front = ApiServer(app, "127.0.0.1", 0, front=True)
    alone.start()
    front.start()
    try:
        _wait_for_table(front)
        yield alone, front
    finally:
        front.stop()
        alone.stop()


def _wait_for_table(server: ApiServer) -> None:
    """Until the front answers forecasts itself (its first table has come)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page = httpx.get(server.url + "/metrics").text
        if 'autofix_api_front_requests_total{handler="/api/v1/forecasts"' in page:
            return
        httpx.get(server.url + "/api/v1/forecasts", headers=auth(VIEWER))
        time.sleep(0.2)
    raise AssertionError("the front never answered /api/v1/forecasts itself")


def _both(
    servers: tuple[ApiServer, ApiServer], method: str, path: str, **kwargs: object
) -> tuple[httpx.Response, httpx.Response]:
    alone, front = servers
    return (
        httpx.request(method, alone.url + path, timeout=30, **kwargs),  # type: ignore[arg-type]
        httpx.request(method, front.url + path, timeout=30, **kwargs),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?within=4h",
        "?within=4d&limit=1&offset=1",
        "?host=web-1&metric=node_filesystem_avail_bytes",
        "?min_probability=0.95",
        "?min_probability=.5&within=1h",
        "?host=nowhere",
        "?offset=5000",
        # Not taken on by the front: the app answers (the same) through it.
        "?limit=007",
        "?limit=0",
        "?within=2h",
        "?host=",
        "?metric=a&metric=b",
        "?stat=failed",
        "?min_probability=1e-1",
        "?min_probability=1.5",
        "?offset=-1",
    ],
)
def test_forecasts_through_the_front_are_the_apps_to_the_byte(
    servers: tuple[ApiServer, ApiServer], query: str
) -> None:
    ours, theirs = _both(servers, "GET", "/api/v1/forecasts" + query, headers=auth(VIEWER))
    assert theirs.status_code == ours.status_code
    assert theirs.content == ours.content
    assert theirs.headers["content-type"] == ours.headers["content-type"]


@pytest.mark.parametrize(
    "headers",
    [{}, auth("not-a-token"), {"Authorization": "Basic b3BzOm9wcw=="}, auth(OPERATOR)],
    ids=["no token", "unknown token", "not bearer", "operator"],
)
def test_tokens_are_judged_as_by_the_app(
    servers: tuple[ApiServer, ApiServer], headers: dict[str, str]
) -> None:
    ours, theirs = _both(servers, "GET", "/api/v1/forecasts", headers=headers)
    assert (theirs.status_code, theirs.content) == (ours.status_code, ours.content)
    assert theirs.headers.get("www-authenticate") == ours.headers.get("www-authenticate")


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/api/v1/fixes?limit=2",
        "/api/v1/whoami",
        "/api/v1/decisions",
        "/docs",
        "/nowhere",
    ],
)
def test_other_reads_pass_through_unchanged(
    servers: tuple[ApiServer, ApiServer], path: str
) -> None:
    ours, theirs = _both(servers, "GET", path, headers=auth(VIEWER))
    assert (theirs.status_code, theirs.content) == (ours.status_code, ours.content)
    assert theirs.headers["content-type"] == ours.headers["content-type"]
    assert len(theirs.headers.get_list("date")) == 1  # the front's own, not two


def test_writes_pass_through_with_their_body_and_limits(
    world: World, servers: tuple[ApiServer, ApiServer]
) -> None:
    _, front = servers
    url = front.url + "/api/v1/silences"
    silence = {
        "matchers": [{"name": "target", "value": "logs-b"}],
        "comment": "via the front",
        "for": "10m",
    }
    made = httpx.post(url, json=silence, headers=auth(OPERATOR), timeout=30)
    assert made.status_code == 201, made.text
    listed = httpx.get(url, headers=auth(VIEWER), timeout=30).json()
    assert any(s["comment"] == "via the front" for s in listed["items"])
    viewer = httpx.post(url, json=silence, headers=auth(VIEWER), timeout=30)
    assert viewer.status_code == 403
    huge = b"x" * (world.service.settings.api_max_body + 1)
    refused = httpx.post(url, content=huge, headers=auth(OPERATOR), timeout=30)
    assert refused.status_code == 413
    assert "request body larger than" in refused.json()["detail"]


def test_internal_routes_are_not_reachable_from_the_port(
    servers: tuple[ApiServer, ApiServer],
) -> None:
    _, front = servers
    for path in ("forecasts", "metrics"):
        answer = httpx.get(
            front.url + INTERNAL + path, headers={SECRET_HEADER: "guess", **auth(OPERATOR)}
        )
        assert answer.status_code == 404


def test_the_owners_socket_wants_the_secret(servers: tuple[ApiServer, ApiServer]) -> None:
    _, front = servers
    assert front._dir is not None
    sock = front._dir / "owner.sock"
    assert sock.stat().st_mode & 0o777 == 0o600
    assert front._dir.stat().st_mode & 0o777 == 0o700
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, base_url="http://owner") as client:
        assert client.get(INTERNAL + "forecasts").status_code == 404
        assert client.get(INTERNAL + "forecasts", headers={SECRET_HEADER: "x"}).status_code == 404
        assert client.get("/healthz").status_code == 200  # the app itself is there


def test_metrics_are_the_owners_page_and_the_fronts_counters(
    servers: tuple[ApiServer, ApiServer],
) -> None:
    _, front = servers
    plain = httpx.get(front.url + "/metrics", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "autofix_exhaustion_probability{" in plain.text  # the owner's collector
    assert 'autofix_api_front_requests_total{handler="/api/v1/forecasts",status="200"}' in (
        plain.text
    )
    with httpx.stream("GET", front.url + "/metrics", headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip"
    text = gzip.decompress(raw).decode()  # one valid gzip stream
    assert text.splitlines()[0] == plain.text.splitlines()[0]
    assert "autofix_api_front_request_duration_seconds_bucket" in text


def test_a_front_that_dies_is_started_again_on_the_same_port(world: World) -> None:
    app = create_app(world.service.settings, world.store, service=world.service)
    server = ApiServer(app, "127.0.0.1", 0, front=True)
    server.start()
    try:
        first = server.front_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while server.front_pid == first or server.front_starts < 2:
            assert time.monotonic() < deadline, "the front was not started again"
            time.sleep(0.1)
        answer = httpx.get(server.url + "/healthz", timeout=30)
        assert answer.status_code == 200
    finally:
        server.stop()
    assert server.front_pid is not None
    assert not Path(f"/proc/{server.front_pid}").exists() or _zombie(server.front_pid)
    assert server._dir is None  # the socket's directory is gone


def test_the_front_leaves_when_the_owner_closes_its_pipe(world: World) -> None:
    app = create_app(world.service.settings, world.store, service=world.service)
    server = ApiServer(app, "127.0.0.1", 0, front=True)
    server.start()
    proc = server._front
    assert proc is not None
    assert proc.stdin is not None
    server._stopping.set()  # no restart: this is the owner going away
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    server.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", {"within": "24h", "limit": 100, "offset": 0}),
        (b"within=4h&limit=20&offset=3", {"within": "4h", "limit": 20, "offset": 3}),
        (b"host=web%201&min_probability=0.25", {"host": "web 1", "min_probability": 0.25}),
    ],
)
def test_forecast_query_takes_plainly_valid_filters(
    query: bytes, expected: dict[str, object]
) -> None:
    parsed = forecast_query(query)
    assert parsed is not None
    assert {k: parsed[k] for k in expected} == expected


@pytest.mark.parametrize(
    "query",
    [
        b"limit=1001",
        b"limit=0",
        b"limit=01",
        b"offset=10000001",
        b"within=1d",
        b"min_probability=1.01",
        b"min_probability=nan",
        b"host=" + b"a" * 257,
        b"host=a%00b",
        b"host=",
        b"metric=a&metric=a",
        b"unknown=1",
    ],
)
def test_forecast_query_leaves_the_rest_to_the_app(query: bytes) -> None:
    assert forecast_query(query) is None


def test_dot_segments_do_not_reach_the_internal_routes(
    servers: tuple[ApiServer, ApiServer],
) -> None:
    _, front = servers
    for path in ("/api/../_front/forecasts", "/api/%2E%2E/_front/metrics", "//_front/forecasts"):
        with httpx.Client() as client:
            request = client.build_request(
                "GET", front.url + "/", headers={SECRET_HEADER: "guess", **auth(OPERATOR)}
            )
            request.url = request.url.copy_with(raw_path=path.encode())
            answer = client.send(request)
        assert answer.status_code == 404, path


def test_an_empty_table_travels_too() -> None:
    snapshot = Snapshot.decode(
        encode_rows(
            heads=[],
            tails=[],
            hosts=[],
            metrics=[],
            probability={h: np.array([]) for h in HORIZON_NAMES},
            order={h: np.array([], dtype=np.int64) for h in HORIZON_NAMES},
            etas=np.full((3, 0), np.nan),
        )
    )
    assert len(snapshot) == 0
    assert snapshot.select("24h", host="web-1", min_probability=0.5).tolist() == []


def test_metrics_page_waits_after_a_pause_not_under_a_flood() -> None:
    """The page policy with a service whose renders the test releases one by one."""

    async def scenario() -> None:
        front = Front("/nowhere", "secret", Tokens(""), metrics_ttl=1.0, stale_after=5.0)
        release = asyncio.Event()
        renders: list[int] = []

        async def fetch() -> None:
            renders.append(len(renders) + 1)
            await release.wait()
            release.clear()
            front._page = _gzip_start(b"page %d\n" % renders[-1])
            front._page_at = time.monotonic()

        front._fetch_page = fetch  # type: ignore[method-assign]

        async def scrape(timeout: float) -> bytes | None:
            sent: list[dict[str, object]] = []

            async def send(message: dict[str, object]) -> None:
                sent.append(message)

            task = asyncio.ensure_future(front._metrics({"query_string": b"", "headers": []}, send))
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                asyncio.get_running_loop().call_later(5, task.cancel)
                pending.append(task)
                return None
            assert task.result() is True
            return bytes(sent[1]["body"]).split(b"\n")[0]  # type: ignore[call-overload]

        pending: list[asyncio.Task[bool]] = []
        served, waits = 2.0, 0.3  # a scrape served answers at once; one that waits, not
        assert await scrape(waits) is None  # the first scrape waits for the first page
        release.set()
        assert await pending.pop() is True  # it finishes once rendered
        assert await scrape(served) == b"page 1"  # fresh: no render
        assert renders == [1]
        await asyncio.sleep(1.2)
        assert await scrape(served) == b"page 1"  # older than the TTL: served, render started
        assert renders == [1, 2]
        await asyncio.sleep(1.2)
        assert await scrape(served) == b"page 1"  # a flood while the render is under way
        await asyncio.sleep(3.0)
        assert await scrape(waits) is None  # older than stale_after: waits for the render
        release.set()
        assert await pending.pop() is True
        assert await scrape(served) == b"page 2"
        await asyncio.sleep(2.2)  # a pause: no render under way, twice the TTL old
        assert await scrape(waits) is None
        release.set()
        assert await pending.pop() is True
        assert await scrape(served) == b"page 3"
        assert renders == [1, 2, 3]

    asyncio.run(scenario())
