"""Compute.map in process and in a process pool: fallbacks, failures, a dying process."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from autofix.compute import Compute
from autofix.errors import ComputeError


def _half(x: int) -> float:
    if x == 3:
        raise ValueError(f"bad partition {x}")
    return x / 2


def _negated(x: int) -> float:
    if x == 3:
        return -3.0
    raise AssertionError("only partition 3 falls back")


def test_a_failing_partition_falls_back_and_the_batch_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    compute = Compute()
    with caplog.at_level(logging.WARNING, logger="autofix.compute"):
        done = compute.map(
            _half,
            [(i,) for i in range(5)],
            kind="inline",
            fallback=lambda i: (i,) if i == 3 else None,
            label="halving",
        )
    # The fallback runs the same function again here: partition 3 fails twice.
    assert done.results == [0.0, 0.5, 1.0, None, 2.0]
    assert done.fallbacks == [3]
    assert done.failed == [3]
    messages = [r.getMessage() for r in caplog.records]
    assert any("halving partition 3 failed (ValueError: bad partition 3)" in m for m in messages)
    assert any("fallback failed too" in m for m in messages)


def test_a_fallback_result_takes_the_partitions_place() -> None:
    seen: list[int] = []

    def run(x: int) -> float:
        seen.append(x)
        return _half(x) if x >= 0 else _negated(-x)

    done = Compute().map(run, [(i,) for i in range(5)], kind="inline", fallback=lambda i: (-i,))
    assert done.results == [0.0, 0.5, 1.0, -3.0, 2.0]
    assert done.as_dict() | {"seconds": 0} == {
        "backend": "inline",
        "partitions": 5,
        "fallbacks": 1,
        "failed": 0,
        "seconds": 0,
    }
    assert seen == [0, 1, 2, 3, -3, 4]


def die_once(marker: str, value: int) -> int:
    """Kills its process the first time (marker file absent), else returns ``value``."""
    path = Path(marker)
    if value == 1 and not path.exists():
        path.write_text("died", encoding="utf-8")
        os._exit(9)
    return value * 10


def test_a_pool_process_that_dies_costs_a_rerun(tmp_path: Path) -> None:
    marker = str(tmp_path / "died")
    with Compute(workers=2, offload=True) as compute:
        assert compute.kind_for(10) == "pool"
        done = compute.map(die_once, [(marker, i) for i in range(4)], kind="pool")
    assert Path(marker).exists()  # the process did die
    assert done.results == [0, 10, 20, 30]
    assert done.failed == []


def test_an_unwritable_work_directory_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    compute = Compute(directory=blocker / "compute")
    with pytest.raises(ComputeError, match="cannot make a work directory"), compute.workdir("x"):
        pass


def test_where_work_runs() -> None:
    compute = Compute(partition_series=5000, local_series=20_000)
    assert (compute.kind_for(19_999), compute.kind_for(20_000)) == ("inline", "local")
    assert (compute.partitions(1), compute.partitions(5000), compute.partitions(5001)) == (1, 1, 2)
    assert Compute(scheduler="tcp://127.0.0.1:8786").kind_for(1) == "dask"
