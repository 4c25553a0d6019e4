"""The demo's pipeline: the shipped file pointed at the demo stack, structurally, faster."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from autofix.config import parse_duration
from autofix.demo.pipeline import Endpoints, WorkerEndpoint, compressed_settings, render_pipeline
from autofix.errors import ConfigError
from autofix.pipeline import SupervisorTarget, load_pipeline

SHIPPED = Path(__file__).parents[2] / "pipelines" / "news-delivery.yaml"


def _endpoints(tmp_path: Path, quota: float | None = None) -> Endpoints:
    return Endpoints(
        supervisor_url="http://127.0.0.1:9101/RPC2",
        workers=[
            WorkerEndpoint(
                "web-1", "news-web-1", "http://127.0.0.1:8081/health", r"app web-1( |$)"
            ),
            WorkerEndpoint(
                "web-2", "news-web-2", "http://127.0.0.1:8082/health", r"app web-2( |$)", 300e6
            ),
        ],
        postgres_dsn="postgresql://autofix:secret@127.0.0.1:5999/news",
        redis_url="redis://127.0.0.1:6999/0",
        logs=tmp_path / "logs",
        logs_quota=quota,
        scratch=tmp_path / "dirs",
    )


def test_shipped_file_is_pointed_at_the_stack(tmp_path: Path) -> None:
    rendered = render_pipeline(SHIPPED, _endpoints(tmp_path, quota=64e6), speedup=60)
    pipeline = rendered.write(tmp_path / "demo.yaml")  # validates like `autofix serve`
    supervised = [t for t in pipeline.targets if isinstance(t, SupervisorTarget)]
    assert [(t.name, t.program, t.health_url) for t in supervised] == [
        ("web-1", "news-web-1", "http://127.0.0.1:8081/health"),
        ("web-2", "news-web-2", "http://127.0.0.1:8082/health"),
    ]
    assert all(t.url == "http://127.0.0.1:9101/RPC2" for t in supervised)
    by_name = {t.name: t for t in pipeline.targets}
    assert by_name["web-2-http"].url == "http://127.0.0.1:8082/health"  # type: ignore[union-attr]
    assert by_name["web-1-workers"].cmdline == r"app web-1( |$)"  # type: ignore[union-attr]
    assert by_name["news-db"].dsn.endswith("@127.0.0.1:5999/news")  # type: ignore[union-attr]
    assert by_name["cache"].url == "redis://127.0.0.1:6999/0"  # type: ignore[union-attr]
    logs = by_name["logs"]
    assert logs.path == tmp_path / "logs"  # type: ignore[union-attr]
    assert logs.capacity == 64e6  # type: ignore[union-attr]
    assert by_name["tmp"].path == tmp_path / "dirs" / "tmp"  # type: ignore[union-attr]
    assert "web" not in by_name
    assert "web-http" not in by_name
    # One worker's endpoint depends on that worker (and what every worker depends on).
    assert by_name["web-2-http"].depends_on == ["web-2", "news-db", "cache"]
    assert by_name["web-1-workers"].depends_on == ["web-1"]
    assert by_name["web-1"].depends_on == ["news-db", "cache"]
    # The demo's worker dies at its memory budget: that is its limit, not the file's.
    assert by_name["web-2"].memory_limit == 300e6  # type: ignore[union-attr]
    assert by_name["web-1"].memory_limit == 512 * 2**20  # type: ignore[union-attr]


def test_rules_and_their_modes_are_kept(tmp_path: Path) -> None:
    source = yaml.safe_load(SHIPPED.read_text())
    rendered = render_pipeline(SHIPPED, _endpoints(tmp_path), speedup=60)
    pipeline = rendered.write(tmp_path / "demo.yaml")
    rules = {r.name: r for r in pipeline.rules}
    for rule in source["rules"]:
        copies = [
            r for n, r in rules.items() if n == rule["name"] or n.startswith(rule["name"] + ".")
        ]
        assert copies, rule["name"]
        for copy in copies:
            assert copy.mode == rule.get("mode"), copy.name
            assert copy.when.type == rule["when"]["type"]
            assert [a.action for a in copy.actions] == [a["action"] for a in rule["actions"]]
    # A rule naming the web service is one rule per worker, acting on that worker.
    assert rules["service-unresponsive.web-2"].when.match == {"target": "web-2-http"}
    assert [a.target for a in rules["service-unresponsive.web-2"].actions] == ["web-2"]
    assert "service-unresponsive" not in rules
    # A rule over the web group stays one rule: it fires per worker and acts on that one.
    group_rule = rules["memory-exhaustion"]
    assert group_rule.target is not None
    assert group_rule.target.group == "web"
    assert [a.target for a in group_rule.actions] == [None]
    assert {t.name for t in group_rule.target.members(pipeline.targets)} == {"web-1", "web-2"}
    # A rule about another target stays one rule.
    assert "db-connection-failed" in rules


def test_the_clock_is_compressed(tmp_path: Path) -> None:
    source = yaml.safe_load(SHIPPED.read_text())
    rendered = render_pipeline(SHIPPED, _endpoints(tmp_path), speedup=60)
    pipeline = rendered.write(tmp_path / "demo.yaml")
    original = {r["name"]: r for r in source["rules"]}
    for rule in pipeline.rules:
        base = original[rule.name.split(".")[0]]
        hold = base["when"].get("for")
        if hold is not None:
            assert rule.when.hold == parse_duration(hold) / 60  # type: ignore[union-attr]
        assert rule.repeat == parse_duration(base.get("repeat", "15m")) / 60
        for action, spec in zip(rule.actions, base["actions"], strict=True):
            if "idle_for" in spec.get("params", {}):
                assert action.params["idle_for"] == "1s"  # 1m / 60
    for name in ("collect", "remediate", "health", "snapshot"):
        job = pipeline.job(name)
        assert job.enabled
        assert job.every is not None
        assert job.every >= timedelta(seconds=1)
    assert pipeline.job("remediate").every == timedelta(seconds=1)
    # Wall-clock schedules (crontab lines, maintenance windows) are off, and say so.
    for name in ("train", "report", "retention", "kpi", "maintenance"):
        assert not pipeline.job(name).enabled
    assert any("off (wall-clock schedules)" in note for note in rendered.notes)
    settings = compressed_settings(60)
    assert settings["AUTOFIX_FIX_COOLDOWN"] == "10s"
    assert settings["AUTOFIX_KPI_MANUAL_MTTR"] == "30s"
    assert settings["AUTOFIX_FIX_VERIFY_WAIT"] == "1s"  # floored: a re-read needs time
    # How long a fixed target's dependents wait, and when a fix is judged: demo time too.
    assert settings["AUTOFIX_FIX_SETTLE"] == "1s"
    assert settings["AUTOFIX_FIX_OUTCOME_WINDOW"] == "15s"
    # History read at the resolution it is collected at (1-second buckets), not 5 s.
    from autofix.predict import bucket_step

    lookback = timedelta(seconds=int(settings["AUTOFIX_PREDICT_LOOKBACK"].removesuffix("s")))
    assert bucket_step(lookback) == timedelta(seconds=1)


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_one_supervisor_target_per_worker_is_mapped_in_order(tmp_path: Path) -> None:
    doc = {
        "targets": [
            {"name": "front-a", "kind": "supervisor", "program": "a",
             "health_url": "http://10.0.0.1:7001/healthz", "group": "front"},
            {"name": "front-b", "kind": "supervisor", "program": "b",
             "health_url": "http://10.0.0.1:7002/healthz", "group": "front"},
            {"name": "front-b-http", "kind": "http", "url": "http://10.0.0.1:7002/healthz"},
            {"name": "redis-port", "kind": "tcp", "host": "10.0.0.9", "port": 6379},
        ],
        "rules": [
            {"name": "down", "when": {"type": "threshold", "metric": "probe_up",
             "match": {"target": "front-b-http"}, "below": 1, "for": "1m"},
             "actions": [{"action": "service.restart", "target": "front-b"}], "mode": "auto"},
        ],
    }  # fmt: skip
    rendered = render_pipeline(_write(tmp_path, doc), _endpoints(tmp_path), speedup=30)
    pipeline = rendered.write(tmp_path / "demo.yaml")
    by_name = {t.name: t for t in pipeline.targets}
    assert by_name["front-a"].program == "news-web-1"  # type: ignore[union-attr]
    assert by_name["front-b"].health_url == "http://127.0.0.1:8082/healthz"  # type: ignore[union-attr]
    assert by_name["front-b-http"].url == "http://127.0.0.1:8082/healthz"  # type: ignore[union-attr]
    assert by_name["redis-port"].port == 6999  # type: ignore[union-attr]
    assert [r.name for r in pipeline.rules] == ["down"]
    assert pipeline.rules[0].when.hold == timedelta(seconds=2)  # type: ignore[union-attr]


def test_a_file_the_demo_cannot_map_is_a_clear_error(tmp_path: Path) -> None:
    doc = {
        "targets": [{"name": f"s{i}", "kind": "supervisor", "program": f"p{i}"} for i in range(3)]
    }
    with pytest.raises(ConfigError, match="declares 3 supervisor targets"):
        render_pipeline(_write(tmp_path, doc), _endpoints(tmp_path))
    (tmp_path / "bad.yaml").write_text("targets: [{name: x, kind: nope}]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        render_pipeline(tmp_path / "bad.yaml", _endpoints(tmp_path))


def test_the_shipped_file_itself_is_unchanged(tmp_path: Path) -> None:
    before = SHIPPED.read_bytes()
    render_pipeline(SHIPPED, _endpoints(tmp_path))
    assert SHIPPED.read_bytes() == before
    assert load_pipeline(SHIPPED).target("web") is not None
