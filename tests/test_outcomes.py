"""The service judges its own fixes (effective / ineffective / unneeded) and the KPIs use it.

Every case is a real (in-memory) store holding what the service would have written: the
decision, the fix with its events, and the samples around it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from autofix.audit import AuditLog
from autofix.collect.base import format_labels
from autofix.kpi import compute_kpis
from autofix.outcomes import judge_fixes
from autofix.pipeline import Pipeline
from autofix.store import MetricStore

T0 = datetime(2026, 3, 2, 12, 0)
S = timedelta(seconds=1)
WINDOW = timedelta(minutes=5)
HOST = "h1"

PIPELINE = Pipeline.model_validate(
    {
        "targets": [
            {"name": "news-db", "kind": "postgres", "dsn": "postgresql:///news"},
            {
                "name": "web",
                "kind": "supervisor",
                "program": "web",
                "depends_on": ["news-db"],
                "recovery": {"actions": [{"action": "service.restart"}]},
            },
            {"name": "logs", "kind": "logdir", "path": "/var/log/news"},
        ],
        "rules": [
            {
                "name": "logs-full",
                "when": {
                    "type": "threshold",
                    "metric": "autofix_dir_size_bytes",
                    "match": {"target": "logs"},
                    "of_capacity": True,
                    "above": 0.9,
                },
                "actions": [{"action": "files.rotate_logs", "target": "logs"}],
            },
            {
                "name": "web-unresponsive",
                "when": {
                    "type": "threshold",
                    "metric": "probe_up",
                    "match": {"target": "web"},
                    "below": 1,
                },
                "actions": [{"action": "service.restart", "target": "web"}],
            },
            {
                "name": "db-connections-high",
                "when": {
                    "type": "threshold",
                    "metric": "pg_roles_connections",
                    "match": {"target": "news-db"},
                    "of_capacity": True,
                    "above": 0.9,
                },
                "actions": [{"action": "postgres.terminate_idle", "target": "news-db"}],
            },
            {
                "name": "disk-exhaustion",
                "when": {
                    "type": "exhaustion",
                    "metric": "autofix_dir_size_bytes",
                    "within": "1h",
                },
                "actions": [{"action": "files.rotate_logs", "target": "logs"}],
            },
        ],
    }
)


class World:
    """A store and a clock the cases move forward."""

    def __init__(self) -> None:
        self.now = T0
        self.store = MetricStore(":memory:")
        self.audit = AuditLog(self.store, lambda: self.now)
        self.series: dict[str, int] = {}

    def sample(self, metric: str, target: str, at: datetime, value: float, cap: float) -> None:
        frame = pd.DataFrame(
            {
                "ts": [at],
                "host": [HOST],
                "metric": [metric],
                "labels": [format_labels({"target": target})],
                "value": [value],
                "unit": [""],
                "capacity": [cap],
            }
        )
        self.store.write(frame)

    def series_id(self, metric: str, target: str) -> int:
        row = self.store.query(
            "SELECT series_id FROM series WHERE metric = ? AND labels = ?",
            [metric, format_labels({"target": target})],
        )
        return int(row["series_id"].iloc[0])

    def decision(
        self, decision_id: str, rule: str, kind: str, target: str, series_id: int | None,
        inputs: dict[str, Any],
    ) -> None:  # fmt: skip
        self.store.execute(
            "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                decision_id, self.now, self.now, rule, kind, "health", f"target:{target}",
                series_id, target, "auto", self.now + WINDOW, "why", json.dumps(inputs),
            ],
        )  # fmt: skip

    def fix(self, action: str, target: str, decision_id: str, state: str, **inputs: Any) -> int:
        fix_id = self.audit.create(action, target, None, {}, "test", inputs, decision_id)
        self.now += S
        self.audit.append(fix_id, "running", "apply")
        self.now += 2 * S
        self.audit.append(fix_id, state, "verify", error=None if state == "succeeded" else "no")
        return fix_id

    def judge(self, after: timedelta = timedelta(0)) -> dict[int, tuple[str, bool, str]]:
        self.now += after
        judge_fixes(self.store, PIPELINE, self.now, window=WINDOW, host=HOST)
        rows = self.store.query(
            """SELECT fix_id, arg_max(outcome, judged_at) AS outcome,
                      arg_max(final, judged_at) AS final, arg_max(reason, judged_at) AS reason
               FROM fix_outcomes GROUP BY fix_id"""
        )
        return {
            int(r["fix_id"]): (str(r["outcome"]), bool(r["final"]), str(r["reason"]))
            for r in rows.to_dict("records")
        }


@pytest.fixture
def world() -> World:
    return World()


def test_a_restart_during_a_database_outage_is_unneeded(world: World) -> None:
    world.sample("probe_up", "news-db", T0 - S, 0.0, float("nan"))
    world.decision("d1", "recovery:web", "health", "web", None, {"cause": "error"})
    fix = world.fix("service.restart", "web", "d1", "failed", cause="error")
    outcome, final, reason = world.judge()[fix]
    assert (outcome, final) == ("unneeded", False)
    assert "news-db" in reason


def test_a_hang_is_the_workers_own_fault_even_during_an_outage(world: World) -> None:
    world.sample("probe_up", "news-db", T0 - S, 0.0, float("nan"))
    world.decision("d2", "recovery:web", "health", "web", None, {"cause": "hang"})
    fix = world.fix("service.restart", "web", "d2", "succeeded", cause="hang")
    assert world.judge()[fix][:2] == ("effective", False)  # provisional at once
    assert world.judge(WINDOW)[fix][:2] == ("effective", True)


def test_a_fix_whose_condition_did_not_clear_is_ineffective(world: World) -> None:
    world.sample("autofix_dir_size_bytes", "logs", T0, 95.0, 100.0)
    sid = world.series_id("autofix_dir_size_bytes", "logs")
    world.decision("d3", "logs-full", "threshold", "logs", sid, {"rule": "logs-full"})
    fix = world.fix("files.rotate_logs", "logs", "d3", "succeeded", rule="logs-full")
    assert world.judge()[fix][:2] == ("effective", False)
    for i in range(1, 10):  # the logs keep the disk full after the "fix"
        world.sample("autofix_dir_size_bytes", "logs", world.now + i * 20 * S, 96.0, 100.0)
    outcome, final, reason = world.judge(WINDOW)[fix]
    assert (outcome, final) == ("ineffective", True)
    assert "persisted" in reason


def test_a_health_fault_that_came_back_is_ineffective(world: World) -> None:
    world.decision("d4", "recovery:web", "health", "web", None, {"cause": "hang"})
    fix = world.fix("service.restart", "web", "d4", "succeeded", cause="hang")
    world.now += 30 * S
    world.decision("d5", "recovery:web", "health", "web", None, {"cause": "hang"})
    assert world.judge(WINDOW)[fix][0] == "ineffective"


def _hung_web_restarted(world: World) -> int:
    """A rule restarts a web worker whose probe failed (it hung); the probe answers again."""
    world.sample("probe_up", "web", T0, 0.0, float("nan"))
    sid = world.series_id("probe_up", "web")
    world.decision("w1", "web-unresponsive", "threshold", "web", sid, {"rule": "web-unresponsive"})
    fix = world.fix("service.restart", "web", "w1", "succeeded", rule="web-unresponsive")
    world.sample("probe_up", "web", world.now + S, 1.0, float("nan"))
    return fix


def test_a_symptom_that_came_back_with_its_dependency_is_not_the_fixs_failure(
    world: World,
) -> None:
    fix = _hung_web_restarted(world)
    world.now += 20 * S  # the database then runs out of connections: the web answers 503
    world.decision("n1", "db-connections-high", "threshold", "news-db", None, {})
    for i in range(1, 10):
        world.sample("probe_up", "web", world.now + i * 10 * S, 0.0, float("nan"))
    outcome, final, reason = world.judge(WINDOW)[fix]
    assert (outcome, final) == ("effective", True), reason
    assert "news-db" in reason


def test_a_symptom_that_came_back_on_its_own_makes_the_fix_ineffective(world: World) -> None:
    fix = _hung_web_restarted(world)
    world.now += 20 * S
    for i in range(1, 10):
        world.sample("probe_up", "web", world.now + i * 10 * S, 0.0, float("nan"))
    outcome, final, reason = world.judge(WINDOW)[fix]
    assert (outcome, final) == ("ineffective", True), reason


def test_a_restart_while_the_database_had_a_resource_condition_is_unneeded(
    world: World,
) -> None:
    world.decision("n2", "db-connections-high", "threshold", "news-db", None, {})
    world.now += 2 * S  # its fix waits for a cooldown; the web's probe fails meanwhile
    world.sample("probe_up", "web", world.now, 0.0, float("nan"))
    sid = world.series_id("probe_up", "web")
    world.decision("w2", "web-unresponsive", "threshold", "web", sid, {"rule": "web-unresponsive"})
    fix = world.fix("service.restart", "web", "w2", "succeeded", rule="web-unresponsive")
    outcome, _, reason = world.judge()[fix]
    assert outcome == "unneeded"
    assert "db-connections-high" in reason


def test_kpis_count_outcomes_labels_win_and_preventive_fixes(world: World) -> None:
    for i, level in enumerate([50.0, 60.0, 70.0]):
        world.sample("autofix_dir_size_bytes", "logs", T0 - (3 - i) * 60 * S, level, 100.0)
    sid = world.series_id("autofix_dir_size_bytes", "logs")
    world.decision("d6", "disk-exhaustion", "exhaustion", "logs", sid, {"rule": "x"})
    preventive = world.fix("files.rotate_logs", "logs", "d6", "succeeded", rule="disk-exhaustion")
    world.sample("probe_up", "news-db", world.now, 0.0, float("nan"))
    world.decision("d7", "recovery:web", "health", "web", None, {"cause": "error"})
    unneeded = world.fix("service.restart", "web", "d7", "failed", cause="error")
    world.judge()
    kpis = compute_kpis(world.store, world.now, window=timedelta(hours=1))
    assert (kpis.judged_fixes, kpis.unneeded_fixes, kpis.effective_fixes) == (2, 1, 1)
    assert kpis.false_fix_rate == pytest.approx(0.5)
    assert kpis.false_fix_rate_outcomes == pytest.approx(0.5)
    assert (kpis.exhaustion_fixes, kpis.preventive_fixes) == (1, 1)
    assert kpis.preventive_execution_rate == 1.0
    # An operator says the restart was right after all: the label wins over the outcome.
    world.audit.label(unneeded, False, "alice", "the worker was wedged too")
    world.now += S
    kpis = compute_kpis(world.store, world.now, window=timedelta(hours=1))
    assert kpis.false_fix_rate == 0.0
    assert kpis.false_fix_rate_outcomes == pytest.approx(0.5)  # what autofix itself said
    assert preventive in world.judge()


def test_a_dependency_that_failed_while_the_fix_ran_does_not_explain_its_decision(
    world: World,
) -> None:
    # The worker hung with the database fine; the database ran out of connections while
    # the restart was under way. That says nothing about why the restart was needed.
    fix = _hung_web_restarted(world)
    world.sample("probe_up", "news-db", T0 + 2 * S, 0.0, float("nan"))
    outcome, final, reason = world.judge()[fix]
    assert (outcome, final) == ("effective", False), reason
