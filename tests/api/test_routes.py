"""The read routes and /metrics over a real store, served by uvicorn on loopback."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from autofix.api.context import TtlCache
from autofix.api.models import FixState, TaskState
from autofix.audit import STATES
from autofix.maintenance import TASK_STATES
from tests.api.world import VIEWER, World, auth, body, make_world, prediction, serving

# Most tests only read: they share one world and server. Tests that write make their own.


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with make_world(tmp_path_factory.mktemp("routes")) as w:
        yield w


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[httpx.Client]:
    with serving(world) as c:
        c.headers.update(auth(VIEWER))
        yield c


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[World, httpx.Client]]:
    with make_world(tmp_path) as w, serving(w) as c:
        c.headers.update(auth(VIEWER))
        yield w, c


def test_state_enums_match_the_package() -> None:
    assert FixState.__args__ == STATES  # type: ignore[attr-defined]
    assert TaskState.__args__ == TASK_STATES  # type: ignore[attr-defined]


def test_health_and_readiness(world: World, client: httpx.Client) -> None:
    assert body(client.get("/healthz")) == {"status": "ok"}
    ready = body(client.get("/readyz"))
    assert (ready["ready"], ready["store"], ready["scheduler"]) == (True, "ok", "absent")
    jobs = {j["job"]: j for j in ready["jobs"]}
    assert jobs["remediate"]["ok"] is False
    assert jobs["collect"]["ok"] is True
    assert 0 <= jobs["collect"]["age_seconds"] < 3600


def test_readiness_fails_while_the_scheduler_is_stopped(world: World) -> None:
    scheduler = BackgroundScheduler(timezone="UTC")  # built, never started
    with serving(world, scheduler=scheduler) as c:
        response = c.get("/readyz")
    assert response.status_code == 503
    assert body(response)["scheduler"] == "stopped"


def test_forecasts_newest_per_series_riskiest_first(world: World, client: httpx.Client) -> None:
    page = body(client.get("/api/v1/forecasts"))
    assert page["total"] == 2
    disk, memory = page["items"]
    assert disk["series_id"] == world.series["disk"]
    assert (disk["within"], disk["p_within"], disk["model"], disk["model_version"]) == (
        "24h",
        0.9,  # the newer of the two runs
        "default",
        "7",
    )
    assert disk["labels"] == {"mountpoint": "/var/log"}
    assert disk["eta"].endswith("Z")
    assert disk["eta_lo"] < disk["eta"] < disk["eta_hi"]
    assert disk["probabilities"] == {"1h": 0.0, "4h": 0.2, "24h": 0.9, "4d": 0.99}
    assert memory["eta"] is None
    assert memory["p_within"] == 0.0


def test_forecast_filters_and_pages(world: World, client: httpx.Client) -> None:
    def get(**params: object) -> dict[str, object]:
        return body(client.get("/api/v1/forecasts", params=params))  # type: ignore[arg-type]

    assert get(metric="node_memory_available_bytes")["total"] == 1
    assert get(host="nowhere")["total"] == 0
    assert get(within="4d", min_probability=0.5)["total"] == 1
    second = get(limit=1, offset=1)
    assert (second["total"], len(second["items"])) == (2, 1)  # type: ignore[arg-type]
    assert get(offset=5)["items"] == []
    assert client.get("/api/v1/forecasts", params={"limit": 1001}).status_code == 422
    assert client.get("/api/v1/forecasts", params={"within": "2h"}).status_code == 422
    misspelt = client.get("/api/v1/forecasts", params={"hots": "web-1"})
    assert misspelt.status_code == 422
    assert body(misspelt)["detail"][0]["loc"] == ["query", "hots"]


def test_forecasts_are_rebuilt_only_after_a_new_prediction_run(
    fresh: tuple[World, httpx.Client],
) -> None:
    world, client = fresh
    cache = world.app.state.autofix.predictions
    for _ in range(3):
        client.get("/api/v1/forecasts")
    assert cache.builds == 1
    row = prediction(world.series["memory"], world.now, None, {"24h": 0.97}, version="8")
    frame = pd.DataFrame([row])
    world.store.write_predictions(frame, world.now)
    cache.forget()  # the next request checks the store (else within a second)
    top = body(client.get("/api/v1/forecasts"))["items"][0]
    assert (top["series_id"], top["model_version"]) == (world.series["memory"], "8")
    assert cache.builds == 2


def test_a_new_prediction_run_is_rebuilt_off_the_request_path(
    fresh: tuple[World, httpx.Client],
) -> None:
    world, client = fresh
    cache = world.app.state.autofix.predictions
    first = body(client.get("/api/v1/forecasts"))["items"][0]
    row = prediction(world.series["memory"], world.now, None, {"24h": 0.99}, version="9")
    world.store.write_predictions(pd.DataFrame([row]), world.now)
    cache._checked = -math.inf  # the next request checks the store at once
    # The request that finds the new run still gets the table it had: no waiting.
    assert body(client.get("/api/v1/forecasts"))["items"][0] == first
    cache.wait_rebuilt()
    top = body(client.get("/api/v1/forecasts"))["items"][0]
    assert (top["series_id"], top["model_version"]) == (world.series["memory"], "9")
    assert cache.builds == 2


def test_series_forecast_for_a_chart(world: World, client: httpx.Client) -> None:
    sid = world.series["disk"]
    chart = body(client.get(f"/api/v1/series/{sid}/forecast", params={"history": "2h"}))
    assert (chart["metric"], chart["direction"], chart["capacity"]) == (
        "node_filesystem_avail_bytes",
        "down",
        100e9,
    )
    assert 20 <= len(chart["history"]) <= 25  # 2 h of 5-minute samples
    last = chart["history"][-1]
    assert last["value"] == pytest.approx(40e9 - 0.4e9 * 72)
    assert last["fill"] == pytest.approx(1 - last["value"] / 100e9)
    path = chart["forecast"]
    assert path[0]["value"] == pytest.approx(last["value"])
    assert path[-1]["fill"] == 1.0
    assert path[-1]["value"] == 0.0
    assert all(p["lo"] <= p["value"] <= p["hi"] for p in path)
    fills = [p["fill"] for p in path]
    assert fills == sorted(fills)
    assert chart["prediction"]["series_id"] == sid
    assert chart["eta"] == chart["prediction"]["eta"]
    assert chart["capacity_history"][0]["capacity"] == 100e9


def test_series_forecast_without_prediction_or_series(world: World, client: httpx.Client) -> None:
    chart = body(client.get(f"/api/v1/series/{world.series['latency']}/forecast"))
    assert chart["prediction"] is None
    assert chart["forecast"] == []
    assert chart["history"]
    missing = client.get("/api/v1/series/999999/forecast")
    assert missing.status_code == 404
    assert "999999" in body(missing)["detail"]
    assert client.get("/api/v1/series/1/forecast", params={"history": "0s"}).status_code == 422
    assert client.get(f"/api/v1/series/{2**63}/forecast").status_code == 422


def test_anomalies(world: World, client: httpx.Client) -> None:
    page = body(client.get("/api/v1/anomalies"))
    assert [a["score"] for a in page["items"]] == [0.97, 0.95]  # newest first, ≥ 0.5
    assert page["items"][0]["labels"] == {"target": "news-db"}
    assert body(client.get("/api/v1/anomalies", params={"min_score": 0}))["total"] == 3
    since = (world.now - timedelta(minutes=2)).isoformat() + "Z"
    assert body(client.get("/api/v1/anomalies", params={"since": since}))["total"] == 1
    assert body(client.get("/api/v1/anomalies", params={"host": "web-1"}))["total"] == 0
    # Times are RFC 3339, as the schema says: no epoch numbers, no time without an offset.
    for guess in ("9", "1700000000000", (world.now - timedelta(minutes=2)).isoformat()):
        refused = client.get("/api/v1/anomalies", params={"since": guess})
        assert refused.status_code == 422, guess
        assert "RFC 3339" in refused.text


def test_fix_list_filters_and_detail(world: World, client: httpx.Client) -> None:
    page = body(client.get("/api/v1/fixes"))
    assert page["total"] == 3
    assert [f["id"] for f in page["items"]] == sorted(world.fixes.values(), reverse=True)
    pending = body(client.get("/api/v1/fixes", params={"state": "pending_approval"}))
    assert [f["id"] for f in pending["items"]] == [world.fixes["pending"]]
    assert body(client.get("/api/v1/fixes", params={"target": "logs-c"}))["total"] == 1
    assert body(client.get("/api/v1/fixes", params={"action": "files.rotate_logs"}))["total"] == 0
    later = (world.now + timedelta(hours=1)).isoformat() + "Z"
    assert body(client.get("/api/v1/fixes", params={"since": later}))["total"] == 0
    beyond = body(client.get("/api/v1/fixes", params={"offset": 10}))
    assert (beyond["total"], beyond["items"]) == (3, [])
    detail = body(client.get(f"/api/v1/fixes/{world.fixes['succeeded']}"))
    assert [e["state"] for e in detail["events"]] == ["running", "succeeded"]
    assert detail["approved_by"] == "someone"
    assert detail["plan"]
    assert client.get("/api/v1/fixes/424242").status_code == 404
    assert client.get("/api/v1/fixes", params={"state": "done"}).status_code == 422


def test_kpis(world: World, client: httpx.Client) -> None:
    kpis = body(client.get("/api/v1/kpis"))
    assert (kpis["applied_fixes"], kpis["succeeded_fixes"], kpis["pending_approvals"]) == (1, 1, 1)
    assert kpis["auto_fix_success_rate"] == 1.0
    assert kpis["status"]["auto_fix_success_rate"] == "meets_goal"
    assert kpis["window_seconds"] == 30 * 86400
    assert body(client.get("/api/v1/kpis", params={"window": "1h"}))["window_seconds"] == 3600
    longest = body(client.get("/api/v1/kpis", params={"window": "99999d"}))
    assert longest["window_seconds"] == 3650 * 86400  # cut to ten years
    for bad in ("0s", "1y", "-1h", "1.5h", "30"):
        assert client.get("/api/v1/kpis", params={"window": bad}).status_code == 422


def test_maintenance_lists_tasks(fresh: tuple[World, httpx.Client]) -> None:
    world, client = fresh
    start, end = world.now + timedelta(hours=1), world.now + timedelta(hours=2)
    with world.store._write_lock:  # two tasks as the planner records them
        for task_id, target, state in ((1, "logs-a", "planned"), (2, "logs-b", "missed")):
            world.store._run(
                "INSERT INTO maintenance_tasks VALUES "
                "(?, ?, 'log_rotation', ?, 'files.rotate_logs', '{}', 'normal', 'grows', "
                "30, false, ?, ?, ?)",
                [task_id, world.now, target, end, start, end],
            )
            world.store._run(
                "INSERT INTO maintenance_events VALUES (?, ?, ?, NULL, 'why')",
                [task_id, world.now, state],
            )
    page = body(client.get("/api/v1/maintenance"))
    assert page["total"] == 2
    first = page["items"][0]
    assert (first["task_id"], first["target"], first["state"]) == (1, "logs-a", "planned")
    assert first["window_start"].endswith("Z")
    missed = body(client.get("/api/v1/maintenance", params={"state": "missed"}))
    assert [t["target"] for t in missed["items"]] == ["logs-b"]
    assert body(client.get("/api/v1/maintenance", params={"target": "logs-a"}))["total"] == 1
    assert client.get("/api/v1/maintenance", params={"state": "done"}).status_code == 422


def test_openapi_lists_every_route(client: httpx.Client) -> None:
    paths = body(client.get("/openapi.json"))["paths"]
    assert {
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/forecasts",
        "/api/v1/series/{series_id}/forecast",
        "/api/v1/anomalies",
        "/api/v1/fixes",
        "/api/v1/fixes/{fix_id}",
        "/api/v1/fixes/{fix_id}/approve",
        "/api/v1/fixes/{fix_id}/reject",
        "/api/v1/fixes/{fix_id}/rollback",
        "/api/v1/fixes/{fix_id}/label",
        "/api/v1/kpis",
        "/api/v1/maintenance",
        "/api/v1/alerts/alertmanager",
    } <= set(paths)


def test_ttl_cache_serves_stale_values_only_under_a_flood() -> None:
    calls: list[float] = []

    def compute() -> int:
        calls.append(time.monotonic())
        return len(calls)

    cache = TtlCache(0.05, stale=0.3)
    assert cache.fresh() is None
    assert cache.get_stale(compute) == 1  # nothing yet: computed, waited for
    assert (cache.get_stale(compute), cache.fresh()) == (1, 1)
    time.sleep(0.08)
    assert cache.fresh() is None
    assert cache.get_stale(compute) == 1  # stale but recent: served, refreshed behind
    deadline = time.monotonic() + 5
    while cache.fresh() != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.fresh() == 2
    time.sleep(0.35)
    assert cache.get_stale(compute) == 3  # too old to serve: computed, waited for
