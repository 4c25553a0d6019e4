"""The policy: pure decisions from observations and rules, and shadow-outcome scoring."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autofix.pipeline import Pipeline
from autofix.policy import Observations, decide, decision_key, lookback, score_outcome, select

NOW = datetime(2026, 3, 1, 12, 0, 0)


def pipeline(rules: list[dict[str, Any]]) -> Pipeline:
    return Pipeline.model_validate(
        {
            "targets": [
                {"name": "logs", "kind": "logdir", "path": "/tmp/logs"},
                {"name": "web", "kind": "http", "url": "http://127.0.0.1:1/"},
                {
                    "name": "web-svc",
                    "kind": "supervisor",
                    "program": "web",
                },
            ],
            "rules": rules,
        }
    )


def samples(
    metric: str,
    values: list[float],
    *,
    labels: dict[str, str] | None = None,
    step: timedelta = timedelta(seconds=15),
    end: datetime = NOW,
    capacity: float = float("nan"),
    series_id: int = 1,
) -> pd.DataFrame:
    n = len(values)
    ts = [end - step * (n - 1 - i) for i in range(n)]
    return pd.DataFrame(
        {
            "series_id": series_id,
            "host": "h1",
            "metric": metric,
            "labels": json.dumps(labels or {}, sort_keys=True, separators=(",", ":")),
            "capacity": capacity,
            "ts": pd.to_datetime(ts),
            "value": values,
        }
    )


def obs(frame: pd.DataFrame) -> Observations:
    return Observations(frame, pd.DataFrame(), pd.DataFrame())


CPU_RULE = {
    "name": "cpu-high",
    "when": {"type": "threshold", "metric": "cpu", "above": 0.9, "for": "1m"},
    "actions": [{"action": "service.restart", "target": "web-svc"}],
    "mode": "auto",
}


def test_threshold_must_hold_for_its_duration() -> None:
    p = pipeline([CPU_RULE])
    # 3 points above (45 s) — not yet the full minute.
    early = samples("cpu", [0.5, 0.5, 0.95, 0.95, 0.95, 0.95])
    assert decide(p.rules, p, obs(early), NOW) == []
    held = samples("cpu", [0.5, 0.95, 0.95, 0.95, 0.95, 0.95])
    (made,) = decide(p.rules, p, obs(held), NOW)
    assert made.rule == "cpu-high"
    assert made.detected_at == NOW - timedelta(minutes=1)
    assert made.mode == "auto"
    assert [(c.action, c.target) for c in made.decision.candidates] == [
        ("service.restart", "web-svc")
    ]
    assert made.decision.candidates[0].gates is not None
    assert made.decision.candidates[0].gates.mode == "auto"
    assert "cpu value 0.95 > 0.9" in made.reason


def test_a_dip_restarts_the_hold_and_stale_samples_decide_nothing() -> None:
    p = pipeline([CPU_RULE])
    dipped = samples("cpu", [0.95, 0.95, 0.95, 0.95, 0.95, 0.5, 0.95, 0.95])
    assert decide(p.rules, p, obs(dipped), NOW) == []
    stale = samples("cpu", [0.95] * 10, end=NOW - timedelta(minutes=10))
    assert decide(p.rules, p, obs(stale), NOW) == []


def test_repeat_suppresses_the_same_subject() -> None:
    p = pipeline([CPU_RULE])
    held = samples("cpu", [0.95] * 6)
    (made,) = decide(p.rules, p, obs(held), NOW)
    recent = {made.key: NOW - timedelta(minutes=5)}
    assert decide(p.rules, p, obs(held), NOW, recent) == []
    recent = {decision_key("cpu-high", made.subject): NOW - timedelta(minutes=20)}
    assert len(decide(p.rules, p, obs(held), NOW, recent)) == 1


def test_of_capacity_and_label_match() -> None:
    rule = {
        "name": "disk-high",
        "when": {
            "type": "threshold",
            "metric": "node_filesystem_avail_bytes",
            "match": {"mountpoint": "/"},
            "of_capacity": True,
            "below": 0.15,
        },
        "actions": [{"action": "files.rotate_logs", "target": "logs"}],
    }
    p = pipeline([rule])
    root = samples(
        "node_filesystem_avail_bytes", [10.0, 10.0], labels={"mountpoint": "/"}, capacity=100.0
    )
    other = samples(
        "node_filesystem_avail_bytes",
        [1.0, 1.0],
        labels={"mountpoint": "/boot"},
        capacity=100.0,
        series_id=2,
    )
    roomy = samples(
        "node_filesystem_avail_bytes", [50.0, 50.0], labels={"mountpoint": "/"}, capacity=100.0
    )
    (made,) = decide(p.rules, p, obs(pd.concat([root, other])), NOW, default_mode="shadow")
    assert made.series_id == 1
    assert made.mode == "shadow"  # neither the rule nor the gates say: the default
    assert decide(p.rules, p, obs(roomy), NOW) == []


def test_target_from_the_series_label_only_when_declared() -> None:
    rule = {
        "name": "down",
        "when": {"type": "threshold", "metric": "probe_up", "below": 1},
        "actions": [{"action": "service.restart"}],
    }
    p = pipeline([rule])
    declared = samples("probe_up", [0.0], labels={"target": "web-svc"})
    (made,) = decide(p.rules, p, obs(declared), NOW)
    assert made.decision.candidates[0].target == "web-svc"
    hostile_label = "../../etc; rm -rf /" + "x" * 5000 + "\n<!channel>"
    hostile = samples("probe_up", [0.0], labels={"target": hostile_label}, series_id=9)
    (refused,) = decide(p.rules, p, obs(hostile), NOW)
    assert refused.decision.candidates == []
    assert "is not declared" in refused.reason
    assert "manual intervention" in refused.reason
    assert refused.target is None  # never recorded as a target, nor escalated as one
    assert "\n" not in refused.reason
    assert len(refused.reason) < 400


def test_exhaustion_reads_fresh_predictions_only() -> None:
    rule = {
        "name": "disk-4h",
        "when": {
            "type": "exhaustion",
            "metric": "node_filesystem_avail_bytes",
            "within": "4h",
            "probability": 0.8,
        },
        "actions": [{"action": "files.rotate_logs", "target": "logs"}],
    }
    p = pipeline([rule])
    base = {
        "host": "h1",
        "metric": "node_filesystem_avail_bytes",
        "labels": "{}",
        "capacity": 100.0,
        "origin": NOW,
        "eta": NOW + timedelta(hours=2),
        "eta_lo": NOW,
        "eta_hi": NOW,
        "p_1h": 0.1,
        "p_24h": 0.99,
        "p_4d": 1.0,
        "threshold": 1.0,
        "model": "default",
        "model_version": "3",
    }
    frame = pd.DataFrame(
        [
            {**base, "series_id": 1, "made_at": NOW, "p_4h": 0.9},
            {**base, "series_id": 2, "made_at": NOW, "p_4h": 0.5},
            {**base, "series_id": 3, "made_at": NOW - timedelta(hours=3), "p_4h": 0.99},
            # A series that stopped reporting two days ago: its forecast is about the past.
            {
                **base,
                "series_id": 4,
                "made_at": NOW,
                "origin": NOW - timedelta(days=2),
                "p_4h": 0.99,
            },
        ]
    )
    made = decide(p.rules, p, Observations(pd.DataFrame(), frame, pd.DataFrame()), NOW)
    assert [m.series_id for m in made] == [1]
    assert made[0].score_at == NOW + timedelta(hours=4)
    assert "default v3" in made[0].reason


def test_anomaly_and_baseline() -> None:
    rules = [
        {
            "name": "slow",
            "when": {"type": "anomaly", "metric": "lat", "score": 0.9, "for": "30s"},
            "actions": [],
        },
        {
            "name": "perf",
            "when": {
                "type": "baseline",
                "metric": "lat",
                "window": "15m",
                "baseline": "1h",
                "performance_below": 0.8,
            },
        },
    ]
    p = pipeline(rules)
    scores = samples("lat", [0.1, 0.95, 0.97, 0.99]).assign(score=[0.1, 0.95, 0.97, 0.99])
    history = samples(
        "lat", [0.010] * 60 + [0.020] * 15, step=timedelta(minutes=1)
    )  # twice as slow in the last 15 minutes
    made = decide(p.rules, p, Observations(history, pd.DataFrame(), scores), NOW)
    assert sorted(m.rule for m in made) == ["perf", "slow"]
    perf = next(m for m in made if m.rule == "perf")
    assert "performance 0.50" in perf.reason
    steady = samples("lat", [0.010] * 75, step=timedelta(minutes=1))
    assert [
        m.rule for m in decide(p.rules, p, Observations(steady, pd.DataFrame(), scores), NOW)
    ] == ["slow"]


def test_off_rules_never_decide_and_lookback_covers_holds() -> None:
    p = pipeline([{**CPU_RULE, "mode": "off"}])
    assert decide(p.rules, p, obs(samples("cpu", [0.99] * 10)), NOW) == []
    assert lookback(p.rules) >= timedelta(minutes=1)


def test_select_matches_every_label() -> None:
    a = samples("m", [1.0], labels={"a": "1", "b": "2"})
    b = samples("m", [1.0], labels={"a": "1"}, series_id=2)
    assert select(pd.concat([a, b]), "m", {"a": "1", "b": "2"})["series_id"].tolist() == [1]
    assert select(pd.DataFrame(), "m", {}).empty


@pytest.mark.parametrize(
    ("values", "real"),
    [([0.95, 0.96, 0.97, 0.95], True), ([0.95, 0.4, 0.3, 0.2], False)],
)
def test_score_threshold_outcome(values: list[float], real: bool) -> None:
    p = pipeline([CPU_RULE])
    after = samples("cpu", values, end=NOW + timedelta(minutes=10))
    verdict = score_outcome(p.rules[0], NOW, after)
    assert verdict is not None
    assert verdict[0] is real


def test_score_exhaustion_outcome_against_capacity() -> None:
    rule = pipeline(
        [
            {
                "name": "disk",
                "when": {
                    "type": "exhaustion",
                    "metric": "node_filesystem_avail_bytes",
                    "within": "1h",
                },
            }
        ]
    ).rules[0]
    filled = samples("node_filesystem_avail_bytes", list(np.linspace(10, 0, 5)), capacity=100.0)
    verdict = score_outcome(rule, NOW, filled)
    assert verdict is not None
    assert verdict[0] is True
    spared = samples("node_filesystem_avail_bytes", [10.0, 9.0, 12.0], capacity=100.0)
    verdict = score_outcome(rule, NOW, spared)
    assert verdict is not None
    assert verdict[0] is False
    assert score_outcome(rule, NOW, spared.iloc[0:0]) is None


# -- freshness: staleness follows each series' own interval --------------------------

MEM_RULE = {
    "name": "memory-high",
    "when": {
        "type": "threshold",
        "metric": "process_resident_memory_bytes",
        "match": {"target": "web"},
        "above": 100.0,
    },
    "actions": [{"action": "service.restart", "target": "web-svc"}],
    "mode": "auto",
}


def test_a_replaced_series_decides_nothing() -> None:
    """After a restart the old pid's last (high) value is not "the latest" any more."""
    step = timedelta(seconds=1)
    old = samples(
        "process_resident_memory_bytes",
        [150.0] * 5,
        labels={"target": "web", "pid": "100"},
        step=step,
        end=NOW - 3 * step,
        series_id=1,
    )
    new = samples(
        "process_resident_memory_bytes",
        [10.0] * 3,
        labels={"target": "web", "pid": "200"},
        step=step,
        series_id=2,
    )
    p = pipeline([MEM_RULE])
    assert decide(p.rules, p, obs(pd.concat([old, new])), NOW) == []
    # Without its replacement, the same series would still have been fresh.
    (made,) = decide(p.rules, p, obs(old), NOW - 2 * step)
    assert made.series_id == 1


def test_staleness_follows_the_collection_interval() -> None:
    p = pipeline([MEM_RULE])
    every_second = samples(
        "process_resident_memory_bytes",
        [150.0] * 10,
        labels={"target": "web", "pid": "1"},
        step=timedelta(seconds=1),
        end=NOW - timedelta(seconds=5),
    )
    # Five intervals without a sample: silent, although far younger than 5 minutes.
    assert decide(p.rules, p, obs(every_second), NOW) == []
    every_minute = samples(
        "process_resident_memory_bytes",
        [150.0] * 10,
        labels={"target": "web", "pid": "1"},
        step=timedelta(minutes=1),
        end=NOW - timedelta(seconds=100),
    )
    assert len(decide(p.rules, p, obs(every_minute), NOW)) == 1


def test_a_group_rule_fires_per_member_and_acts_on_it() -> None:
    targets = [
        {"name": f"web-{i}", "kind": "supervisor", "program": f"web-{i}", "group": "web"}
        for i in (1, 2, 3)
    ] + [{"name": "db", "kind": "postgres", "dsn": "postgresql:///x", "group": "db"}]
    rule = {
        "name": "worker-memory",
        "target": {"group": "web"},
        "when": {"type": "threshold", "metric": "worker_rss_ratio", "above": 0.9},
        "actions": [{"action": "service.restart"}],
        "mode": "auto",
    }
    p = Pipeline.model_validate({"targets": targets, "rules": [rule]})
    frames = [
        samples("worker_rss_ratio", [value], labels={"target": name}, series_id=i)
        for i, (name, value) in enumerate(
            [("web-1", 0.5), ("web-2", 0.95), ("web-3", 0.2), ("db", 0.99)], start=1
        )
    ]
    (made,) = decide(p.rules, p, obs(pd.concat(frames)), NOW)
    assert made.target == "web-2"
    assert [c.target for c in made.decision.candidates] == ["web-2"]
    assert made.about == "web-2"
