"""kill -9 at any point of a files fix, then restart + rollback: every file comes back.

Property (hypothesis, real files, real DuckDB store): for ``files.clean_temp`` and
``files.rotate_logs`` over random trees, a process applying the fix is killed with
SIGKILL at a random point (before any file-system call of its choice, or a random
moment after it: mid-copy, mid-gzip, mid-commit). Then, in another process, the
executor restarts (``recover``) and rolls the fix back — and sometimes that rollback is
killed too and run again. After the restart the fix is never applied again and no
leftover of an unfinished step remains (no partial copy, no truncated ``.gz``); after the
rollback every original file is back byte for byte (bytes, mode, mtime) and nothing
else is left: no archive, no temp file, no data in the quarantine. The quarantine is a
second filesystem (a tmpfs) where one can be mounted, so moves are copies.

60 examples run in the suite (about 20 s); ``CRASH_EXAMPLES=2000`` searches longer.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autofix.actions._quarantine import JOURNAL, read_journal, slots
from autofix.config import load_settings
from autofix.executor import Executor
from autofix.pipeline import load_pipeline
from autofix.store import MetricStore
from tests.fsutil import tmpfs

DAY = 86400
NOW = time.time()


@dataclass
class World:
    base: Path
    quarantine: Path
    env: dict[str, str]
    worker: subprocess.Popen[str]
    count: int = 0

    def job(self, **job: Any) -> dict[str, Any]:
        assert self.worker.stdin is not None
        assert self.worker.stdout is not None
        self.worker.stdin.write(json.dumps({"env": self.env, **job}) + "\n")
        self.worker.stdin.flush()
        line = self.worker.stdout.readline()
        assert line, "the crash worker died"
        result: dict[str, Any] = json.loads(line)
        assert result["killed"] or result["exit"] == 0, result
        return result


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("crash")
    quarantine = base / "quarantine"
    with tmpfs(quarantine, "64m"):
        env = {
            "AUTOFIX_DB_PATH": str(base / "autofix.duckdb"),
            "AUTOFIX_QUARANTINE_DIR": str(quarantine),
            "AUTOFIX_FIX_MODE": "auto",
            "AUTOFIX_FIX_VERIFY_WAIT": "0s",
            "AUTOFIX_FIX_HOURLY_BUDGET": "1000000",
        }
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("crash_worker.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(base),
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )
        try:
            yield World(base, quarantine, env, worker)
        finally:
            assert worker.stdin is not None
            assert worker.stdout is not None
            worker.stdin.close()
            worker.wait(timeout=30)
            worker.stdout.close()


# -- the random trees ----------------------------------------------------------------------

_NAME = st.text("abcxyz019_-. ", min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..") and not n.startswith(".autofix")
)


@st.composite
def trees(draw: st.DrawFn, action: str) -> dict[str, tuple[bytes, int]]:
    """``relative path -> (bytes, age in days)``; at least one file old enough to act on."""
    files: dict[str, tuple[bytes, int]] = {}
    for _ in range(draw(st.integers(1, 6))):
        sub = draw(st.sampled_from(["", "", "sub/", "sub/deep/"]))
        kind = draw(st.sampled_from(["log", "gz", "tmp"] if action == "rotate" else ["tmp"]))
        name = f"{sub}{draw(_NAME)}.{kind}"
        size = draw(st.sampled_from([0, 1, 700, 70_000, 600_000]))
        data = draw(st.binary(min_size=min(size, 64), max_size=min(size, 64))) * (
            size // 64 if size >= 64 else 1
        )
        if kind == "gz":
            data = gzip.compress(data, mtime=0)
        age = draw(st.sampled_from([0, 3, 10]))
        files[name] = (data, age)
    first = next(iter(files))
    files[first] = (files[first][0], 10)
    return files


def _write(root: Path, files: dict[str, tuple[bytes, int]]) -> None:
    for rel, (data, age) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o640)
        stamp = NOW - age * DAY - 5
        os.utime(path, (stamp, stamp))


def _snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _leftovers(quarantine: Path, root: Path) -> list[str]:
    """What an unfinished step may leave: temp files, partial copies, broken archives."""
    found = [str(p) for p in root.rglob(".autofix-*")]
    for gz in root.rglob("*.gz"):
        try:
            gzip.decompress(gz.read_bytes())
        except (OSError, EOFError) as exc:
            found.append(f"{gz}: {exc}")
    for slot in slots(quarantine):
        if not (slot / JOURNAL).exists():  # killed before the first record: never used
            continue
        found += [str(p) for p in slot.iterdir() if p.name.endswith(".part")]
        unfinished = [e.path for e in read_journal(slot).entries if e.state == "intent"]
        found += [f"{slot}: unfinished step {p}" for p in unfinished]
    return found


def _executor(world: World, pipeline: Path, store: MetricStore) -> Executor:
    return Executor(store, load_pipeline(pipeline), load_settings(environ=world.env))


# -- the property --------------------------------------------------------------------------

# (the n-th file-system call, then at once or after a moment); an apply of six files
# makes about 60 such calls, a rollback about 20.
_DELAY = st.one_of(st.none(), st.none(), st.floats(0, 0.004))
_KILL = st.tuples(st.integers(1, 80), _DELAY)
_KILL_ROLLBACK = st.tuples(st.integers(1, 25), _DELAY)


@settings(
    max_examples=int(os.environ.get("CRASH_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    action=st.sampled_from(["clean", "rotate"]),
    data=st.data(),
    kill=_KILL,
    kill_rollback=st.one_of(st.none(), _KILL_ROLLBACK),
)
def test_kill_9_at_any_point_then_restart_and_rollback_restores_everything(
    world: World,
    action: str,
    data: st.DataObject,
    kill: tuple[int, float | None],
    kill_rollback: tuple[int, float | None] | None,
) -> None:
    world.count += 1
    files = data.draw(trees(action))
    root = world.base / f"root{world.count}"
    root.mkdir()
    _write(root, files)
    original = _snapshot(root)
    pipeline = world.base / f"p{world.count}.yaml"
    target = f"t{world.count}"  # a fresh target: no cooldown or breaker from earlier examples
    quarantine = world.quarantine / target  # on the tmpfs; one per example
    pipeline.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "name": target,
                        "kind": "logdir",
                        "path": str(root),
                        "quarantine": str(quarantine),
                    }
                ]
            }
        )
    )
    name = "files.clean_temp" if action == "clean" else "files.rotate_logs"
    params = {"older_than": "1d"} if action == "clean" else {}

    world.job(
        verb="apply",
        action=name,
        target=target,
        params=params,
        pipeline=str(pipeline),
        kill_at=kill[0],
        delay=kill[1],
    )
    after_kill = {p for p in _snapshot(root) if not Path(p).name.startswith(".autofix")}

    with MetricStore(world.env["AUTOFIX_DB_PATH"]) as store:  # the restart
        ex = _executor(world, pipeline, store)
        ex.recover()
        mine = [r for r in ex.audit.list(limit=5) if r.target == target]
        # Never applied twice: the restart moves nothing the dead process had not moved;
        # it may only take away an archive an unfinished step had made.
        after_recover = set(_snapshot(root))
        assert {p for p in after_recover if not p.endswith(".gz")} == {
            p for p in after_kill if not p.endswith(".gz")
        }
        assert {p for p in after_recover if p.endswith(".gz")} <= after_kill
        assert _leftovers(quarantine, root) == []
        rollable = {"succeeded", "failed", "interrupted"}
        fix = mine[0] if mine and mine[0].undo and mine[0].state in rollable else None
        if fix is not None and kill_rollback is None:
            rolled = ex.rollback(fix.id, "test")
            assert rolled.state == "rolled_back", rolled.as_dict(events=True)

    if fix is not None and kill_rollback is not None:
        world.job(
            verb="rollback",
            fix_id=fix.id,
            pipeline=str(pipeline),
            kill_at=kill_rollback[0],
            delay=kill_rollback[1],
        )
        with MetricStore(world.env["AUTOFIX_DB_PATH"]) as store:  # restart, roll back again
            ex = _executor(world, pipeline, store)
            ex.recover()
            record = ex.get(fix.id)
            if record.state != "rolled_back":
                rolled = ex.rollback(fix.id, "test")
                assert rolled.state == "rolled_back", rolled.as_dict(events=True)

    assert _snapshot(root) == original
    assert _leftovers(quarantine, root) == []
    for record in mine:  # rolled back now, or by the executor itself after a failure
        if record.undo:
            slot = Path(record.undo["quarantine"])
            assert sorted(p.name for p in slot.iterdir()) == [JOURNAL]
