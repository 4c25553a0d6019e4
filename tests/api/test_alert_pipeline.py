"""End to end through a real Prometheus stack: a rule fires → Alertmanager → autofix fixes.

Debian's node exporter publishes how full three spool directories are (its textfile
collector); Debian's Prometheus scrapes it every second and fires ``SpoolFillingUp`` and
``OutboxFillingUp``; Debian's Alertmanager posts every notification, with a bearer token,
to two autofix APIs (``ApiServer`` over a ``Service`` and a DuckDB store in tmp_path):
one applies fixes (the spool rule is ``auto``, the outbox rule ``approve``), the other
runs with ``AUTOFIX_DRY_RUN``. One stack serves the module, so Prometheus' ~6 s to the
first scrape and to finding the Alertmanager (its discovery tick) is paid once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from autofix.actions._quarantine import read_journal
from autofix.api.app import create_app
from autofix.api.server import ApiServer
from autofix.audit import FixRecord
from autofix.jobs import Service
from autofix.pipeline import Pipeline
from autofix.store import MetricStore
from tests.api.world import auth, body, settings
from tests.promstack import alertmanager, node_exporter, prometheus, stack_or_skip

T = TypeVar("T")

HOOK = "/api/v1/alerts/alertmanager"
AM_TOKEN = "alertmanager-e2e-token-0123456789"
OPS_TOKEN = "ops-e2e-token-0123456789abcdef"
TOKENS = f"alertmanager:operator:{AM_TOKEN},ops:operator:{OPS_TOKEN}"
TARGETS = ("spool", "outbox", "archive")
WAIT = 60.0  # seconds from the stack's start; normally the first fix lands after ~8 s
OLD = 3 * 86400  # seconds: older than every rule's older_than
FRESH = 600

FILL = """\
# HELP spool_fill_ratio How full a spool directory's filesystem is.
# TYPE spool_fill_ratio gauge
spool_fill_ratio{dir="spool"} 0.97
spool_fill_ratio{dir="outbox"} 0.95
spool_fill_ratio{dir="archive"} 0.2
"""

# The spool alert's extra labels look like parameters and a path: autofix must use its
# ``target`` label to pick a declared target and nothing else.
RULES = """\
groups:
  - name: autofix-e2e
    interval: 1s
    rules:
      - alert: SpoolFillingUp
        expr: spool_fill_ratio{job="node", dir="spool"} > 0.9
        for: 0s
        labels:
          target: spool
          severity: page
          older_than: 0s
          pattern: "*"
          path: ../../etc
      - alert: OutboxFillingUp
        expr: spool_fill_ratio{job="node", dir="outbox"} > 0.9
        for: 0s
        labels: {target: outbox, severity: ticket}
"""

# One receiver, two webhooks: the applying autofix and the dry-run one get every post.
AM_CONFIG = """\
route:
  receiver: autofix
  group_by: [alertname, target]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: autofix
    webhook_configs:
      - url: {applying}{hook}
        send_resolved: false
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
      - url: {dry}{hook}
        send_resolved: false
        http_config:
          authorization: {{type: Bearer, credentials: {token}}}
"""


def _pipeline(root: Path) -> Pipeline:
    return Pipeline.model_validate(
        {
            "targets": [
                {"name": name, "kind": "logdir", "path": str(root / name)} for name in TARGETS
            ],
            "rules": [
                {  # no target of its own: the alert's label picks one
                    "name": "disk-alert",
                    "when": {"type": "alert", "alertname": "SpoolFillingUp"},
                    "actions": [
                        {
                            "action": "files.clean_temp",
                            "params": {"older_than": "1h", "pattern": "*.tmp"},
                        }
                    ],
                    "mode": "auto",
                },
                {
                    "name": "outbox-alert",
                    "when": {"type": "alert", "alertname": "OutboxFillingUp"},
                    "actions": [
                        {
                            "action": "files.clean_temp",
                            "target": "outbox",
                            "params": {"older_than": "1h"},
                        }
                    ],
                    "mode": "approve",
                },
            ],
        }
    )


@dataclass(frozen=True)
class Autofix:
    """One autofix process: its service, API URL, targets' root and quarantine."""

    service: Service
    url: str
    root: Path
    quarantine: Path
    contents: dict[str, bytes]  # "target/name" → the bytes written there

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def decisions(self) -> list[dict[str, Any]]:
        frame = self.service.store.query(
            "SELECT decision_id, source, rule, kind, subject, target, mode, inputs "
            "FROM decisions ORDER BY ts"
        )
        return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]

    def decision_of(self, fix: FixRecord) -> str:
        frame = self.service.store.query("SELECT decision_id FROM fixes WHERE fix_id = ?", [fix.id])
        return str(frame["decision_id"][0])


@dataclass(frozen=True)
class Run:
    applying: Autofix
    dry: Autofix
    started: float  # time.monotonic() when the stack began to start


def _write(path: Path, age: float) -> bytes:
    data = os.urandom(2048)
    path.write_bytes(data)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return data


@contextlib.contextmanager
def _autofix(tmp: Path, **extra: str) -> Iterator[Autofix]:
    root = tmp / "targets"
    for name in TARGETS:
        (root / name).mkdir(parents=True)
    contents = {
        f"{target}/{name}": _write(root / target / name, age)
        for target, name, age in (
            ("spool", "old.tmp", OLD),
            ("spool", "fresh.tmp", FRESH),  # kept: the rule says 1h, the label 0s
            ("spool", "old.log", OLD),  # kept: the rule says *.tmp, the label *
            ("outbox", "old.tmp", OLD),
            ("archive", "old.tmp", OLD),  # no alert names it
        )
    }
    with MetricStore(tmp / "autofix.duckdb") as store:
        service = Service(settings(tmp, api_tokens=TOKENS, **extra), _pipeline(root), store)
        server = ApiServer(create_app(service.settings, store, service=service), "127.0.0.1", 0)
        server.start()
        try:
            yield Autofix(service, server.url, root, tmp / "quarantine", contents)
        finally:
            server.stop()


@contextlib.contextmanager
def _promstack(rules: Path, am_config: str) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(node_exporter({"fill.prom": FILL}))
        manager = stack.enter_context(alertmanager(config=am_config))
        stack.enter_context(
            prometheus(
                {"node": [node.address]},
                rule_files=[rules],
                alertmanagers=[manager.address],
                wait_for_targets=False,  # the alerts' arrival is what the tests wait for
            )
        )
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    base = tmp_path_factory.mktemp("alert-pipeline")
    rules = base / "rules.yml"
    rules.write_text(RULES)
    with _autofix(base / "applying") as applying, _autofix(base / "dry", dry_run="true") as dry:
        config = AM_CONFIG.format(applying=applying.url, dry=dry.url, hook=HOOK, token=AM_TOKEN)
        started = time.monotonic()
        for _ in stack_or_skip(lambda: _promstack(rules, config)):
            yield Run(applying, dry, started)


def _until(run: Run, what: str, probe: Callable[[], T | None]) -> T:
    """``probe()`` once it is not None; fails after WAIT seconds from the stack's start."""
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() - run.started > WAIT:
            raise AssertionError(f"not within {WAIT:.0f}s of the stack's start: {what}")
        time.sleep(0.1)


def _settled_fix(run: Run, autofix: Autofix, target: str) -> FixRecord:
    """The one fix on ``target`` once the request that made it has finished with it."""

    def probe() -> FixRecord | None:
        fixes = [f for f in autofix.service.executor.audit.list() if f.target == target]
        assert len(fixes) <= 1, [f.as_dict() for f in fixes]
        # A fix is created before its first event, and is "running" while it applies.
        if fixes and fixes[0].events and fixes[0].state != "running":
            return fixes[0]
        return None

    return _until(run, f"a settled fix on {target!r} in {autofix.root}", probe)


def _decision(autofix: Autofix, rule: str) -> dict[str, Any]:
    (row,) = [d for d in autofix.decisions() if d["rule"] == rule]  # repeats decide nothing
    return row


def test_a_firing_rule_fixes_the_target_its_label_names(run: Run) -> None:
    af = run.applying
    fix = _settled_fix(run, af, "spool")
    assert (fix.action, fix.state, fix.requested_by) == (
        "files.clean_temp",
        "succeeded",
        "api:alertmanager",  # the token only Alertmanager holds
    ), fix.as_dict()
    assert fix.params == {"older_than": "1h", "pattern": "*.tmp"}  # the rule's, not labels'

    decision = _decision(af, "disk-alert")
    assert {k: decision[k] for k in ("source", "kind", "subject", "target", "mode")} == {
        "source": "alert",
        "kind": "alert",
        "subject": "alert:SpoolFillingUp:spool",
        "target": "spool",
        "mode": "auto",
    }
    assert af.decision_of(fix) == decision["decision_id"]
    inputs = json.loads(decision["inputs"])
    labels = inputs["labels"]  # as Prometheus sent them, through Alertmanager
    assert (labels["alertname"], labels["target"], labels["job"]) == (
        "SpoolFillingUp",
        "spool",
        "node",
    )
    assert len(inputs["fingerprint"]) == 16

    # Only the old *.tmp of the labelled target went, into the quarantine, byte for byte
    # (the outbox waits for the approval of the next test).
    assert [f for f in af.files() if not f.startswith("outbox/")] == [
        "archive/old.tmp",
        "spool/fresh.tmp",
        "spool/old.log",
    ]
    assert fix.undo is not None
    qdir = Path(fix.undo["quarantine"])
    assert qdir.parent == af.quarantine
    assert qdir.name.startswith(f"fix-{fix.id}-")
    journal = read_journal(qdir)
    assert journal.root == af.root / "spool"
    (entry,) = journal.entries
    assert (entry.path, entry.state) == ("old.tmp", "moved")
    moved = (qdir / entry.slot).read_bytes()
    assert moved == af.contents["spool/old.tmp"]
    assert entry.sha256 == hashlib.sha256(moved).hexdigest()


def test_an_approve_rule_waits_for_an_operator(run: Run) -> None:
    af = run.applying
    fix = _settled_fix(run, af, "outbox")
    assert (fix.action, fix.state, fix.requested_by) == (
        "files.clean_temp",
        "pending_approval",
        "api:alertmanager",
    ), fix.as_dict()
    decision = _decision(af, "outbox-alert")
    assert (decision["source"], decision["target"], decision["mode"]) == (
        "alert",
        "outbox",
        "approve",
    )
    assert (af.root / "outbox" / "old.tmp").exists()

    approved = httpx.post(
        f"{af.url}/api/v1/fixes/{fix.id}/approve", headers=auth(OPS_TOKEN), timeout=30
    )
    assert approved.status_code == 200, approved.text
    detail = body(approved)
    assert (detail["state"], detail["approved_by"]) == ("succeeded", "api:ops")
    assert not (af.root / "outbox" / "old.tmp").exists()
    applied = af.service.executor.audit.get(fix.id)
    assert applied is not None
    assert applied.undo is not None
    assert [e.path for e in read_journal(Path(applied.undo["quarantine"])).entries] == ["old.tmp"]
    assert (af.root / "archive" / "old.tmp").exists()


def test_dry_run_plans_both_fixes_and_moves_nothing(run: Run) -> None:
    dry = run.dry
    planned = {target: _settled_fix(run, dry, target) for target in ("spool", "outbox")}
    for target, fix in planned.items():
        assert (fix.state, fix.reason, fix.requested_by) == (
            "planned",
            "dry run",
            "api:alertmanager",
        ), fix.as_dict()
        assert [step["args"]["path"] for step in fix.plan or []] == ["old.tmp"], target
    decisions = dry.decisions()
    assert sorted((d["rule"], d["source"], d["target"], d["mode"]) for d in decisions) == [
        ("disk-alert", "alert", "spool", "dry_run"),
        ("outbox-alert", "alert", "outbox", "dry_run"),
    ]
    assert dry.files() == sorted(dry.contents)
    assert all((dry.root / rel).read_bytes() == data for rel, data in dry.contents.items())
    assert not dry.quarantine.exists() or not any(dry.quarantine.iterdir())
