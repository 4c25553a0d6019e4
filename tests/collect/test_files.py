"""LogDirCollector on real directories, with an injected clock for the growth rate."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autofix.collect.base import Sample
from autofix.collect.files import DirUsage, LogDirCollector, dir_usage
from autofix.errors import CollectError
from autofix.pipeline import LogDirTarget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _values(samples: list[Sample]) -> dict[str, float]:
    return {s.metric: s.value for s in samples}


def _target(path: Path) -> LogDirTarget:
    return LogDirTarget(kind="logdir", name="logs", path=path)


def test_size_files_and_growth_per_day(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_bytes(b"x" * 1000)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "app.log.1").write_bytes(b"y" * 500)
    clock = FakeClock()
    collector = LogDirCollector(_target(tmp_path), clock=clock)

    first = collector.collect()
    assert _values(first) == {
        "autofix_dir_size_bytes": 1500,
        "autofix_dir_files": 2,
        "autofix_dir_walk_errors": 0,
    }
    assert {s.unit for s in first} == {"bytes", "count"}
    assert all(s.labels == {"target": "logs", "path": str(tmp_path)} for s in first)

    with (tmp_path / "app.log").open("ab") as handle:
        handle.write(b"z" * 3600)
    clock.now += 3600.0  # one hour later: 3600 bytes/h is 86 400 bytes/day
    second = _values(collector.collect())
    assert second["autofix_dir_size_bytes"] == 5100
    assert second["autofix_dir_growth_bytes_per_day"] == pytest.approx(86_400)

    (tmp_path / "app.log").write_bytes(b"")  # rotation: truncated
    clock.now += 86_400.0
    third = _values(collector.collect())
    assert third["autofix_dir_growth_bytes_per_day"] == pytest.approx(500 - 5100)


def test_no_rate_when_the_clock_did_not_advance(tmp_path: Path) -> None:
    collector = LogDirCollector(_target(tmp_path), clock=FakeClock())
    collector.collect()
    assert "autofix_dir_growth_bytes_per_day" not in _values(collector.collect())


def test_growth_with_the_real_clock(tmp_path: Path) -> None:
    collector = LogDirCollector(_target(tmp_path))
    collector.collect()
    (tmp_path / "a.log").write_bytes(b"x" * 10_000)
    rate = _values(collector.collect())["autofix_dir_growth_bytes_per_day"]
    assert rate > 10_000  # 10 kB in well under a day


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(b"x" * 100_000)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(b"x" * 10)
    (logs / "to-outside").symlink_to(outside, target_is_directory=True)
    (logs / "to-big").symlink_to(outside / "big.bin")
    (logs / "to-root").symlink_to("/", target_is_directory=True)
    (logs / "dangling").symlink_to(tmp_path / "nowhere")
    usage = dir_usage(logs)
    assert (usage.size_bytes, usage.files, usage.errors) == (10, 1, 0)


def test_hard_links_count_once(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"x" * 100)
    os.link(tmp_path / "a.log", tmp_path / "b.log")
    assert dir_usage(tmp_path).size_bytes == 100


def test_missing_or_non_directory_root(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="No such file"):
        LogDirCollector(_target(tmp_path / "nope")).collect()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CollectError, match="not a directory"):
        dir_usage(tmp_path / "file")
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(CollectError, match="not a directory"):
        dir_usage(tmp_path / "link")  # the root itself is not followed either


_CHURN = """
import shutil, sys
from pathlib import Path
root = Path(sys.argv[1])
n = 0
while True:
    d = root / f"d{n % 5}"
    d.mkdir(exist_ok=True)
    for i in range(20):
        (d / f"f{i}").write_bytes(b"x")
    shutil.rmtree(d, ignore_errors=True)
    n += 1
"""


def test_tolerates_files_vanishing_mid_walk(tmp_path: Path) -> None:
    # Rotation and cleanup run while we walk: churn the tree from another process and
    # walk until some entry vanished under us. Every walk must finish, count no more than
    # can exist, and never raise.
    churn = subprocess.Popen([sys.executable, "-c", _CHURN, str(tmp_path)])
    try:
        walks: list[DirUsage] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(w.errors for w in walks) < 5:
            walks.append(dir_usage(tmp_path))
    finally:
        churn.kill()
        churn.wait()
    assert sum(w.errors for w in walks) >= 5, "nothing vanished mid-walk; test proved nothing"
    # A file may be seen between its creation and its write, hence <= rather than ==.
    assert all(0 <= w.size_bytes <= w.files <= 100 for w in walks)
