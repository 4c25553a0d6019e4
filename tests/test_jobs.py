"""The Service's jobs, the scheduler and the `serve` / `run` / `jobs` commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from autofix.actions.base import CommandResult, run_argv
from autofix.config import Settings, load_settings
from autofix.errors import StoreError
from autofix.jobs import Service, build_scheduler
from autofix.pipeline import Pipeline
from autofix.store import MetricStore
from tests.clirun import AUTOFIX, run_autofix

T0 = datetime(2026, 3, 1, 12, 0, 0)
#: The spool (capacity 1000 bytes) is more than half full.
SPOOL_FULL = {
    "type": "threshold",
    "metric": "autofix_dir_size_bytes",
    "match": {"target": "spool"},
    "of_capacity": True,
    "above": 0.5,
}


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _pipeline(root: Path, rules: list[dict[str, Any]] | None = None) -> Pipeline:
    return Pipeline.model_validate(
        {
            "targets": [
                {"name": "spool", "kind": "logdir", "path": str(root), "capacity": 1000},
            ],
            "rules": rules or [],
        }
    )


def auto_settings(tmp_path: Path, **env: str) -> Settings:
    """Settings of a store in ``tmp_path`` whose rules fix at once (auto, no verify wait)."""
    return load_settings(
        environ={
            "AUTOFIX_DB_PATH": str(tmp_path / "a.duckdb"),
            "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
            "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "q"),
            "AUTOFIX_FIX_MODE": "auto",
            "AUTOFIX_FIX_VERIFY_WAIT": "0s",
            **env,
        }
    )


@contextmanager
def spool_service(
    tmp_path: Path, rules: list[dict[str, Any]], **env: str
) -> Iterator[tuple[Service, Clock, Path]]:
    """A Service over a spool directory with ``rules``, on an injected clock."""
    root = tmp_path / "spool"
    root.mkdir()
    settings = auto_settings(tmp_path, **env)
    clock = Clock()
    store = MetricStore(settings.db_path)
    svc = Service(settings, _pipeline(root, rules), store, clock=clock)
    try:
        yield svc, clock, root
    finally:
        svc.close()
        store.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Service, Clock, Path]]:
    rules = [
        {
            "name": "spool-full",
            "when": SPOOL_FULL,
            "actions": [{"action": "files.clean_temp", "params": {"older_than": "1h"}}],
        },
        {
            "name": "spool-full-shadow",
            "when": SPOOL_FULL,
            "actions": [{"action": "files.rotate_logs"}],
            "mode": "shadow",
            "horizon": "10m",
        },
    ]
    with spool_service(tmp_path, rules, AUTOFIX_SNAPSHOT_DIR=str(tmp_path / "snap")) as made:
        yield made


def _size_sample(svc: Service, ts: datetime, size: float) -> None:
    frame = pd.DataFrame(
        {
            "ts": [ts],
            "host": ["h"],
            "metric": ["autofix_dir_size_bytes"],
            "labels": ['{"target":"spool"}'],
            "value": [size],
            "unit": ["bytes"],
            "capacity": [1000.0],
        }
    )
    svc.store.write(frame)


def test_remediate_decides_records_and_fixes(service: tuple[Service, Clock, Path]) -> None:
    svc, clock, root = service
    old = root / "old.tmp"
    old.write_bytes(b"x" * 800)
    stamp = (T0 - timedelta(days=1)).replace(tzinfo=UTC).timestamp()  # old on the fake clock
    os.utime(old, (stamp, stamp))
    _size_sample(svc, clock.now - timedelta(seconds=10), 800)
    run = svc.run_job("remediate")
    assert run.ok, run.error
    assert run.summary["decisions"] == 2
    assert not old.exists()
    decisions = svc.store.query(
        "SELECT rule, mode, source, detected_at FROM decisions ORDER BY rule"
    )
    assert decisions["rule"].tolist() == ["spool-full", "spool-full-shadow"]
    assert decisions["mode"].tolist() == ["auto", "shadow"]
    assert set(decisions["source"]) == {"policy"}
    fixes = {r.action: r for r in svc.executor.audit.list()}
    assert fixes["files.clean_temp"].state == "succeeded"
    assert fixes["files.clean_temp"].requested_by == "rule:spool-full"
    assert fixes["files.rotate_logs"].state in {"planned", "noop"}
    # Within `repeat` the same subject is not decided again.
    clock.now += timedelta(minutes=1)
    _size_sample(svc, clock.now - timedelta(seconds=5), 800)
    assert svc.run_job("remediate").summary["decisions"] == 0


def test_shadow_decisions_are_scored_after_their_horizon(
    service: tuple[Service, Clock, Path],
) -> None:
    svc, clock, _ = service
    _size_sample(svc, clock.now - timedelta(seconds=10), 800)
    svc.run_job("remediate")
    # The spool empties on its own: the shadow decision was not needed.
    for minutes in range(1, 11):
        _size_sample(svc, clock.now + timedelta(minutes=minutes), 100)
    clock.now += timedelta(minutes=5)
    assert svc.score_decisions(clock.now) == 0  # horizon not over yet
    clock.now += timedelta(minutes=6)
    assert svc.score_decisions(clock.now) == 1
    outcome = svc.store.query(
        "SELECT d.rule, o.real, o.reason FROM decision_outcomes o JOIN decisions d "
        "USING (decision_id)"
    )
    assert outcome["rule"].tolist() == ["spool-full-shadow"]
    assert outcome["real"].tolist() == [False]
    from autofix.kpi import compute_kpis

    kpis = compute_kpis(svc.store, clock.now).as_dict()
    assert kpis["false_fix_rate_shadow"] == 1.0
    assert kpis["scored_decisions"] == 1


def test_a_failing_job_is_recorded_counted_and_not_fatal(
    service: tuple[Service, Clock, Path],
) -> None:
    svc, _, _ = service

    def broken() -> dict[str, Any]:
        raise StoreError("disk on fire")

    svc.jobs["retention"] = broken
    run = svc.run_job("retention")
    assert not run.ok
    assert run.error == "disk on fire"
    assert svc.failures["retention"] == 1
    rows = svc.store.query("SELECT job, ok, error, duration_ms FROM job_runs")
    assert rows.to_dict("records")[0]["error"] == "disk on fire"
    assert bool(rows["ok"].iloc[0]) is False
    assert svc.run_job("collect").ok  # the next job runs as usual


def test_health_job_records_health_and_escalates_without_recovery(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"AUTOFIX_DB_PATH": str(tmp_path / "a.duckdb"), "AUTOFIX_PROBE_TIMEOUT": "500ms"}
    )
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "gone", "kind": "tcp", "host": "127.0.0.1", "port": 1}]}
    )
    clock = Clock()
    with MetricStore(settings.db_path) as store:
        svc = Service(settings, pipeline, store, clock=clock)
        first = svc.run_job("health")
        assert first.summary["unhealthy"] == ["gone"]
        assert first.summary["recoveries"] == []  # one failure is not enough (after: 2)
        clock.now += timedelta(seconds=30)
        second = svc.run_job("health")
        assert second.summary["recoveries"][0]["escalated"] is True
        clock.now += timedelta(seconds=30)
        assert svc.run_job("health").summary["recoveries"] == []  # once per outage
        escalations = svc.executor.audit.escalations()
        assert len(escalations) == 1
        assert "no recovery configured" in escalations[0]["reason"]
        health = store.query(
            "SELECT value FROM samples JOIN series USING (series_id) "
            "WHERE metric = 'autofix_health_up'"
        )
        assert health["value"].tolist() == [0.0, 0.0, 0.0]
        decision = store.query("SELECT source, detected_at FROM decisions")
        assert decision["source"].tolist() == ["health"]
        assert decision["detected_at"].iloc[0] == pd.Timestamp(T0)
        svc.close()


def test_scheduler_runs_one_instance_and_coalesces(service: tuple[Service, Clock, Path]) -> None:
    svc, _, _ = service
    started = threading.Event()
    running = 0
    peak = 0
    calls = 0
    lock = threading.Lock()

    def slow() -> dict[str, Any]:
        nonlocal running, peak, calls
        with lock:
            running += 1
            calls += 1
            peak = max(peak, running)
        started.set()
        time.sleep(1.2)
        with lock:
            running -= 1
        return {}

    svc.jobs["collect"] = slow
    svc.pipeline = svc.pipeline.model_copy(
        update={
            "jobs": {
                "collect": svc.pipeline.job("collect").model_copy(
                    update={"every": timedelta(milliseconds=200)}
                )
            }
        }
    )
    scheduler = build_scheduler(svc, only={"collect"})
    scheduler.start()
    try:
        assert started.wait(10)
        time.sleep(2.5)
    finally:
        scheduler.shutdown(wait=True)
    assert peak == 1
    assert 2 <= calls <= 3  # 200 ms ticks over ~2.5 s, but never overlapping
    assert svc.failures["collect_skipped"] >= 1


def _env(tmp_path: Path, pipeline: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "data" / "a.duckdb"),
        "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
        "AUTOFIX_SNAPSHOT_DIR": str(tmp_path / "snap"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_LOG_LEVEL": "WARNING",
        "AUTOFIX_API_PORT": "0",  # no HTTP API in these tests
    }


def _pipeline_file(tmp_path: Path) -> Path:
    file = tmp_path / "p.yaml"
    (tmp_path / "logs").mkdir()
    file.write_text(
        "jobs:\n"
        "  collect: {every: 1s}\n"
        "  snapshot: {every: 1s}\n"
        "targets:\n"
        f"  - {{name: logs, kind: logdir, path: '{tmp_path / 'logs'}'}}\n"
    )
    return file


def test_run_job_cli(tmp_path: Path) -> None:
    env = _env(tmp_path, _pipeline_file(tmp_path))
    record = json.loads(run_autofix(["run", "collect", "--json"], env).stdout)
    assert record["job"] == "collect"
    assert record["ok"] is True
    assert record["summary"]["stored"] > 0
    proc = run_autofix(["run", "nosuchjob"], env, check=2)
    assert "unknown job 'nosuchjob'" in proc.stderr
    status = run_autofix(["jobs", "--json"], env).stdout.splitlines()
    assert json.loads(status[0])["job"] == "collect"
    summary = run_autofix(["status"], env).stdout
    assert "no decisions in the last 24h" in summary
    assert "KPIs (30d)" in summary
    assert "Traceback" not in run_autofix(["status", "--since", "soon"], env, check=2).stderr


def test_serve_runs_jobs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = _env(tmp_path, _pipeline_file(tmp_path))
    proc = subprocess.Popen(
        [AUTOFIX, "serve", "--jobs", "collect,snapshot"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "snap" / "manifest.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "serve wrote no snapshot"
            time.sleep(0.2)
        # While serve holds the store, a reader gets the snapshot, never a lock error (the
        # first snapshot may predate the first collection: the next one has it).
        listing = run_autofix(["series", "--json"], env)
        while "autofix_dir_size_bytes" not in listing.stdout:
            assert listing.returncode == 0
            assert time.monotonic() < deadline, "the snapshot never showed the samples"
            time.sleep(0.5)
            listing = run_autofix(["series", "--json"], env)
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped:" in out
    assert "Traceback" not in err
    runs = json.loads(run_autofix(["jobs", "--json"], env).stdout.splitlines()[0])
    assert runs["runs"] >= 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs: {collect: {every: 0s}}\n", "jobs.collect: every must be positive"),
        ("jobs: {collect: {cron: 'not a cron'}}\n", "jobs.collect: bad crontab line"),
        ("jobs: {sometimes: {every: 1m}}\n", "jobs.sometimes"),
        (
            "rules:\n  - {name: r, when: {type: threshold, metric: m}, actions: []}\n",
            "rules[0].when: give exactly one of above, below",
        ),
        (
            "rules:\n  - {name: r, when: {type: exhaustion, metric: m, within: 2h}}\n",
            "rules[0].when.within",
        ),
        (
            "rules:\n  - {name: r, when: {type: telepathy}}\n",
            "rules[0].when",
        ),
        (
            "rules:\n  - {name: r, when: {type: threshold, metric: m, above: 1},"
            " actions: [{action: files.nuke}]}\n",
            "rules[0].actions[0].action: unknown action 'files.nuke'",
        ),
        (
            "rules:\n  - {name: r, when: {type: threshold, metric: m, above: 1},"
            " actions: [{action: files.clean_temp, target: nowhere}]}\n",
            "rules[0].actions[0].target: no target named 'nowhere'",
        ),
        (
            "rules:\n  - {name: r, when: {type: threshold, metric: m, above: 1}}\n"
            "  - {name: r, when: {type: threshold, metric: m, above: 2}}\n",
            "rules[1].name: duplicate rule 'r'",
        ),
        (
            "targets:\n  - {name: t, kind: tcp, host: h, port: 1, recovery: {actions: []}}\n",
            "targets[0].recovery.actions",
        ),
        ("maintenance: {patch_target: apt}\n", "maintenance.patch_target: no target named 'apt'"),
        ("rules:\n  - name: r\n    when: {type: threshold, metric: m, above: [1\n", "invalid YAML"),
    ],
)
def test_malformed_pipelines_give_one_line_and_exit_2(
    tmp_path: Path, text: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = run_autofix(["run", "collect"], _env(tmp_path, bad), check=2)
    line = proc.stderr.strip()
    assert "\n" not in line, line
    assert line.startswith(f"autofix: error: {bad}:"), line
    assert message in line, line
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "a.duckdb").exists()  # nothing opened, nothing written


def test_escalations_and_reports_are_notified_through_the_service(tmp_path: Path) -> None:
    from autofix.notify import Notifier, WebhookChannel
    from tests.test_notify import sink_server

    settings = load_settings(
        environ={
            "AUTOFIX_DB_PATH": str(tmp_path / "a.duckdb"),
            "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
            "AUTOFIX_REPORT_DIR": str(tmp_path / "reports"),
            "AUTOFIX_PROBE_TIMEOUT": "500ms",
        }
    )
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "gone", "kind": "tcp", "host": "127.0.0.1", "port": 1}]}
    )
    clock = Clock()
    with sink_server() as sink, MetricStore(settings.db_path) as store:
        notifier = Notifier([WebhookChannel(sink.url)], retries=0)
        svc = Service(settings, pipeline, store, clock=clock, notifier=notifier)
        svc.run_job("health")
        clock.now += timedelta(seconds=30)
        svc.run_job("health")  # second failure: escalated, and a human is told
        (hit,) = sink.wait_for(1)
        assert hit.json()["kind"] == "escalation"
        assert "gone" in json.dumps(hit.json())
        report = svc.run_job("report")
        assert report.ok, report.error
        assert Path(report.summary["report"]).is_file()
        hits = sink.wait_for(2)
        assert hits[1].json()["kind"] == "report"
        svc.close()


def test_kpi_job_snapshots_and_logs_to_mlflow(service: tuple[Service, Clock, Path]) -> None:
    from autofix.tracking import Tracker

    svc, _, _ = service
    run = svc.run_job("kpi")
    assert run.ok, run.error
    assert "escalations" in run.summary
    snapshots = svc.store.query("SELECT DISTINCT name FROM kpi_snapshots")
    assert "escalations" in set(snapshots["name"])
    import mlflow

    tracker = Tracker(svc.settings.models_dir)
    assert tracker.models_dir == svc.settings.models_dir
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{svc.settings.models_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("autofix-kpi")
    assert experiment is not None
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.data.metrics["escalations"] == 0.0


def test_maintenance_job_plans_and_runs_due_work(service: tuple[Service, Clock, Path]) -> None:
    svc, clock, root = service
    log = root / "app.log"
    log.write_text("line\n" * 1000)
    stamp = (T0 - timedelta(days=2)).replace(tzinfo=UTC).timestamp()
    os.utime(log, (stamp, stamp))
    # Logs growing at 2 GB/day (20x the limit) on the spool: rotation is needed now.
    frame = pd.DataFrame(
        {
            "ts": [clock.now - timedelta(minutes=1)],
            "host": [svc.settings.hostname],  # maintenance acts on this host's own series
            "metric": ["autofix_dir_growth_bytes_per_day"],
            "labels": ['{"target":"spool"}'],
            "value": [2e9],
            "unit": ["bytes_per_day"],
            "capacity": [float("nan")],
        }
    )
    svc.store.write(frame)
    listing = (
        "Listing...\n"
        "openssl/stable-security 3.0.15-1~deb12u1 amd64 [upgradable from: 3.0.14-1~deb12u2]\n"
        "tzdata/stable-updates 2025b-0+deb12u1 all [upgradable from: 2025a-0+deb12u1]\n"
    )

    def runner(argv: Sequence[str], timeout: float) -> CommandResult:
        if list(argv) == ["apt", "list", "--upgradable"]:  # recorded: no apt needed here
            return CommandResult(tuple(argv), 0, listing, "")
        return run_argv(argv, timeout)

    svc.runner = runner
    run = svc.run_job("maintenance")
    assert run.ok, run.error
    assert run.summary["upgradable"] == {"security": 1, "all": 2}
    tasks = svc.store.query("SELECT need, target, action FROM maintenance_tasks")
    assert ("log_rotation", "spool", "files.rotate_logs") in set(tasks.itertuples(index=False))
    assert run.summary["executed"] >= 1
    upgradable = svc.store.query(
        "SELECT labels, value FROM samples JOIN series USING (series_id) "
        "WHERE metric = 'autofix_upgradable_packages'"
    )
    values = dict(zip(upgradable["labels"], upgradable["value"], strict=True))
    assert values == {'{"kind":"security"}': 1.0, '{"kind":"all"}': 2.0}
    assert (root / "app.log.gz").exists()  # rotated by the executor, not just planned
    assert not log.exists()


def test_pending_approvals_are_notified_once(tmp_path: Path) -> None:
    from autofix.notify import Notifier, WebhookChannel
    from tests.test_notify import sink_server

    root = tmp_path / "spool"
    root.mkdir()
    old = root / "old.tmp"
    old.write_bytes(b"x" * 800)
    stamp = (T0 - timedelta(days=1)).replace(tzinfo=UTC).timestamp()
    os.utime(old, (stamp, stamp))
    settings = load_settings(
        environ={
            "AUTOFIX_DB_PATH": str(tmp_path / "a.duckdb"),
            "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
            "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "q"),
        }
    )
    rule = {
        "name": "spool-full",
        "when": SPOOL_FULL,
        "actions": [{"action": "files.clean_temp", "params": {"older_than": "1h"}}],
        "mode": "approve",
    }
    clock = Clock()
    with sink_server() as sink, MetricStore(settings.db_path) as store:
        notifier = Notifier([WebhookChannel(sink.url)], retries=0)
        svc = Service(settings, _pipeline(root, [rule]), store, clock=clock, notifier=notifier)
        _size_sample(svc, clock.now - timedelta(seconds=10), 800)
        svc.run_job("remediate")
        (pending,) = svc.executor.audit.list(state="pending_approval")
        (hit,) = sink.wait_for(1)
        assert hit.json()["kind"] == "approval"
        assert str(pending.id) in json.dumps(hit.json())
        svc.run_job("collect")  # later jobs do not repeat it
        # Nor does the next `autofix run JOB` (cron): a new Service over the same store.
        again = Notifier([WebhookChannel(sink.url)], retries=0)
        cron = Service(settings, svc.pipeline, store, clock=clock, notifier=again)
        cron.run_job("collect")
        again.flush(5)
        time.sleep(0.3)
        assert len(sink.hits) == 1
        assert old.exists()  # nothing ran without the approval
        cron.close()
        svc.close()


def test_self_healing_streaks_survive_separate_runs(tmp_path: Path) -> None:
    # `autofix run health` from cron builds a new Service each time: the streak must come
    # from the stored health samples, and an outage is still acted on once.
    settings = load_settings(
        environ={"AUTOFIX_DB_PATH": str(tmp_path / "a.duckdb"), "AUTOFIX_PROBE_TIMEOUT": "500ms"}
    )
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": "gone", "kind": "tcp", "host": "127.0.0.1", "port": 1}]}
    )
    clock = Clock()
    outcomes = []
    with MetricStore(settings.db_path) as store:
        for _ in range(3):
            svc = Service(settings, pipeline, store, clock=clock)
            outcomes.append(svc.run_job("health").summary["recoveries"])
            svc.close()
            clock.now += timedelta(seconds=30)
        assert outcomes[0] == []  # one failed check
        assert outcomes[1][0]["escalated"] is True  # the second, in a new process
        assert outcomes[2] == []  # the same outage: not again
        assert (
            len(Service(settings, pipeline, store, clock=clock).executor.audit.escalations()) == 1
        )


def test_a_resource_condition_of_a_dependency_inhibits_a_symptom_in_the_same_run(
    tmp_path: Path,
) -> None:
    """The database's own condition (its role's connections used up) holds while the web
    probe fails: the web's symptom waits for the database, even before its fix runs or
    while that fix waits for a cooldown, instead of restarting a worker that is fine."""
    db, web = tmp_path / "db", tmp_path / "web"
    db.mkdir()
    web.mkdir()
    pipeline = Pipeline.model_validate(
        {
            "targets": [
                {"name": "db", "kind": "logdir", "path": str(db), "capacity": 1000},
                {"name": "web", "kind": "logdir", "path": str(web), "capacity": 1000,
                 "depends_on": ["db"]},
            ],
            "rules": [
                {"name": "db-full", "when": {**SPOOL_FULL, "match": {"target": "db"}},
                 "actions": [{"action": "files.clean_temp", "target": "db"}],
                 "repeat": "1h"},
                {"name": "web-down",
                 "when": {"type": "threshold", "metric": "probe_up", "match": {"target": "web"},
                          "below": 1},
                 "actions": [{"action": "files.clean_temp", "target": "web"}]},
            ],
        }
    )  # fmt: skip
    settings = auto_settings(tmp_path, AUTOFIX_FIX_SETTLE="0s")
    clock = Clock()
    with MetricStore(settings.db_path) as store:
        svc = Service(settings, pipeline, store, clock=clock)
        try:
            for minute in range(2):
                ts = clock.now - timedelta(seconds=5)
                store.write(
                    pd.DataFrame(
                        {
                            "ts": [ts, ts],
                            "host": ["h", "h"],
                            "metric": ["autofix_dir_size_bytes", "probe_up"],
                            "labels": ['{"target":"db"}', '{"target":"web"}'],
                            "value": [800.0, 0.0],
                            "unit": ["bytes", ""],
                            "capacity": [1000.0, float("nan")],
                        }
                    )
                )
                run = svc.run_job("remediate")
                assert run.ok, run.error
                assert run.summary["inhibited"] == 1, (minute, run.summary)
                clock.now += timedelta(minutes=1)  # db-full holds, not decided again
            web_fixes = [f for f in svc.executor.audit.list() if f.target == "web"]
            assert web_fixes == []
            reasons = store.query("SELECT reason FROM decisions WHERE rule = 'web-down'")
            assert "db has a condition of its own: rule db-full holds" in reasons["reason"][0]
            states = svc.target_states(clock.now + timedelta(hours=1))
            assert "db" not in states.firing  # an old look decides nothing
        finally:
            svc.close()


def test_a_dependency_two_independent_dependents_name_is_in_trouble(tmp_path: Path) -> None:
    """Redis answers PING but refuses writes: both workers' health checks say
    ``"failing": ["redis"]``. That is Redis's trouble, not two workers' own errors; one
    worker (with its own HTTP endpoint) saying so alone may be its own broken pool."""
    from autofix.depends import inhibitor
    from autofix.health import HealthResult

    pipeline = Pipeline.model_validate(
        {
            "targets": [
                {"name": "cache", "kind": "tcp", "host": "127.0.0.1", "port": 6379},
                {"name": "web-1", "kind": "tcp", "host": "127.0.0.1", "port": 8001,
                 "depends_on": ["cache"]},
                {"name": "web-1-http", "kind": "http", "url": "http://127.0.0.1:8001/",
                 "depends_on": ["web-1", "cache"]},
                {"name": "web-2", "kind": "tcp", "host": "127.0.0.1", "port": 8002,
                 "depends_on": ["cache"]},
            ]
        }
    )  # fmt: skip
    settings = load_settings(environ={"AUTOFIX_DB_PATH": str(tmp_path / "a.duckdb")})

    def failing(name: str) -> HealthResult:
        return HealthResult(name, False, 'HTTP 503: {"failing": ["redis"]}', 0.01, "dependency",
                            "cache")  # fmt: skip

    with MetricStore(settings.db_path) as store:
        svc = Service(settings, pipeline, store, clock=Clock())
        try:
            one = svc.target_states(T0, [failing("web-1"), failing("web-1-http")])
            assert "cache" not in one.unhealthy
            mine = one.without_unhealthy("web-1")
            assert inhibitor(pipeline, symptom="web-1", acting_on=["web-1"], states=mine) is None
            both = svc.target_states(
                T0, [failing("web-1"), failing("web-1-http"), failing("web-2")]
            )
            assert both.unhealthy["cache"] == "named failing by web-1, web-1-http, web-2"
            found = inhibitor(
                pipeline,
                symptom="web-1",
                acting_on=["web-1"],
                states=both.without_unhealthy("web-1"),
            )
            assert found is not None
            assert found.target == "cache"
        finally:
            svc.close()


def test_a_fixed_target_that_answers_naming_its_failing_dependency_verifies(
    tmp_path: Path,
) -> None:
    """A hung worker restarted as the database's connections run out answers 503 naming
    the database before the database's own check shows it: the rule's fix did its part."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from autofix.actions.base import Check
    from autofix.jobs import _AfterFix
    from autofix.policy import Candidate, Decision, RuleDecision

    body = {"answer": b'{"status": "unhealthy", "failing": ["news-db"]}'}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503 if b"failing" in body["answer"] else 200)
            self.send_header("Content-Length", str(len(body["answer"])))
            self.end_headers()
            self.wfile.write(body["answer"])

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    pipeline = Pipeline.model_validate(
        {
            "targets": [
                {"name": "news-db", "kind": "tcp", "host": "127.0.0.1", "port": 1},
                {"name": "web", "kind": "http", "url": url, "depends_on": ["news-db"]},
            ]
        }
    )
    settings = load_settings(environ={"AUTOFIX_DB_PATH": str(tmp_path / "a.duckdb")})
    decision = Decision([Candidate("service.restart", "web")], "probe down", "d1")
    rd = RuleDecision("web-down", "threshold", "series:1", 1, "web", "auto", T0, T0, "probe down",
                      {}, decision, about="web")  # fmt: skip
    try:
        with MetricStore(settings.db_path) as store:
            svc = Service(settings, pipeline, store, clock=Clock())
            try:
                probe = _AfterFix(lambda: Check(False, "probe_up value 0"), svc, rd)
                check = probe.after_fix()
                assert check.ok, check.reason
                assert "left to news-db: web answers and names it failing" in check.reason
                body["answer"] = b'{"status": "unhealthy", "errors": {"disk": "full"}}'
                assert not probe.after_fix().ok  # its own error: the fix did not help
            finally:
                svc.close()
    finally:
        server.shutdown()
        server.server_close()
