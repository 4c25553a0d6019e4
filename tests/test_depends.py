"""Dependencies between targets: the graph, inhibition, and what the pipelines file refuses."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from autofix.depends import (
    Inhibitor,
    TargetStates,
    dependencies,
    dependents,
    explained_by,
    inhibitor,
)
from autofix.errors import ConfigError
from autofix.gates import PastFix, Policy, Request, evaluate
from autofix.pipeline import Pipeline, load_pipeline

STACK: list[dict[str, Any]] = [
    {"name": "news-db", "kind": "postgres", "dsn": "postgresql:///news"},
    {"name": "cache", "kind": "redis", "url": "redis://127.0.0.1:6379/0"},
    {
        "name": "web",
        "kind": "supervisor",
        "program": "web",
        "health_url": "http://127.0.0.1:8080/health",
        "depends_on": ["news-db", "cache"],
    },
    {"name": "web-http", "kind": "http", "url": "http://127.0.0.1:8080/", "depends_on": ["web"]},
    {"name": "logs", "kind": "logdir", "path": "/var/log/news"},
]


def _pipeline(targets: list[dict[str, Any]] = STACK, **more: Any) -> Pipeline:
    return Pipeline.model_validate({"targets": targets, **more})


def test_dependencies_are_transitive_nearest_first() -> None:
    p = _pipeline()
    assert dependencies(p, "web-http") == ["web", "news-db", "cache"]
    assert dependencies(p, "news-db") == []
    assert sorted(dependents(p, "news-db")) == ["web", "web-http"]


def test_a_troubled_dependency_inhibits_a_symptom() -> None:
    p = _pipeline()
    states = TargetStates(unhealthy={"news-db": "too many clients"})
    found = inhibitor(p, symptom="web-http", acting_on=["web"], states=states)
    assert found == Inhibitor("news-db", "news-db is unhealthy: too many clients")
    # The database's own fix is not inhibited by anything.
    assert inhibitor(p, symptom="news-db", acting_on=["news-db"], states=states) is None


def test_after_its_fix_a_symptom_left_is_explained_by_a_dependency_only() -> None:
    """A hung worker restarted during a database outage: while its own fix runs, what is
    left of the symptom is the database's; the fix's own target explains nothing."""
    p = _pipeline()
    during = TargetStates(
        unhealthy={"news-db": "too many clients", "web-http": "503"},
        running={"web": "fix 7 running"},
    )
    found = explained_by(p, symptom="web-http", acting_on=["web"], states=during)
    assert found == Inhibitor("news-db", "news-db is unhealthy: too many clients")
    alone = TargetStates(unhealthy={"web-http": "hang"}, running={"web": "fix 7 running"})
    assert explained_by(p, symptom="web-http", acting_on=["web"], states=alone) is None


@pytest.mark.parametrize(
    ("states", "why"),
    [
        (TargetStates(running={"cache": "fix 3 running"}), "cache is being fixed"),
        (TargetStates(pending={"news-db": "fix 4 waiting"}), "news-db has a fix waiting"),
        (TargetStates(settling={"news-db": "fix 5 verified"}), "news-db was just fixed"),
        (TargetStates(planned={"cache": "STOPPING"}), "cache is in a planned stop"),
        (
            TargetStates(firing={"news-db": "rule db-role-connections-high holds"}),
            "news-db has a condition of its own",
        ),
    ],
)
def test_fixes_and_planned_stops_of_a_dependency_inhibit(states: TargetStates, why: str) -> None:
    found = inhibitor(_pipeline(), symptom="web", acting_on=["web"], states=states)
    assert found is not None
    assert found.reason.startswith(why)


def test_a_resource_condition_is_not_a_symptom_of_a_dependency() -> None:
    states = TargetStates(unhealthy={"news-db": "down"})
    assert (
        inhibitor(_pipeline(), symptom=None, acting_on=["web"], states=states, symptom_only=False)
        is None
    )


def test_the_target_acted_on_waits_for_its_own_restart_but_not_for_an_approval() -> None:
    p = _pipeline()
    planned = TargetStates(planned={"web": "state STARTING"})
    assert inhibitor(p, symptom=None, acting_on=["web"], states=planned, symptom_only=False)
    settling = TargetStates(settling={"web": "fix 9 verified"})
    assert inhibitor(p, symptom=None, acting_on=["web"], states=settling, symptom_only=False)
    pending = TargetStates(pending={"web": "fix 10 waiting for approval"})
    assert inhibitor(p, symptom=None, acting_on=["web"], states=pending, symptom_only=False) is None


def _load(tmp_path: Path, text: str) -> Pipeline:
    file = tmp_path / "p.yaml"
    file.write_text(text)
    return load_pipeline(file)


def test_a_dependency_cycle_is_a_config_error(tmp_path: Path) -> None:
    text = """
targets:
  - {name: a, kind: tcp, host: h, port: 1, depends_on: [b]}
  - {name: b, kind: tcp, host: h, port: 2, depends_on: [c]}
  - {name: c, kind: tcp, host: h, port: 3, depends_on: [a]}
"""
    with pytest.raises(ConfigError, match=r"dependency cycle a -> b -> c -> a"):
        _load(tmp_path, text)


def test_an_unknown_dependency_names_its_field(tmp_path: Path) -> None:
    text = "targets:\n  - {name: a, kind: tcp, host: h, port: 1, depends_on: [nowhere]}\n"
    with pytest.raises(ConfigError, match=r"targets\[0\]\.depends_on\[0\]: no target named"):
        _load(tmp_path, text)


def test_a_process_and_a_supervisor_target_recovering_one_program_overlap(
    tmp_path: Path,
) -> None:
    text = """
targets:
  - name: web
    kind: supervisor
    program: news-web
    recovery: {actions: [{action: service.restart}]}
  - name: web-workers
    kind: process
    cmdline: "news-web"
    recovery: {actions: [{action: process.restart}]}
"""
    with pytest.raises(ConfigError, match=r"targets\[1\]\.recovery: process target 'web-workers'"):
        _load(tmp_path, text)
    # Watching the program without recovering it is fine (metrics only).
    fine = text.replace("    recovery: {actions: [{action: process.restart}]}\n", "")
    assert _load(tmp_path, fine).target("web-workers") is not None


def test_two_recoveries_acting_on_one_target_overlap(tmp_path: Path) -> None:
    text = """
targets:
  - name: web
    kind: supervisor
    program: news-web
    recovery: {actions: [{action: service.restart}]}
  - name: web-http
    kind: http
    url: http://127.0.0.1:8080/
    recovery: {actions: [{action: service.restart, target: web}]}
"""
    with pytest.raises(ConfigError, match="both recover 'web'"):
        _load(tmp_path, text)


def test_causes_belong_to_recovery_actions(tmp_path: Path) -> None:
    text = """
targets:
  - {name: web, kind: supervisor, program: web}
rules:
  - name: r
    when: {type: threshold, metric: probe_up, below: 1}
    actions: [{action: service.restart, target: web, causes: [hang]}]
"""
    with pytest.raises(ConfigError, match=r"rules\[0\]\.actions\[0\]\.causes"):
        _load(tmp_path, text)


def test_a_rule_selector_must_select_something(tmp_path: Path) -> None:
    text = """
targets:
  - {name: web-1, kind: supervisor, program: web-1, group: web}
rules:
  - name: r
    target: {group: nothing}
    when: {type: threshold, metric: m, above: 1}
"""
    with pytest.raises(ConfigError, match=r"rules\[0\]\.target: selects no declared target"):
        _load(tmp_path, text)


def test_gates_count_by_cause() -> None:
    """A false restart (for an error page) does not use up the cooldown a hang needs."""
    now = datetime(2026, 3, 2, 12, 0)
    earlier = now - timedelta(seconds=30)
    false_restart = PastFix(
        1, "service.restart", "web", None, "succeeded", earlier, earlier, earlier, "health:error"
    )
    hang = Request("service.restart", "web", cause="health:hang")
    assert evaluate(hang, [false_restart], Policy(), now).allowed
    again = Request("service.restart", "web", cause="health:error")
    assert evaluate(again, [false_restart], Policy(), now).gate == "cooldown"
    # An operator's fix (no cause) holds every cause, and is held by all of them.
    manual = PastFix(2, "service.restart", "web", None, "succeeded", earlier, earlier, earlier)
    assert evaluate(hang, [manual], Policy(), now).gate == "cooldown"
    assert evaluate(Request("service.restart", "web"), [false_restart], Policy(), now).gate == (
        "cooldown"
    )
