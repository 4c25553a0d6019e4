"""The auth matrix over every operation of the real schema; operator actions and their audit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from autofix.api.auth import Tokens
from tests.api.world import (
    OPERATOR,
    VIEWER,
    World,
    alert,
    auth,
    body,
    make_world,
    serving,
    webhook,
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        yield w


@pytest.fixture(scope="module")
def calm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, httpx.Client]]:
    """One world and server for requests that must be refused (and so write nothing)."""
    with make_world(tmp_path_factory.mktemp("auth")) as w, serving(w) as c:
        yield w, c


def _operations(client: httpx.Client, world: World) -> list[tuple[str, str, dict[str, Any]]]:
    """Every /api/v1 operation of the served schema, with a request that is valid for it."""
    schema = body(client.get("/openapi.json"))
    ids = {
        "fix_id": world.fixes["pending"],
        "series_id": world.series["disk"],
        "job": "kpi",
        "silence_id": 1,
    }
    out = []
    for path, item in schema["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method in item:
            url = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)
            kwargs: dict[str, Any] = {}
            if path.endswith("/label"):
                kwargs["json"] = {"false_fix": False}
            elif path.endswith("/alertmanager"):
                kwargs["json"] = webhook(alert("DiskFilling", target="logs-b"))
            elif path == "/api/v1/fixes" and method == "post":
                kwargs["json"] = {"action": "files.clean_temp", "target": "logs-a"}
            elif path == "/api/v1/pause" and method == "post":
                kwargs["json"] = {"reason": "deploy"}
            elif path == "/api/v1/silences" and method == "post":
                kwargs["json"] = {
                    "matchers": [{"name": "target", "value": "logs-a"}],
                    "comment": "noisy",
                    "for": "1h",
                }
            out.append((method.upper(), url, kwargs))
    return out


def test_auth_matrix(calm: tuple[World, httpx.Client]) -> None:
    """No or a bad token: 401 everywhere; a viewer reads but never acts (403, no write)."""
    world, client = calm
    before = world.counts()
    wrong: list[tuple[str, str, str, int]] = []
    operations = _operations(client, world)
    assert len(operations) == 24
    for method, url, kwargs in operations:
        mutating = method != "GET"
        cases = {
            "none": ({}, 401),
            "bad": (auth("not-a-token-0123456789"), 401),
            "prefix": (auth(OPERATOR[:-1]), 401),
            "longer": (auth(OPERATOR + "x"), 401),
            "basic": ({"Authorization": f"Basic {OPERATOR}"}, 401),
            "viewer": (auth(VIEWER), 403 if mutating else 200),
        }
        for case, (headers, expected) in cases.items():
            response = client.request(method, url, headers=headers, **kwargs)
            if response.status_code != expected:
                wrong.append((case, method, url, response.status_code))
            if expected == 401:
                assert response.headers["www-authenticate"] == "Bearer"
                assert "detail" in body(response)
    # Nothing a refused caller sent was written.
    assert world.counts() == before
    for method, url, kwargs in operations:
        if method == "GET":
            response = client.request(method, url, headers=auth(OPERATOR), **kwargs)
            if response.status_code != 200:
                wrong.append(("operator", method, url, response.status_code))
    assert wrong == []


def test_open_routes_and_a_non_ascii_token(calm: tuple[World, httpx.Client]) -> None:
    _, client = calm
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    odd = client.get("/api/v1/fixes", headers={"Authorization": b"Bearer \xe9\xff-token"})
    assert odd.status_code == 401


def test_no_tokens_configured_refuses_every_api_request(tmp_path: Path) -> None:
    with make_world(tmp_path, api_tokens="") as world, serving(world) as client:
        assert client.get("/api/v1/forecasts", headers=auth(OPERATOR)).status_code == 401
        assert client.get("/api/v1/forecasts").status_code == 401
        assert client.get("/healthz").status_code == 200


def test_metrics_can_require_a_token(tmp_path: Path) -> None:
    with make_world(tmp_path, api_metrics_auth="true") as world, serving(world) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=auth(VIEWER)).status_code == 200


def test_tokens_are_checked_against_every_entry() -> None:
    tokens = Tokens(SecretStr(f"ops:operator:{OPERATOR}, eve:viewer:{VIEWER}"))
    assert len(tokens) == 2
    ops = tokens.check(OPERATOR)
    eve = tokens.check(VIEWER)
    assert ops is not None
    assert (ops.name, ops.role, ops.actor) == ("ops", "operator", "api:ops")
    assert eve is not None
    assert eve.role == "viewer"
    for guess in ("", OPERATOR[:-1], OPERATOR + " ", OPERATOR.upper(), "ops", "\udcff"):
        assert tokens.check(guess) is None


# -- operator actions: done through the executor, recorded under api:<token name> ----------


def test_approve_runs_the_fix_as_the_token(world: World) -> None:
    fix_id = world.fixes["pending"]
    with serving(world) as client:
        client.headers.update(auth(OPERATOR))
        done = body(client.post(f"/api/v1/fixes/{fix_id}/approve"))
        assert (done["state"], done["approved_by"]) == ("succeeded", "api:ops")
        assert [e["state"] for e in done["events"]][-2:] == ["running", "succeeded"]
        assert not (world.root / "logs-a" / "old.tmp").exists()  # quarantined
        # Approving again: the fix is no longer pending → 409, nothing written.
        before = world.counts()
        again = client.post(f"/api/v1/fixes/{fix_id}/approve")
        assert again.status_code == 409
        assert "not pending_approval" in body(again)["detail"]
        assert world.counts() == before
        # Roll it back: the file comes back, recorded as the token.
        back = body(client.post(f"/api/v1/fixes/{fix_id}/rollback"))
        assert back["state"] == "rolled_back"
        assert back["events"][-1]["actor"] == "api:ops"
        assert (world.root / "logs-a" / "old.tmp").exists()
        # Label it: the latest label is recorded with the token's name.
        labelled = body(
            client.post(f"/api/v1/fixes/{fix_id}/label", json={"false_fix": True, "comment": "x"})
        )
        assert labelled["labels"] == [
            {"ts": labelled["labels"][0]["ts"], "false_fix": True, "actor": "api:ops",
             "comment": "x"}
        ]  # fmt: skip
    approvals = world.store._run("SELECT verdict, actor FROM approvals WHERE fix_id = ?", [fix_id])
    assert approvals == [("approved", "api:ops")]


def test_reject_is_recorded_and_the_fix_never_runs(world: World) -> None:
    fix_id = world.fixes["pending"]
    with serving(world) as client:
        rejected = body(client.post(f"/api/v1/fixes/{fix_id}/reject", headers=auth(OPERATOR)))
    assert (rejected["state"], rejected["gate"]) == ("refused", "approval")
    assert (world.root / "logs-a" / "old.tmp").exists()
    assert world.store._run("SELECT verdict, actor FROM approvals WHERE fix_id = ?", [fix_id]) == [
        ("rejected", "api:ops")
    ]


@pytest.mark.parametrize(
    ("fix", "verb", "payload", "status"),
    [
        ("succeeded", "approve", None, 409),
        ("succeeded", "reject", None, 409),
        ("refused", "rollback", None, 409),
        ("pending", "rollback", None, 409),
        ("refused", "label", {"false_fix": True}, 409),
        ("unknown", "approve", None, 404),
        ("unknown", "label", {"false_fix": True}, 404),
        ("succeeded", "label", {"false_fix": "yes"}, 422),
        ("succeeded", "label", {"false_fix": True, "actor": "root"}, 422),
        ("succeeded", "label", {"false_fix": True, "comment": "x" * 2001}, 422),
        ("succeeded", "label", {}, 422),
    ],
)
def test_refused_operator_actions_write_nothing(
    calm: tuple[World, httpx.Client], fix: str, verb: str, payload: Any, status: int
) -> None:
    world, client = calm
    fix_id = world.fixes.get(fix, 987654)
    before = world.counts()
    response = client.post(f"/api/v1/fixes/{fix_id}/{verb}", headers=auth(OPERATOR), json=payload)
    assert response.status_code == status, response.text
    assert "detail" in body(response)
    assert world.counts() == before
