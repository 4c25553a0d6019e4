"""/metrics over a real store, served by uvicorn on loopback, and scraped by a real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autofix.api.metrics import job_interval, series_labels
from autofix.heartbeat import Heartbeat
from autofix.pipeline import JobSpec
from tests.api.world import World, make_world, prediction, serving
from tests.promstack import prometheus, stack_or_skip

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with make_world(tmp_path_factory.mktemp("metrics")) as w:
        _extra_series(w)
        yield w


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[httpx.Client]:
    beat = Heartbeat(10.0, send=lambda _: None, clock=lambda: 1_700_000_000.0)
    beat.beat()
    with serving(world, heartbeat=beat) as c:
        yield c


def _extra_series(world: World) -> None:
    """A disk whose labels clash with ours, and one that stopped reporting an hour ago."""
    now, store = world.now, world.store
    rows = [
        (now, "web-2", "node_filesystem_avail_bytes",
         '{"host":"spoofed","mountpoint":"/data","odd-name":"1"}', 1e9, "bytes", 10e9),
        (now - timedelta(hours=1), "web-3", "node_filesystem_avail_bytes",
         '{"mountpoint":"/gone"}', 1e9, "bytes", 10e9),
    ]  # fmt: skip
    frame = pd.DataFrame(
        rows, columns=["ts", "host", "metric", "labels", "value", "unit", "capacity"]
    )
    store.write(frame)
    ids = {
        (str(r["host"])): int(r["series_id"])
        for r in store.series().to_dict("records")
        if r["host"] in {"web-2", "web-3"}
    }
    eta = now + timedelta(hours=2)
    predictions = [
        prediction(ids["web-2"], now, eta, {"4h": 0.85}),
        prediction(ids["web-3"], now - timedelta(hours=1), eta, {"4h": 0.99}),
    ]
    store.write_predictions(pd.DataFrame(predictions), now)
    world.series.update({"clash": ids["web-2"], "gone": ids["web-3"]})


def _metrics(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:  # by sample name: counters end in _total
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def test_risk_gauges_carry_each_series_labels(world: World, client: httpx.Client) -> None:
    metrics = _metrics(client)
    disk, clash = str(world.series["disk"]), str(world.series["clash"])
    etas = {
        labels["series_id"]: (labels, v) for labels, v in metrics["autofix_seconds_to_exhaustion"]
    }
    labels, seconds = etas[disk]
    assert labels == {
        "series_id": disk,
        "host": "web-1",
        "metric": "node_filesystem_avail_bytes",
        "mountpoint": "/var/log",
    }
    assert seconds == pytest.approx(8 * 3600, abs=120)
    # A series label never overrides ours, and odd names become valid ones.
    assert etas[clash][0] == {
        "series_id": clash,
        "host": "web-2",
        "metric": "node_filesystem_avail_bytes",
        "exported_host": "spoofed",
        "mountpoint": "/data",
        "exported_odd_name": "1",
    }
    p = {(s["series_id"], s["horizon"]): v for s, v in metrics["autofix_exhaustion_probability"]}
    assert p[(disk, "24h")] == 0.9
    assert p[(clash, "4h")] == 0.85
    assert p[(str(world.series["memory"]), "4d")] == 0.01
    assert (str(world.series["memory"]), "24h") not in p  # zero: not exported
    scores = metrics["autofix_anomaly_score"]
    assert scores == [
        (
            {"series_id": str(world.series["latency"]), "host": "db-1",
             "metric": "probe_duration_seconds", "target": "news-db"},
            0.97,
        )
    ]  # fmt: skip


def test_series_that_stopped_reporting_export_nothing(world: World, client: httpx.Client) -> None:
    metrics = _metrics(client)
    gone = str(world.series["gone"])
    for family in ("autofix_seconds_to_exhaustion", "autofix_exhaustion_probability"):
        assert gone not in {labels["series_id"] for labels, _ in metrics[family]}


def test_fix_gate_kpi_and_job_families(world: World, client: httpx.Client) -> None:
    metrics = _metrics(client)
    fixes = {(s["action"], s["state"]): v for s, v in metrics["autofix_fixes"]}
    assert fixes == {
        ("files.clean_temp", "pending_approval"): 1,
        ("files.clean_temp", "succeeded"): 1,
        ("files.clean_temp", "refused"): 1,
    }
    moves = {(s["action"], s["state"]): v for s, v in metrics["autofix_fix_transitions_total"]}
    assert moves[("files.clean_temp", "running")] == 1
    assert moves[("files.clean_temp", "failed")] == 0  # zeros too: increase() sees the first
    assert metrics["autofix_gate_refusals_total"] == [({"gate": "allowlist"}, 1.0)]
    assert metrics["autofix_escalations_total"] == [({}, 0.0)]
    kpi = dict((s["name"], v) for s, v in metrics["autofix_kpi"])
    assert kpi["auto_fix_success_rate"] == 1.0
    assert kpi["pending_approvals"] == 1.0
    targets = {(s["name"], s["level"]): v for s, v in metrics["autofix_kpi_target"]}
    assert targets[("auto_fix_success_rate", "seed")] == 0.85
    assert targets[("false_fix_rate", "goal")] == 0.001
    assert dict((s["autofix_job"], v) for s, v in metrics["autofix_job_failures_total"]) == {
        "collect": 0.0,
        "remediate": 1.0,
    }
    assert dict((s["autofix_job"], v) for s, v in metrics["autofix_job_last_run_success"]) == {
        "collect": 1.0,
        "remediate": 0.0,
    }
    assert ({"autofix_job": "collect"}, 0.0125) in metrics["autofix_job_duration_seconds"]
    intervals = dict((s["autofix_job"], v) for s, v in metrics["autofix_job_interval_seconds"])
    assert (intervals["collect"], intervals["train"]) == (15.0, 86400.0)
    ((pending, age),) = metrics["autofix_approval_pending_age_seconds"]
    assert pending["fix_id"] == str(world.fixes["pending"])
    assert 0 <= age < 600
    assert metrics["autofix_approval_ttl_seconds"] == [(pending, 3600.0)]
    assert metrics["autofix_scheduler_heartbeat_timestamp_seconds"] == [({}, 1_700_000_000.0)]
    assert metrics["autofix_scheduler_heartbeat_interval_seconds"] == [({}, 10.0)]
    assert metrics["process_start_time_seconds"][0][1] > 0
    ((build, one),) = metrics["autofix_build_info"]
    assert one == 1.0
    assert build["version"]


def test_http_requests_are_counted_by_route_template(world: World) -> None:
    with serving(world) as client:  # its own app: the first /metrics render comes last
        client.get("/healthz")
        client.get("/api/v1/fixes/12345")  # 401, a templated route
        client.get("/no/such/path/%1B[31m")  # untrusted path: grouped, never a label
        requests = {
            (s["handler"], s["method"], s["status"]): v
            for s, v in _metrics(client)["http_requests_total"]
        }
    assert requests[("/healthz", "GET", "2xx")] == 1
    assert requests[("/api/v1/fixes/{fix_id}", "GET", "4xx")] == 1
    assert requests[("none", "GET", "4xx")] == 1
    assert not any("no/such" in handler for handler, _, _ in requests)


def test_an_open_circuit_breaker_is_exported(tmp_path: Path) -> None:
    with make_world(tmp_path) as world:
        audit = world.service.executor.audit
        for _ in range(3):  # three failures in a row open the default breaker
            fix_id = audit.create("files.clean_temp", "logs-b", None, {}, "test", {})
            audit.append(fix_id, "running", "apply")
            audit.append(fix_id, "failed", "apply", error="disk gone")
        with serving(world) as client:
            breakers = {
                (s["action"], s["target"]): v
                for s, v in _metrics(client)["autofix_circuit_breaker_open"]
            }
    assert breakers[("files.clean_temp", "logs-b")] == 1.0
    assert breakers[("files.clean_temp", "logs-c")] == 0.0  # it succeeded


def test_series_labels_and_job_intervals() -> None:
    assert series_labels({"target": "web", "metric": "x", "9lives": "y"}) == {
        "target": "web",
        "exported_metric": "x",
        "exported_9lives": "y",
    }
    now = pd.Timestamp("2026-03-06 12:00").to_pydatetime()  # a Friday
    assert job_interval(JobSpec(every=timedelta(minutes=1)), now) == 60
    assert job_interval(JobSpec(cron="30 3 * * *"), now) == 86400
    assert job_interval(JobSpec(cron="0 9 * * 1-5"), now) == 3 * 86400  # over the weekend


def test_a_real_prometheus_scrapes_metrics(world: World, client: httpx.Client) -> None:
    address = str(client.base_url).removeprefix("http://").rstrip("/")
    for prom in stack_or_skip(lambda: prometheus({"autofix": [address]}, wait_for_targets=True)):
        query = 'autofix_exhaustion_probability{horizon="24h"}'
        result = httpx.get(f"{prom.url}/api/v1/query", params={"query": query}).json()
        ((sample),) = result["data"]["result"]
        assert sample["metric"]["series_id"] == str(world.series["disk"])
        assert sample["metric"]["mountpoint"] == "/var/log"
        assert sample["metric"]["job"] == "autofix"
        assert float(sample["value"][1]) == 0.9
