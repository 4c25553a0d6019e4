"""The operator's routes: whoami, pause/resume, silences, fix requests, decisions,
escalations, jobs, the offline docs, and the CLI's HTTP transport — on a real server."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from autofix.api.metrics import METRICS_TTL
from tests.api.world import OPERATOR, VIEWER, World, alert, auth, body, make_world, serving, webhook


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, httpx.Client]]:
    with make_world(tmp_path_factory.mktemp("control")) as world, serving(world) as client:
        yield world, client


def _metric(client: httpx.Client, name: str, expected: float) -> float:
    """The gauge once it reads ``expected`` (the page is cached for METRICS_TTL seconds)."""
    deadline = time.monotonic() + 3 * METRICS_TTL
    while True:
        found = re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.MULTILINE)
        assert found is not None, name
        if float(found.group(1)) == expected or time.monotonic() > deadline:
            return float(found.group(1))
        time.sleep(0.5)


def test_whoami_tells_the_role_and_what_it_may_do(served: tuple[World, httpx.Client]) -> None:
    _, client = served
    viewer = body(client.get("/api/v1/whoami", headers=auth(VIEWER)))
    assert (viewer["name"], viewer["role"], viewer["actor"]) == ("eve", "viewer", "api:eve")
    assert not any(viewer["can"].values())
    operator = body(client.get("/api/v1/whoami", headers=auth(OPERATOR)))
    assert operator["role"] == "operator"
    assert all(operator["can"].values())


def test_pause_holds_fixes_and_shows_everywhere(served: tuple[World, httpx.Client]) -> None:
    world, client = served
    ops = auth(OPERATOR)
    refused = client.post("/api/v1/pause", json={"reason": "x"}, headers=auth(VIEWER))
    assert refused.status_code == 403
    assert body(client.get("/api/v1/pause", headers=ops)) == {
        "paused": False,
        "since": None,
        "until": None,
        "reason": None,
        "by": None,
    }
    paused = body(client.post("/api/v1/pause", json={"reason": "deploy", "for": "2h"}, headers=ops))
    assert (paused["paused"], paused["by"], paused["reason"]) == (True, "api:ops", "deploy")
    assert paused["since"].endswith("Z")
    assert paused["until"].endswith("Z")
    assert _metric(client, "autofix_paused", 1.0) == 1.0
    # A requested fix is planned, not applied; an approval waits (409, nothing recorded).
    world.stale("logs-b", "paused.tmp")
    fix = body(
        client.post(
            "/api/v1/fixes",
            json={"action": "files.clean_temp", "target": "logs-b", "approve": True},
            headers=ops,
        )
    )
    assert fix["state"] == "planned"
    assert "paused" in fix["reason"]
    assert (world.root / "logs-b" / "paused.tmp").exists()
    approvals = world.counts()["approvals"]
    pending = world.fixes["pending"]
    held = client.post(f"/api/v1/fixes/{pending}/approve", headers=ops)
    assert held.status_code == 409
    assert "autofix resume" in body(held)["detail"]
    assert world.counts()["approvals"] == approvals
    assert body(client.post("/api/v1/resume", headers=ops)) == {
        "paused": False,
        "since": None,
        "until": None,
        "reason": None,
        "by": None,
    }
    assert _metric(client, "autofix_paused", 0.0) == 0.0


def test_request_a_fix_through_the_gates(served: tuple[World, httpx.Client]) -> None:
    world, client = served
    ops = auth(OPERATOR)
    world.stale("logs-b", "request.tmp")
    refused = client.post(
        "/api/v1/fixes", json={"action": "files.clean_temp", "target": "x"}, headers=auth(VIEWER)
    )
    assert refused.status_code == 403
    planned = body(
        client.post(
            "/api/v1/fixes",
            json={"action": "files.clean_temp", "target": "logs-b", "dry_run": True},
            headers=ops,
        )
    )
    assert planned["state"] == "planned"
    assert planned["requested_by"] == "api:ops"
    waiting = body(
        client.post(
            "/api/v1/fixes", json={"action": "files.clean_temp", "target": "logs-b"}, headers=ops
        )
    )
    assert waiting["state"] == "pending_approval"  # AUTOFIX_FIX_MODE=approve
    undeclared = body(
        client.post(
            "/api/v1/fixes", json={"action": "files.clean_temp", "target": "nowhere"}, headers=ops
        )
    )
    assert (undeclared["state"], undeclared["gate"]) == ("refused", "allowlist")
    unknown = client.post(
        "/api/v1/fixes", json={"action": "files.nothing", "target": "logs-b"}, headers=ops
    )
    assert unknown.status_code == 422


def test_silences_over_the_api(served: tuple[World, httpx.Client]) -> None:
    world, client = served
    ops = auth(OPERATOR)
    spec = {"matchers": [{"name": "target", "value": "logs-b"}], "comment": "noisy", "for": "1h"}
    assert client.post("/api/v1/silences", json=spec, headers=auth(VIEWER)).status_code == 403
    everything = {**spec, "matchers": [{"name": "target", "op": "=~", "value": ".*"}]}
    assert client.post("/api/v1/silences", json=everything, headers=ops).status_code == 422
    made = client.post("/api/v1/silences", json=spec, headers=ops)
    assert made.status_code == 201
    silence = body(made)
    assert (silence["state"], silence["creator"]) == ("active", "api:ops")
    assert _metric(client, "autofix_silences_active", 1.0) == 1.0
    # An alert about the silenced target is recorded as silenced, nothing runs.
    decided = body(
        client.post(
            "/api/v1/alerts/alertmanager",
            json=webhook(alert("DiskFilling", target="logs-b")),
            headers=ops,
        )
    )
    (result,) = decided["results"]
    assert (result["mode"], result["fixes"]) == ("silenced", [])
    decisions = body(client.get("/api/v1/decisions?mode=silenced", headers=auth(VIEWER)))
    assert decisions["total"] == 1
    assert decisions["items"][0]["target"] == "logs-b"
    listed = body(client.get("/api/v1/silences?state=active", headers=auth(VIEWER)))
    assert [s["id"] for s in listed["items"]] == [silence["id"]]
    expired = client.post(f"/api/v1/silences/{silence['id']}/expire", headers=ops)
    assert body(expired)["state"] == "expired"
    assert body(expired)["expired_by"] == "api:ops"
    again = client.post(f"/api/v1/silences/{silence['id']}/expire", headers=ops)
    assert again.status_code == 409
    assert client.post("/api/v1/silences/999/expire", headers=ops).status_code == 404
    del world


def test_decisions_escalations_and_jobs(served: tuple[World, httpx.Client]) -> None:
    world, client = served
    viewer, ops = auth(VIEWER), auth(OPERATOR)
    client.post(
        "/api/v1/alerts/alertmanager",
        json=webhook(alert("NeedsHuman", target="logs-a")),
        headers=ops,
    )
    decisions = body(client.get("/api/v1/decisions?rule=needs-human", headers=viewer))
    assert decisions["items"][0]["source"] == "alert"
    escalations = body(client.get("/api/v1/escalations?target=logs-a", headers=viewer))
    assert any("manual intervention" in e["reason"] for e in escalations["items"])
    jobs = {j["job"]: j for j in body(client.get("/api/v1/jobs", headers=viewer))}
    assert jobs["collect"]["schedule"] == "every 15s"
    assert (jobs["remediate"]["last_ok"], jobs["remediate"]["last_error"]) == (False, "boom")
    assert client.post("/api/v1/jobs/kpi/run", headers=viewer).status_code == 403
    run = body(client.post("/api/v1/jobs/retention/run", headers=ops))
    assert run["job"] == "retention", run
    assert run["ok"] is True, run
    assert client.post("/api/v1/jobs/nope/run", headers=ops).status_code == 422
    del world


def test_docs_are_served_offline(served: tuple[World, httpx.Client]) -> None:
    _, client = served
    page = client.get("/docs")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources
    assert all(s.startswith("/docs/assets/") for s in sources)
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert len(bundle.content) > 500_000
    assert "validatorUrl: null" in client.get("/docs/assets/init.js").text
    assert "Apache License" in client.get("/docs/assets/LICENSE").text
    assert client.get("/docs/assets/..%2Fcontrol.py").status_code == 404


def _cli(client: httpx.Client, token: str, *argv: str) -> tuple[int, Any, str]:
    response = client.post(
        "/api/v1/cli", json={"argv": list(argv), "out": {"width": 100}}, headers=auth(token)
    )
    if response.status_code != 200:
        return response.status_code, body(response), ""
    frames = [json.loads(line) for line in response.text.splitlines()]
    out = "".join(f.get("o", "") for f in frames)
    err = "".join(f.get("e", "") for f in frames)
    return frames[-1]["x"], out, err


def test_the_cli_over_http(served: tuple[World, httpx.Client]) -> None:
    world, client = served
    code, out, _ = _cli(client, VIEWER, "fix", "show", str(world.fixes["succeeded"]), "--json")
    assert code == 0
    assert json.loads(out)["state"] == "succeeded"
    assert _cli(client, VIEWER, "pause", "--reason", "x")[0] == 403
    assert _cli(client, OPERATOR, "serve")[0] == 422
    code, _, err = _cli(client, OPERATOR, "import", "data/samples")
    assert code == 2
    assert "paths are not sent over HTTP" in err
    code, out, _ = _cli(client, OPERATOR, "silence", "list", "--json")
    assert code == 0
    assert isinstance(json.loads(out), list)
