"""CycleRunner with real collectors plus ones that hang or raise."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pandas as pd
import pytest

from autofix.collect.base import Collector, CycleRunner, Sample
from autofix.collect.host import HostCollector


class Hanging:
    """Blocks until released, like a probe stuck on a dead NFS mount."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()

    def collect(self) -> list[Sample]:
        self.release.wait(30)
        return [Sample("never_seen", 1.0)]


class Raising:
    name = "raising"

    def collect(self) -> list[Sample]:
        raise RuntimeError("boom")


class Constant:
    name = "constant"

    def collect(self) -> list[Sample]:
        return [Sample("constant_value", 42.0, {"k": "v"}, "count")]


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    collector = Hanging()
    yield collector
    collector.release.set()  # let the abandoned worker thread finish


def _up(frame: pd.DataFrame) -> dict[str, float]:
    rows = frame[frame["metric"] == "autofix_collector_up"]
    return {
        json.loads(labels)["collector"]: value
        for labels, value in zip(rows["labels"], rows["value"], strict=True)
    }


def test_hanging_and_raising_collectors_are_down_others_up(hanging: Hanging) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    collectors: list[Collector] = [HostCollector(), Constant(), hanging, Raising()]
    with CycleRunner(collectors, host="h1", timeout=0.5, clock=lambda: now) as runner:
        start = time.monotonic()
        result = runner.run_once()
        elapsed = time.monotonic() - start
    assert elapsed < 0.5 + 0.5
    assert _up(result.frame) == {"host": 1.0, "constant": 1.0, "hanging": 0.0, "raising": 0.0}
    assert result.errors["hanging"] == "timed out after 0.5s"
    assert result.errors["raising"] == "RuntimeError: boom"
    assert "never_seen" not in set(result.frame["metric"])
    assert "node_memory_available_bytes" in set(result.frame["metric"])
    row = result.frame[result.frame["metric"] == "constant_value"].iloc[0]
    assert (row["host"], row["labels"], row["value"], row["unit"]) == (
        "h1",
        '{"k":"v"}',
        42,
        "count",
    )
    assert row["ts"] == datetime(2026, 1, 2, 3, 4, 5)  # stored as naive UTC


def test_still_hanging_next_cycle_is_not_resubmitted(hanging: Hanging) -> None:
    with CycleRunner([hanging, Constant()], host="h1", timeout=0.2) as runner:
        runner.run_once()
        second = runner.run_once()
    assert second.errors == {"hanging": "still running from a previous cycle"}
    assert _up(second.frame) == {"hanging": 0.0, "constant": 1.0}
