"""Import from Prometheus: a real server scraping a real node exporter, plus error paths.

One stack per module (Prometheus, node exporter, Alertmanager posting to a webhook).
Prometheus scrapes nothing for its first ~5 s (its discovery tick), so the tests that
need no scraped data come first and the ``scraped`` fixture waits only once, when the
first test that needs data asks for it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autofix.collect.base import FRAME_COLUMNS
from autofix.collect.prometheus import (
    CHUNK_POINTS,
    host_of,
    import_prometheus,
    parse_time,
    plan_chunks,
    query_range,
)
from autofix.errors import CollectError, InputError
from autofix.store import MetricStore
from tests.clirun import run_autofix
from tests.promstack import (
    PromStack,
    WebhookReceiver,
    prometheus_stack,
    stack_or_skip,
    wait_for_scrapes,
    webhook_receiver,
)
from tests.servers import ServerUnavailableError, free_port

STEP = timedelta(seconds=1)
TEXTFILE = """# HELP autofix_test_value A gauge with a NaN, an Inf and a number.
# TYPE autofix_test_value gauge
autofix_test_value{case="nan"} NaN
autofix_test_value{case="inf"} +Inf
autofix_test_value{case="ok"} 1
"""
RULES = """groups:
  - name: autofix-test
    interval: 1s
    rules:
      - alert: AutofixTestAlwaysFiring
        expr: vector(1)
        labels: {severity: test}
        annotations: {summary: "fires from the first evaluation"}
"""


@pytest.fixture(scope="module")
def hook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, hook: WebhookReceiver) -> Iterator[PromStack]:
    rules = tmp_path_factory.mktemp("rules") / "rules.yml"
    rules.write_text(RULES)
    yield from stack_or_skip(
        lambda: prometheus_stack(
            rule_files=[rules],
            webhook_url=hook.url,
            textfiles={"autofix_test.prom": TEXTFILE},
            wait_for_targets=False,
        )
    )


@pytest.fixture(scope="module")
def scraped(stack: PromStack) -> PromStack:
    """The stack once both jobs have been scraped 3 times (``rate`` needs two points)."""
    wait_for_scrapes(stack.prometheus, samples=3)
    return stack


@pytest.fixture
def store() -> Iterator[MetricStore]:
    with MetricStore(":memory:") as s:
        yield s


def _last_minute() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(minutes=1), now


def _series(store: MetricStore) -> pd.DataFrame:
    return store.series().sort_values(["metric", "labels"], ignore_index=True)


# -- no server needed ----------------------------------------------------------------------


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(
    start=st.integers(0, 2 * 10**12),
    step=st.integers(1, 10**6),
    steps=st.integers(0, 300),
    jitter=st.integers(1, 10**6),
    chunk=st.integers(2, 30),
)
def test_chunks_cover_the_grid_once(
    start: int, step: int, steps: int, jitter: int, chunk: int
) -> None:
    end = start + steps * step + jitter % step + (1 if steps == 0 else 0)
    chunks = plan_chunks(
        EPOCH + timedelta(milliseconds=start),
        EPOCH + timedelta(milliseconds=end),
        timedelta(milliseconds=step),
        chunk_points=chunk,
    )
    first = -(-start // step) * step
    assert [p for b, e in chunks for p in range(b, e + 1, step)] == list(
        range(first, end + 1, step)
    )
    for (_, stop), (after, _) in itertools.pairwise(chunks):
        assert after == stop + step  # edge to edge: no gap, no overlap
    assert all((stop - begin) // step + 1 <= chunk for begin, stop in chunks)


def test_host_and_time_parsing() -> None:
    assert host_of("web-1:9100") == "web-1"
    assert host_of("10.0.0.7:9187") == "10.0.0.7"
    assert host_of("[::1]:9090") == "::1"
    assert host_of("db-1") == "db-1"
    assert host_of("fe80::1") == "fe80::1"
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parse_time("6h", now) == datetime(2026, 3, 1, 6, tzinfo=UTC)
    assert parse_time("now", now) == now
    assert parse_time("2026-02-01T00:00:00", now) == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_time("2026-02-01T01:00:00+01:00", now) == datetime(2026, 2, 1, tzinfo=UTC)
    for bad in ("-6h", "yesterday", ""):
        with pytest.raises(InputError, match="neither a duration"):
            parse_time(bad, now)


def _answer(**reply: Any) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(**reply))


def _pull(
    transport: httpx.BaseTransport, *, metric: str | None = None, host: str | None = None
) -> pd.DataFrame:
    since, until = _last_minute()
    url = "http://prom.example:9090"
    return query_range(
        url, "up", since, until, STEP, timeout=5, metric=metric, host=host, transport=transport
    ).frame


def test_the_query_travels_only_as_a_form_field() -> None:
    seen: list[httpx.Request] = []
    query = 'sum by (job) (up{job=~"a|b&c"}) # ?x=1 /../../api/v1/admin'

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "matrix", "result": []}}
        )

    since, until = _last_minute()
    result = query_range(
        "http://prom.example:9090/prefix/",
        query,
        since,
        until,
        STEP,
        timeout=5,
        transport=httpx.MockTransport(handler),
    )
    assert result.frame.columns.tolist() == list(FRAME_COLUMNS)
    assert result.frame.empty
    assert result.chunks == 1
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/prefix/api/v1/query_range"
    assert request.url.query == b""
    form = parse_qs(request.content.decode())
    assert form["query"] == [query]
    assert float(form["step"][0]) == 1.0


@pytest.mark.parametrize(
    "url",
    ["ftp://prom:21", "file:///etc/passwd", "javascript:alert(1)", "http://", "prom:9090",
     "http://prom:9090/?x=1", "http://[::1"],
)  # fmt: skip
def test_only_http_urls(url: str) -> None:
    transport = httpx.MockTransport(lambda request: pytest.fail("no request may be sent"))
    since, until = _last_minute()
    with pytest.raises(InputError, match="Prometheus URL"):
        query_range(url, "up", since, until, STEP, timeout=5, transport=transport)


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        ({"status_code": 200, "html": "<html><body>Grafana</body></html>"}, CollectError,
         "did not answer like a Prometheus API (text/html instead of JSON)"),
        ({"status_code": 200, "content": b'{"status": "success", "da'}, CollectError,
         "did not answer like a Prometheus API"),
        ({"status_code": 200, "json": {"hello": "world"}}, CollectError,
         "not a Prometheus query_range result"),
        ({"status_code": 404, "text": "404 page not found"}, CollectError,
         "answered HTTP 404 Not Found to /api/v1/query_range (not a Prometheus API response)"),
        ({"status_code": 502, "html": "<h1>Bad gateway</h1>"}, CollectError, "HTTP 502"),
        ({"status_code": 302, "headers": {"location": "https://sso.example/login"}},
         CollectError, "HTTP 302 (a redirect to https://sso.example/login)"),
        ({"status_code": 422, "json": {"status": "error", "errorType": "execution",
                                       "error": "many-to-many matching\nnot allowed"}},
         CollectError, "failed query 'up': execution: many-to-many matching not allowed"),
        ({"status_code": 503, "json": {"status": "error", "errorType": "timeout",
                                       "error": "query timed out in expression evaluation"}},
         CollectError, "timeout: query timed out"),
        ({"status_code": 400, "json": {"status": "error", "errorType": "bad_data",
                                       "error": "1:3: parse error: unexpected"}},
         InputError, "Prometheus rejected query 'up': 1:3: parse error: unexpected"),
        ({"status_code": 200, "json": {"status": "success",
                                       "data": {"resultType": "vector", "result": []}}},
         CollectError, "returned a 'vector' for a range query"),
        ({"status_code": 200, "json": {"status": "success", "data": {"resultType": "matrix",
                                       "result": [{"metric": {}, "histograms": []}]}}},
         InputError, "query 'up' returns native histograms"),
        ({"status_code": 200, "json": {"status": "success", "data": {"resultType": "matrix",
                                       "result": [{"metric": {}, "values": [[1.7e9]]}]}}},
         CollectError, "not [timestamp, value] pairs"),
    ],
)  # fmt: skip
def test_errors_are_one_clear_line(
    reply: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)) as caught:
        _pull(_answer(**reply))
    text = str(caught.value)
    assert "\n" not in text
    if error is CollectError:
        assert "http://prom.example:9090" in text


def test_unreachable_and_slow_servers_name_the_url_but_not_the_password() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    since, until = _last_minute()
    url = "http://scraper:s3cret@prom.example:9090"
    with pytest.raises(CollectError) as caught:
        query_range(url, "up", since, until, STEP, timeout=5, transport=httpx.MockTransport(refuse))
    assert str(caught.value) == (
        "cannot reach Prometheus at http://scraper:***@prom.example:9090: "
        "[Errno 111] Connection refused"
    )
    with pytest.raises(CollectError, match="did not answer query 'up' within 5s") as caught:
        query_range(url, "up", since, until, STEP, timeout=5, transport=httpx.MockTransport(hang))
    assert "s3cret" not in str(caught.value)


def _matrix(*series: tuple[dict[str, str], list[list[object]]]) -> httpx.MockTransport:
    body = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": labels, "values": values} for labels, values in series],
        },
    }
    return httpx.MockTransport(lambda request: httpx.Response(200, json=body))


def test_series_that_would_merge_are_refused() -> None:
    # Two exporters of one job on one host: stripping the port would merge them.
    transport = _matrix(
        ({"__name__": "up", "instance": "web-1:9100", "job": "x"}, [[1.7e9, "1"]]),
        ({"__name__": "up", "instance": "web-1:9101", "job": "x"}, [[1.7e9, "0"]]),
    )
    with pytest.raises(InputError, match='would both become up\\{"job":"x"\\} on host web-1'):
        _pull(transport)
    # With --host the instance label is kept, so they stay apart.
    frame = _pull(transport, host="fleet")
    assert sorted(frame["labels"]) == [
        '{"instance":"web-1:9100","job":"x"}',
        '{"instance":"web-1:9101","job":"x"}',
    ]
    with pytest.raises(InputError, match=r"without an instance label .* --host NAME"):
        _pull(_matrix(({"__name__": "up"}, [[1.7e9, "1"]])))
    with pytest.raises(InputError, match="not a Prometheus metric name"):
        _pull(transport, metric="bad name")


def test_a_missing_binary_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @contextlib.contextmanager
    def missing() -> Iterator[None]:
        raise ServerUnavailableError("prometheus not found: install it")
        yield

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="prometheus not found"):
        next(stack_or_skip(missing))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but prometheus not found"):
        next(stack_or_skip(missing))


# -- against the real stack ----------------------------------------------------------------


def test_paging_meets_edge_to_edge(stack: PromStack) -> None:
    # vector(time()) needs no scraped data and its value is its own timestamp.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60)
    end = start + timedelta(seconds=25)
    step = timedelta(milliseconds=1)
    ticks: list[tuple[int, int]] = []
    paged = query_range(
        stack.prometheus.url,
        "vector(time())",
        start,
        end,
        step,
        timeout=10,
        metric="prometheus_eval_time_seconds",
        host="prom",
        progress=lambda done, total: ticks.append((done, total)),
    )
    assert paged.chunks == 3
    assert ticks == [(1, 3), (2, 3), (3, 3)]
    frame = paged.frame
    assert len(frame) == 25 * 1000 + 1 > 2 * CHUNK_POINTS
    assert not frame["ts"].duplicated().any()
    assert frame["ts"].is_monotonic_increasing
    assert (frame["ts"].diff().dropna() == pd.Timedelta(milliseconds=1)).all()
    assert frame["ts"].iloc[0] == pd.Timestamp(start).tz_convert(None)
    assert frame["ts"].iloc[-1] == pd.Timestamp(end).tz_convert(None)
    stamps = frame["ts"].astype("int64") / 1e9
    assert (abs(frame["value"] - stamps) < 1e-6).all()
    # A single request across the chunk edge at +10 s gives exactly the same rows.
    edge = start + timedelta(seconds=10)
    single = query_range(
        stack.prometheus.url,
        "vector(time())",
        edge - timedelta(milliseconds=500),
        edge + timedelta(milliseconds=500),
        step,
        timeout=10,
        metric="prometheus_eval_time_seconds",
        host="prom",
    )
    assert single.chunks == 1
    window = frame[frame["ts"].between(single.frame["ts"].min(), single.frame["ts"].max())]
    pd.testing.assert_frame_equal(window.reset_index(drop=True), single.frame)


# -- the command, before the data arrives --------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
        "AUTOFIX_HOSTNAME": "test-host",
        "COLUMNS": "200",
    }


def test_cli_errors_are_one_line_with_exit_codes(stack: PromStack, env: dict[str, str]) -> None:
    # Needs no scraped data: runs while Prometheus waits for its first scrape.
    url = stack.prometheus.url
    base = ["import-prometheus", "--url", url, "--query", "up"]
    cases = {
        "bad PromQL": (
            ["import-prometheus", "--url", url, "--query", "up{job=", "--since", "1m"],
            2,
            "Prometheus rejected query 'up{job=': 1:8: parse error",
        ),
        "unreachable": (
            ["import-prometheus", "--url", f"http://127.0.0.1:{free_port()}", "--query", "up",
             "--since", "1m"],
            1,
            "cannot reach Prometheus at http://127.0.0.1:",
        ),
        "negative duration": ([*base, "--since", "-6h"], 2, "--since: '-6h' is neither"),
        "reversed range": (
            [*base, "--since", "1h", "--until", "2h"], 2, "must be before --until"
        ),
        "zero step": ([*base, "--since", "1h", "--step", "0"], 2, "--step: must be at least 1ms"),
    }  # fmt: skip
    # Each run is a fresh interpreter (~2 s of imports): run them side by side.
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = {
            name: pool.submit(run_autofix, args, env, None, timeout=60)
            for name, (args, _, _) in cases.items()
        }
    for name, (_, code, message) in cases.items():
        proc = runs[name].result()
        assert proc.returncode == code, (name, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, (name, lines)
        assert lines[0].startswith("autofix: error: "), (name, lines)
        assert message in lines[0], (name, lines[0])
        assert proc.stdout == "", name


# -- scraped data --------------------------------------------------------------------------


def test_import_scraped_memory_and_up(scraped: PromStack, store: MetricStore) -> None:
    since, until = _last_minute()
    summary = import_prometheus(
        store,
        scraped.prometheus.url,
        ["node_memory_MemAvailable_bytes", "up"],
        since,
        until,
        STEP,
    )
    assert summary.result.stored == summary.points > 0
    assert summary.result.rejected_total == 0
    assert summary.dropped_non_finite == 0
    assert [q.series for q in summary.queries] == [1, 2]
    series = _series(store)
    assert series[["host", "metric", "labels", "unit"]].values.tolist() == [
        ["127.0.0.1", "node_memory_MemAvailable_bytes", '{"job":"node"}', "bytes"],
        ["127.0.0.1", "up", '{"job":"node"}', ""],
        ["127.0.0.1", "up", '{"job":"prometheus"}', ""],
    ]
    assert (series["samples"] >= 2).all()
    samples = store.samples()
    memory = samples[samples["series_id"] == series["series_id"][0]]["value"]
    assert (memory > 1024**2).all()
    assert (samples[samples["series_id"] != series["series_id"][0]]["value"] == 1).all()
    assert summary.as_dict()["stored"] == summary.points


def test_long_pull_of_scraped_data_equals_a_short_one(scraped: PromStack) -> None:
    # Two chunks at 1 ms; the edge between them lies 1 s before the end, in scraped data.
    end = datetime.now(UTC) - timedelta(milliseconds=200)
    end = end.replace(microsecond=end.microsecond // 1000 * 1000)  # on the 1 ms grid
    start = end - timedelta(milliseconds=CHUNK_POINTS + 1000)
    step = timedelta(milliseconds=1)
    paged = query_range(scraped.prometheus.url, "up", start, end, step, timeout=10)
    assert paged.chunks == 2
    frame = paged.frame
    assert not frame.duplicated(["host", "metric", "labels", "ts"]).any()
    # Every evaluation step from each series' first scrape on is there, none twice.
    for _, rows in frame.groupby("labels"):
        gaps = rows["ts"].sort_values().diff().dropna().unique()
        assert gaps.tolist() == [pd.Timedelta(milliseconds=1)]
    edge = pd.Timestamp(start).tz_convert(None) + pd.Timedelta(milliseconds=CHUNK_POINTS)
    single = query_range(
        scraped.prometheus.url,
        "up",
        edge - timedelta(milliseconds=300),
        edge + timedelta(milliseconds=300),
        step,
        timeout=10,
    )
    assert single.chunks == 1
    assert len(single.frame) == 2 * 601  # both jobs, every millisecond around the edge
    assert (frame["ts"] == edge).sum() == 2  # the first point of the second chunk
    key = ["labels", "ts"]
    window = frame[
        frame["ts"].between(
            edge - pd.Timedelta(milliseconds=300), edge + pd.Timedelta(milliseconds=300)
        )
    ]
    pd.testing.assert_frame_equal(
        window.sort_values(key, ignore_index=True), single.frame.sort_values(key, ignore_index=True)
    )


def test_reimport_is_idempotent(scraped: PromStack, store: MetricStore) -> None:
    since, until = _last_minute()
    args = (store, scraped.prometheus.url, ["up"], since, until, STEP)
    first = import_prometheus(*args)
    before = store.samples()
    again = import_prometheus(*args)
    assert first.result.stored > 0
    assert again.result.stored == 0
    assert again.result.duplicates == first.result.stored
    pd.testing.assert_frame_equal(store.samples(), before)


def test_rate_needs_a_metric_name(scraped: PromStack, store: MetricStore) -> None:
    since, until = _last_minute()
    query = "rate(prometheus_http_requests_total[5s])"
    with pytest.raises(InputError, match=r"query 'rate.*' returns series without a metric name"):
        import_prometheus(store, scraped.prometheus.url, [query], since, until, STEP)
    summary = import_prometheus(
        store,
        scraped.prometheus.url,
        [query],
        since,
        until,
        STEP,
        metric="prometheus_http_requests_per_second",
    )
    assert summary.result.stored > 0
    series = store.series()
    assert set(series["metric"]) == {"prometheus_http_requests_per_second"}
    assert set(series["host"]) == {"127.0.0.1"}
    assert all('"handler"' in labels for labels in series["labels"])


def test_nan_and_inf_are_dropped_and_counted(scraped: PromStack, store: MetricStore) -> None:
    since, until = _last_minute()
    summary = import_prometheus(
        store, scraped.prometheus.url, ["autofix_test_value"], since, until, STEP
    )
    assert summary.series == 3
    assert summary.dropped_non_finite > 0
    assert summary.points > 0
    assert summary.result.stored == summary.points
    assert summary.result.rejected_total == 0
    assert store.series()["labels"].tolist() == ['{"case":"ok","job":"node"}']
    # The three series were scraped together: each NaN and each Inf step was dropped.
    assert summary.dropped_non_finite == pytest.approx(2 * summary.points, abs=4)


def test_cli_imports_and_reports(scraped: PromStack, env: dict[str, str]) -> None:
    proc = run_autofix(
        ["import-prometheus", "--url", scraped.prometheus.url, "--query", "up",
         "--query", "node_memory_MemAvailable_bytes", "--since", "1m", "--step", "1s", "--json"],
        env,
    )  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["series"] == 3
    assert summary["stored"] == summary["points"] > 0
    assert [q["query"] for q in summary["queries"]] == ["up", "node_memory_MemAvailable_bytes"]
    assert proc.stderr == ""  # no progress bar under --json, no per-request log lines
    with MetricStore(env["AUTOFIX_DB_PATH"]) as store:
        assert sorted(store.series()["metric"]) == [
            "node_memory_MemAvailable_bytes",
            "up",
            "up",
        ]


# -- the stack itself ----------------------------------------------------------------------


def test_stack_delivers_a_firing_alert_to_the_webhook(
    stack: PromStack, hook: WebhookReceiver
) -> None:
    # What the API's end-to-end alert test builds on: rule fires → Alertmanager → webhook.
    assert stack.alertmanager is not None
    post = hook.wait(
        lambda body: (
            isinstance(body, dict)
            and body.get("status") == "firing"
            and any(
                a["labels"].get("alertname") == "AutofixTestAlwaysFiring" for a in body["alerts"]
            )
        ),
        timeout=30,
    )
    assert post["receiver"] == "default"
    assert post["commonLabels"]["severity"] == "test"
