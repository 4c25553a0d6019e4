"""The live view: the feed reads each new step once, and the screen renders from it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from rich.console import Console

from autofix.demo.faults import schedule
from autofix.demo.truth import EventRecord, Probe
from autofix.demo.view import Feed, LiveView, kpi_table, outcome_table
from autofix.store import MetricStore


def test_feed_and_screen() -> None:
    store = MetricStore(":memory:")
    started = time.time()
    now = datetime.now(UTC).replace(tzinfo=None)
    feed = Feed(store, started - 1)
    assert feed.poll() == []
    store.execute(
        "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ["d1", now, now, "log-disk-exhaustion", "exhaustion", "policy", "series:1", 1, "logs",
         "auto", now + timedelta(hours=4), "P(exhaust within 4h) = 0.90 [b]x[/b]", "{}"],
    )  # fmt: skip
    store.execute(
        "INSERT INTO fixes VALUES (1, 'files.rotate_logs', 'logs', NULL, '{}', 'd1', "
        "'rule:x', ?, '{}')",
        [now],
    )
    for seq, state in ((1, "running"), (2, "succeeded")):
        store.execute(
            "INSERT INTO fix_events (fix_id, seq, ts, state, step, reason) "
            "VALUES (1, ?, ?, ?, 'apply', 'freed 40 MB')",
            [seq, now + timedelta(seconds=seq), state],
        )
    lines = feed.poll()
    assert [line.stage for line in lines] == ["decision", "fix", "verify"]
    assert "[b]x[/b]" in lines[0].text  # literal, never markup
    assert feed.poll() == []  # each step once
    plan = schedule(0, short=True)
    records = [EventRecord(e) for e in plan.events]
    records[0].started_at, records[0].phase = started, "running"
    console = Console(record=True, width=140, force_terminal=False)
    view = LiveView(console, ["stack line"], records,
                    lambda: [Probe(time.time(), "http://w1", 200, 3.0)],
                    {"http://w1": "web-1"}, live=False)  # fmt: skip
    view.add(lines)
    console.print(view.render())
    screen = console.export_text()
    assert "log-disk-exhaustion" in screen
    assert "[b]x[/b]" in screen
    assert "8x traffic" in screen
    assert "web-1 100% ok" in screen  # what web-1's users see


def test_end_tables() -> None:
    console = Console(record=True, width=160)
    kpis = {"auto_fix_success_rate": 0.4, "mttr_reduction": -0.1, "false_fix_rate": None,
            "preventive_execution_rate": 0.5, "recovery_p95_seconds": 31.0}  # fmt: skip
    console.print(kpi_table(kpis, None))
    event = {"name": "hang", "kind": "fault", "title": "web-1 hangs", "fixed_by": "autofix",
             "prevented": None, "recovery_s": 18.2, "true_fixes": [3], "false_fixes": [],
             "failed_probes": 4, "probes": 40}  # fmt: skip
    fixes = {3: {"action": "service.restart", "target": "web-1", "state": "succeeded"}}
    console.print(outcome_table([event], fixes))
    text = console.export_text()
    assert "40 %" in text
    assert "n/a" in text
    assert "(failed)" in text  # autofix kpi did not answer: said, not hidden
    assert "fixed by autofix" in text
    assert "18.2s" in text
    assert json.dumps(kpis)
