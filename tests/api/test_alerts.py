"""The Alertmanager webhook: alert rules decide and fix; hostile payloads change nothing.

Every hostile case checks that no table an alert could write to grew, and that the files
of every target are where they were.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from autofix.policy import Alert, decide_alerts, judge_alerts
from tests.api.world import (
    OPERATOR,
    VIEWER,
    World,
    alert,
    auth,
    body,
    make_world,
    pipeline,
    serving,
    webhook,
)
from tests.promstack import alertmanager, stack_or_skip

HOOK = "/api/v1/alerts/alertmanager"
NOW = datetime(2026, 3, 2, 12, 0)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with make_world(tmp_path) as w:
        for target in ("logs-a", "logs-b", "logs-c"):
            w.stale(target, "canary.tmp")
        yield w


@pytest.fixture
def client(world: World) -> Iterator[httpx.Client]:
    with serving(world) as c:
        c.headers.update(auth(OPERATOR))
        yield c


@pytest.fixture(scope="module")
def calm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, httpx.Client]]:
    """One world and server for the cases that must write nothing (so they can share)."""
    with make_world(tmp_path_factory.mktemp("calm")) as w, serving(w) as c:
        for target in ("logs-a", "logs-b", "logs-c"):
            w.stale(target, "canary.tmp")
        c.headers.update(auth(OPERATOR))
        yield w, c


def _files(world: World) -> list[str]:
    return sorted(str(p.relative_to(world.root)) for p in world.root.rglob("*"))


def _post(client: httpx.Client, payload: Any) -> dict[str, Any]:
    response = client.post(HOOK, json=payload)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = body(response)
    return result


# -- decisions -----------------------------------------------------------------------------


def test_a_firing_alert_fixes_the_labelled_target(world: World, client: httpx.Client) -> None:
    # Labels that look like parameters or paths are just labels: the rule's params count.
    hostile_params = {"older_than": "0s", "pattern": "*", "subdir": "../..", "params": "{}"}
    result = _post(client, webhook(alert("DiskFilling", target="logs-b", **hostile_params)))
    assert (result["received"], result["firing"], result["decided"]) == (1, 1, 1)
    (verdict,) = result["results"]
    assert (verdict["outcome"], verdict["rule"], verdict["target"], verdict["mode"]) == (
        "decided",
        "disk-filling",
        "logs-b",
        "auto",
    )
    (fix,) = verdict["fixes"]
    assert (fix["action"], fix["target"], fix["state"]) == (
        "files.clean_temp",
        "logs-b",
        "succeeded",
    )
    assert fix["params"] == {"older_than": "1d"}
    assert fix["requested_by"] == "api:ops"
    assert not (world.root / "logs-b" / "canary.tmp").exists()  # quarantined, restorable
    assert (world.root / "logs-a" / "canary.tmp").exists()
    decision = world.store.query(
        "SELECT source, rule, kind, subject, target, detected_at FROM decisions"
    ).to_dict("records")
    assert decision == [
        {"source": "alert", "rule": "disk-filling", "kind": "alert",
         "subject": "alert:DiskFilling:logs-b", "target": "logs-b",
         "detected_at": datetime(2026, 3, 2, 11, 59, 0, 123456)}
    ]  # fmt: skip
    # Alertmanager re-sends a firing alert every group interval: one decision per repeat.
    again = _post(client, webhook(alert("DiskFilling", target="logs-b")))
    assert [r["outcome"] for r in again["results"]] == ["repeat"]
    assert len(world.store._run("SELECT * FROM decisions")) == 1


def test_a_rule_with_its_own_target_and_a_match(world: World, client: httpx.Client) -> None:
    unmatched = _post(client, webhook(alert("SpoolFull", severity="warning")))
    assert [r["outcome"] for r in unmatched["results"]] == ["ignored"]
    result = _post(client, webhook(alert("SpoolFull", severity="critical")))
    (verdict,) = result["results"]
    assert verdict["target"] == "logs-b"
    assert verdict["mode"] == "approve"
    assert [f["state"] for f in verdict["fixes"]] == ["pending_approval"]
    assert (world.root / "logs-b" / "canary.tmp").exists()  # waits for a human


def test_no_target_means_manual_intervention(world: World, client: httpx.Client) -> None:
    result = _post(client, webhook(alert("NeedsHuman"), alert("DiskFilling")))
    human, disk = result["results"]
    assert human["outcome"] == "decided"
    assert human["fixes"] == []
    assert "manual intervention" in human["reason"]
    assert disk["outcome"] == "decided"
    assert disk["fixes"] == []
    assert "no target label" in disk["reason"]
    # Neither has a fix to try: both are recorded and escalated to a human.
    escalated = world.store._run("SELECT reason FROM escalations WHERE fix_id IS NULL")
    assert len(escalated) == 2
    assert all(reason.startswith("manual intervention: alert ") for (reason,) in escalated)


def test_resolved_and_unknown_alerts_change_nothing(calm: tuple[World, httpx.Client]) -> None:
    world, client = calm
    before, files = world.counts(), _files(world)
    result = _post(
        client,
        webhook(alert("DiskFilling", "resolved", target="logs-a"), alert("Unknown", target="x")),
    )
    assert [(r["outcome"], r["reason"]) for r in result["results"]] == [
        ("ignored", "resolved: decides nothing"),
        ("ignored", "no rule for alert 'Unknown'"),
    ]
    assert (world.counts(), _files(world)) == (before, files)


# -- hostile payloads ------------------------------------------------------------------------

HOSTILE_TARGETS = [
    "logs-a; rm -rf /",
    "$(touch /tmp/autofix-pwned)",
    "`id`",
    "logs-a && reboot",
    "../../etc/passwd",
    "/etc",
    "logs-a/../logs-b",
    "logs-a\x00",
    "logs-a\n",
    " logs-a",
    "LOGS-A",
    "logs-*",
    "x" * 1024,
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_an_undeclared_target_label_is_refused(
    calm: tuple[World, httpx.Client], target: str
) -> None:
    world, client = calm
    before, files = world.counts(), _files(world)
    result = _post(client, webhook(alert("DiskFilling", target=target)))
    (verdict,) = result["results"]
    assert verdict["outcome"] == "refused"
    assert verdict["fixes"] == []
    assert "is not a declared target" in verdict["reason"]
    assert len(verdict["reason"]) < 200  # the label is quoted, cut short
    assert (world.counts(), _files(world)) == (before, files)
    assert not Path("/tmp/autofix-pwned").exists()


def _big_labels() -> dict[str, str]:
    return {f"l{i}": "v" for i in range(65)}


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{not json", 422),
        (b"", 422),
        (b"null", 422),
        ({"version": "3", "status": "firing", "alerts": []}, 422),
        ({"version": "4", "status": "firing"}, 422),
        ({"version": "4", "status": "burning", "alerts": []}, 422),
        (webhook(alert("DiskFilling", status="pending")), 422),
        ({**webhook(), "alerts": [{"status": "firing", "labels": {"alertname": 1}}]}, 422),
        ({**webhook(), "alerts": [{"status": "firing", "labels": {"a;b": "x"}}]}, 422),
        ({**webhook(), "alerts": [{"status": "firing", "labels": {"../x": "x"}}]}, 422),
        ({**webhook(), "alerts": [{"status": "firing", "labels": {"t": {"x": 1}}}]}, 422),
        ({**webhook(), "alerts": [{"status": "firing", "labels": ["target", "logs-a"]}]}, 422),
        ({**webhook(), "alerts": [{"status": "firing", "labels": _big_labels()}]}, 422),
        ({**webhook(), "alerts": [{**alert("DiskFilling"), "fingerprint": "$(id)"}]}, 422),
        ({**webhook(), "alerts": [{**alert("DiskFilling"), "startsAt": "yesterday"}]}, 422),
        ({**webhook(), "alerts": [alert("DiskFilling", target="y" * 1025)]}, 422),
        ({**webhook(), "alerts": [alert("DiskFilling", target="logs-a")] * 1001}, 422),
        ({**webhook(), "truncatedAlerts": -1}, 422),
    ],
)
def test_malformed_payloads_are_422_and_write_nothing(
    calm: tuple[World, httpx.Client], payload: Any, status: int
) -> None:
    world, client = calm
    before, files = world.counts(), _files(world)
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = client.post(HOOK, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text[:300]
    assert "detail" in body(response)
    assert (world.counts(), _files(world)) == (before, files)


def test_huge_payloads_are_413_before_parsing(calm: tuple[World, httpx.Client]) -> None:
    world, client = calm
    before, files = world.counts(), _files(world)
    many = webhook(*[alert("DiskFilling", target="logs-a", note="n" * 900)] * 1200)
    data = json.dumps(many).encode()
    assert len(data) > 1_048_576
    sized = client.post(HOOK, content=data, headers={"Content-Type": "application/json"})
    assert sized.status_code == 413
    assert "larger than 1048576" in body(sized)["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts streamed bytes
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    streamed = client.post(HOOK, content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert (world.counts(), _files(world)) == (before, files)


def test_a_viewer_cannot_post_alerts(calm: tuple[World, httpx.Client]) -> None:
    world, client = calm
    before = world.counts()
    response = client.post(
        HOOK, json=webhook(alert("DiskFilling", target="logs-a")), headers=auth(VIEWER)
    )
    assert response.status_code == 403
    assert world.counts() == before


# -- the pure half: policy.judge_alerts / decide_alerts --------------------------------------


def test_judge_alerts_is_pure_and_never_uses_labels_as_parameters(tmp_path: Path) -> None:
    pipe = pipeline(tmp_path)
    alerts = [
        Alert("firing", {"alertname": "DiskFilling", "target": "logs-a", "older_than": "0s"}),
        Alert("firing", {"alertname": "DiskFilling", "target": "logs-a"}),  # same subject
        Alert("firing", {"alertname": "DiskFilling", "target": "nope"}),
        Alert("resolved", {"alertname": "DiskFilling", "target": "logs-c"}),
    ]
    verdicts = judge_alerts(pipe.rules, pipe, alerts, NOW, {}, "approve")
    assert [v.outcome for v in verdicts] == ["decided", "repeat", "refused", "ignored"]
    decision = verdicts[0].decision
    assert decision is not None
    (candidate,) = decision.decision.candidates
    assert (candidate.action, candidate.target, dict(candidate.params)) == (
        "files.clean_temp",
        "logs-a",
        {"older_than": "1d"},
    )
    assert decision.detected_at == NOW
    assert decision.series_id is None
    assert decide_alerts(pipe.rules, pipe, alerts, NOW) == [decision]
    # Decided just now (a frozen clock, a repeat of 0): never twice at one moment.
    recent = {decision.key: NOW}
    assert decide_alerts(pipe.rules, pipe, alerts[:1], NOW, recent) == []


def test_alert_rules_are_skipped_by_the_metric_policy(world: World) -> None:
    """``type: alert`` rules have no metric: the remediate job's observe/decide pass them by."""
    obs = world.service.observe(world.now)
    from autofix.policy import decide

    assert decide(world.service.pipeline.rules, world.service.pipeline, obs, world.now) == []


# -- a real Alertmanager posting to the API (docs/api.md's receiver config) -------------------

AM_TOKEN = "alertmanager-token-0123456789"
AM_CONFIG = """
route:
  receiver: autofix
  group_by: [alertname, target]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: autofix
    webhook_configs:
      - url: {url}
        send_resolved: false
        max_alerts: 100
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token_file}
"""


@pytest.fixture
def delivered(tmp_path: Path) -> Iterator[tuple[World, Any]]:
    tokens = f"alertmanager:operator:{AM_TOKEN}"
    with make_world(tmp_path, api_tokens=tokens) as world, serving(world) as client:
        world.stale("logs-b", "canary.tmp")
        token_file = tmp_path / "autofix.token"
        token_file.write_text(AM_TOKEN + "\n")
        config = AM_CONFIG.format(url=f"{client.base_url}{HOOK}", token_file=token_file)
        for manager in stack_or_skip(lambda: alertmanager(config=config)):
            yield world, manager


def test_a_real_alertmanager_triggers_a_fix(delivered: tuple[World, Any]) -> None:
    world, manager = delivered
    fired = httpx.post(
        f"{manager.url}/api/v2/alerts",
        json=[
            {"labels": {"alertname": "DiskFilling", "target": "logs-b", "severity": "page"},
             "annotations": {"summary": "disk filling"}}
        ],
    )  # fmt: skip
    assert fired.status_code == 200, fired.text
    deadline = time.monotonic() + 30
    fixes: list[Any] = []
    done = {"succeeded", "failed", "rolled_back", "refused", "noop", "planned"}
    while time.monotonic() < deadline and not (fixes and all(f.state in done for f in fixes)):
        # The alert's fix is recorded at once and finishes after its verify wait.
        fixes = [f for f in world.service.executor.audit.list() if f.target == "logs-b"]
        time.sleep(0.1)
    assert [(f.action, f.state, f.requested_by) for f in fixes] == [
        ("files.clean_temp", "succeeded", "api:alertmanager")
    ]
    assert not (world.root / "logs-b" / "canary.tmp").exists()


@pytest.mark.parametrize(
    ("path", "content"),
    [
        (HOOK, b'{"version": "4", "status": "firing", "alerts": [], "truncatedAlerts": NaN}'),
        (HOOK, b'{"version": "4", "status": "firing", "alerts": [], "truncatedAlerts": Infinity}'),
        (HOOK, b'{"version": "4", "status": "firing", "alerts": [], "truncatedAlerts": -Infinity}'),
        ("/api/v1/fixes/1/label", b'{"false_fix": NaN}'),
        ("/api/v1/fixes/1/label", b'{"false_fix": true, "comment": Infinity}'),
    ],
)
def test_nan_and_infinity_in_a_body_are_422_not_500(
    calm: tuple[World, httpx.Client], path: str, content: bytes
) -> None:
    world, client = calm
    before, files = world.counts(), _files(world)
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert "detail" in body(response)
    assert (world.counts(), _files(world)) == (before, files)
