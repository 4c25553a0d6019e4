"""files.clean_temp / files.rotate_logs on real directories: work, verify, roll back
byte for byte, and never touch anything outside the allowlisted root."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autofix.actions.base import ActionError, Context, NoOp, RefusedError
from autofix.actions.files import CleanTemp, RotateLogs, purge_quarantine, safe_parts
from autofix.errors import PartialApplyError
from autofix.pipeline import LogDirTarget

DAY = 86400


def _old(path: Path, data: bytes, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp))
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): _digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    root, quarantine, outside = tmp_path / "root", tmp_path / "quarantine", tmp_path / "outside"
    for d in (root, quarantine, outside):
        d.mkdir()
    return root, quarantine, outside


def _target(root: Path, quarantine: Path) -> LogDirTarget:
    return LogDirTarget(name="tmp", kind="logdir", path=root, quarantine=quarantine)


def test_clean_temp_moves_old_files_and_rolls_back_byte_for_byte(
    dirs: tuple[Path, Path, Path],
) -> None:
    root, quarantine, _ = dirs
    _old(root / "a.tmp", os.urandom(5000), 3)
    _old(root / "sub" / "b.tmp", b"\x00binary\xff" * 100, 5)
    fresh = _old(root / "fresh.tmp", b"keep me", 0)
    before_tree = _tree(root)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "1d"}, Context(fix_id=7))
    before = action.facts()
    steps = action.plan(before)
    assert not isinstance(steps, NoOp)
    assert sorted(s.args["path"] for s in steps) == ["a.tmp", "sub/b.tmp"]
    applied = action.apply(steps)
    assert not (root / "a.tmp").exists()
    assert fresh.exists()
    check = action.verify(before, action.facts())
    assert check.ok, check.reason
    assert "freed 5800 bytes" in check.reason
    assert (quarantine / "fix-7" / "manifest.json").is_file()
    mtime = (root / "sub").stat().st_mtime
    assert action.rollback(applied.undo).startswith("restored 2 file(s)")
    assert _tree(root) == before_tree
    assert abs((root / "a.tmp").stat().st_mtime - (time.time() - 3 * DAY)) < 5
    assert (root / "sub").stat().st_mtime >= mtime


def test_rotate_logs_gzips_old_logs_deletes_old_archives_and_rolls_back(
    dirs: tuple[Path, Path, Path],
) -> None:
    root, quarantine, _ = dirs
    log = _old(root / "app.log", b"line\n" * 2000, 2)
    archive = _old(root / "app.1.gz", gzip.compress(b"old"), 10)
    _old(root / "current.log", b"live\n", 0)
    before_tree = _tree(root)
    action = RotateLogs.bind(_target(root, quarantine), {}, Context(fix_id=8))
    before = action.facts()
    steps = action.plan(before)
    assert not isinstance(steps, NoOp)
    assert sorted(s.op for s in steps) == ["compress", "quarantine"]
    applied = action.apply(steps)
    assert not log.exists()
    assert not archive.exists()
    assert gzip.decompress((root / "app.log.gz").read_bytes()) == b"line\n" * 2000
    assert action.verify(before, action.facts()).ok
    action.rollback(applied.undo)
    assert _tree(root) == before_tree
    assert not (root / "app.log.gz").exists()


def test_symlink_inside_root_pointing_outside_is_never_followed(
    dirs: tuple[Path, Path, Path],
) -> None:
    root, quarantine, outside = dirs
    secret = _old(outside / "secret.txt", b"do not touch", 30)
    secret_dir = outside / "dir"
    _old(secret_dir / "inner.tmp", b"nor this", 30)
    (root / "link.tmp").symlink_to(secret)
    (root / "linkdir").symlink_to(secret_dir)
    _old(root / "real.tmp", b"x" * 10, 30)
    before_outside = _tree(outside)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "1d"}, Context(fix_id=9))
    facts = action.facts()
    assert facts["symlinks_skipped"] == 2
    steps = action.plan(facts)
    assert not isinstance(steps, NoOp)
    assert [s.args["path"] for s in steps] == ["real.tmp"]
    action.apply(steps)
    assert _tree(outside) == before_outside
    assert (root / "link.tmp").is_symlink()


def test_subdir_that_is_a_symlink_is_refused(dirs: tuple[Path, Path, Path]) -> None:
    root, quarantine, outside = dirs
    _old(outside / "x.tmp", b"outside", 30)
    (root / "escape").symlink_to(outside)
    action = CleanTemp.bind(
        _target(root, quarantine), {"subdir": "escape", "older_than": "0s"}, Context()
    )
    with pytest.raises(RefusedError, match="symlink"):
        action.facts()
    assert (outside / "x.tmp").read_bytes() == b"outside"


@pytest.mark.parametrize(
    "subdir",
    ["../outside", "/etc", "a/../../outside", "$(rm -rf /)", "`id`", "a\nb", "x; rm -rf /"],
)
def test_hostile_subdir_never_leaves_the_root(dirs: tuple[Path, Path, Path], subdir: str) -> None:
    root, quarantine, outside = dirs
    _old(outside / "victim.tmp", b"victim", 30)
    outcome: str
    try:
        action = CleanTemp.bind(
            _target(root, quarantine), {"subdir": subdir, "older_than": "0s"}, Context()
        )
        outcome = f"files:{len(action.facts()['files'])}"
    except RefusedError as exc:
        outcome = f"refused:{exc.gate}"
    except ActionError as exc:  # a literal directory name that does not exist under root
        outcome = "missing" if "cannot open" in str(exc) else str(exc)
    assert outcome in {"refused:allowlist", "missing", "files:0"}
    assert (outside / "victim.tmp").read_bytes() == b"victim"


@pytest.mark.parametrize("pattern", ["../*", "/etc/*", "a\nb"])
def test_hostile_pattern_is_refused(dirs: tuple[Path, Path, Path], pattern: str) -> None:
    root, quarantine, _ = dirs
    with pytest.raises(RefusedError) as caught:
        CleanTemp.bind(_target(root, quarantine), {"pattern": pattern}, Context())
    assert caught.value.gate == "params"


def test_quarantine_inside_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RefusedError, match="must not contain"):
        CleanTemp.bind(_target(tmp_path, tmp_path / "q"), {}, Context())


def test_safe_parts() -> None:
    assert safe_parts("a/./b//c") == ("a", "b", "c")
    for bad in ("/abs", "../x", "a/../../b", "a\x00b"):
        with pytest.raises(RefusedError):
            safe_parts(bad)


def test_purge_after_ttl(dirs: tuple[Path, Path, Path]) -> None:
    root, quarantine, _ = dirs
    _old(root / "a.tmp", b"a", 3)
    moved_at = datetime.now(UTC).replace(tzinfo=None)
    ctx = Context(fix_id=1, clock=lambda: moved_at)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "0s"}, ctx)
    steps = action.plan(action.facts())
    assert not isinstance(steps, NoOp)
    action.apply(steps)
    assert purge_quarantine(quarantine, timedelta(days=7), moved_at + timedelta(days=6)) == []
    purged = purge_quarantine(quarantine, timedelta(days=7), moved_at + timedelta(days=7))
    assert purged == [quarantine / "fix-1"]
    assert not (quarantine / "fix-1").exists()


def test_file_replaced_between_plan_and_apply_is_left_alone(
    dirs: tuple[Path, Path, Path],
) -> None:
    root, quarantine, outside = dirs
    _old(root / "a.tmp", b"a", 3)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "1d"}, Context(fix_id=3))
    steps = action.plan(action.facts())
    assert not isinstance(steps, NoOp)
    (root / "a.tmp").unlink()
    (root / "a.tmp").symlink_to(_old(outside / "t", b"target", 3))
    with pytest.raises(Exception, match="changed since it was planned"):
        action.apply(steps)
    assert (outside / "t").read_bytes() == b"target"
    assert (root / "a.tmp").is_symlink()


def test_now_comes_from_the_injected_clock(dirs: tuple[Path, Path, Path]) -> None:
    root, quarantine, _ = dirs
    when = datetime(2030, 1, 1)
    action = CleanTemp.bind(_target(root, quarantine), {}, Context(clock=lambda: when))
    assert action.facts()["now"] == when.replace(tzinfo=UTC).timestamp()


def test_failure_partway_reports_what_to_undo(dirs: tuple[Path, Path, Path]) -> None:
    root, quarantine, _ = dirs
    _old(root / "a.tmp", b"first", 3)
    _old(root / "b.tmp", b"second", 3)
    before_tree = _tree(root)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "1d"}, Context(fix_id=4))
    steps = action.plan(action.facts())
    assert not isinstance(steps, NoOp)
    # b.tmp vanishes after planning: a.tmp has been moved by the time apply gets to it.
    (root / "b.tmp").unlink()
    with pytest.raises(PartialApplyError, match="after 1 of 2 steps") as info:
        action.apply(steps)
    assert not (root / "a.tmp").exists()
    assert action.rollback(info.value.undo).startswith("restored 1 file(s)")
    assert (root / "a.tmp").read_bytes() == b"first"
    assert set(_tree(root)) == set(before_tree) - {"b.tmp"}
