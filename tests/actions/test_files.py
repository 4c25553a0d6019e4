"""files.clean_temp / files.rotate_logs on real directories: work, verify, roll back
byte for byte, and never touch anything outside the allowlisted root."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autofix.actions._quarantine import JOURNAL, read_journal
from autofix.actions.base import ActionError, Context, NoOp, RefusedError, Step
from autofix.actions.files import CleanTemp, RotateLogs, purge_quarantine, safe_parts
from autofix.errors import PartialApplyError
from autofix.pipeline import LogDirTarget
from tests.fsutil import tmpfs

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
    slot = Path(applied.undo["quarantine"])
    assert slot.parent == quarantine
    assert slot.name.startswith("fix-7-")
    assert [e.path for e in read_journal(slot).entries] == ["a.tmp", "sub/b.tmp"]
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
    applied = action.apply(steps)
    slot = Path(applied.undo["quarantine"])
    assert (
        purge_quarantine(quarantine, timedelta(days=7), moved_at + timedelta(days=6)).purged == []
    )
    purged = purge_quarantine(quarantine, timedelta(days=7), moved_at + timedelta(days=7))
    assert purged.purged == [slot]
    assert not slot.exists()


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


# -- issue 11: names it cannot handle, failures partway, slots, malformed quarantines ------


def test_names_with_control_characters_are_skipped_and_reported_at_plan_time(
    dirs: tuple[Path, Path, Path],
) -> None:
    root, quarantine, _ = dirs
    for name in ("a.tmp", "b.tmp", "zzz\nnewline", "esc\x1b]0;x\x07.tmp"):
        _old(root / name, name.encode(), 3)
    _old(root / "bad\rdir" / "inner.tmp", b"inner", 3)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "1d"}, Context(fix_id=5))
    steps = action.plan(action.facts())
    assert not isinstance(steps, NoOp)
    assert [s.op for s in steps] == ["quarantine", "quarantine", "skip"]
    assert "'zzz\\nnewline'" in steps[-1].detail
    assert sorted(steps[-1].args["paths"]) == sorted(
        ["zzz\nnewline", "esc\x1b]0;x\x07.tmp", "bad\rdir"]
    )
    applied = action.apply(steps)
    assert applied.output == "quarantined a.tmp\nquarantined b.tmp"
    assert (root / "zzz\nnewline").exists()
    assert (root / "bad\rdir" / "inner.tmp").exists()
    action.rollback(applied.undo)
    assert (root / "a.tmp").read_bytes() == b"a.tmp"


def test_only_unhandled_names_is_a_noop_that_names_them(dirs: tuple[Path, Path, Path]) -> None:
    root, quarantine, _ = dirs
    _old(root / "zzz\nnewline", b"x", 3)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "1d"}, Context())
    plan = action.plan(action.facts())
    assert isinstance(plan, NoOp)
    assert "'zzz\\nnewline'" in plan.reason


def test_any_failure_partway_reports_the_undo_and_leaves_no_step_half_done(
    dirs: tuple[Path, Path, Path],
) -> None:
    root, quarantine, _ = dirs
    _old(root / "a.tmp", b"first", 3)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "1d"}, Context(fix_id=6))
    steps = action.plan(action.facts())
    assert not isinstance(steps, NoOp)
    # A step the action refuses (a path it cannot handle) after one that worked: not an
    # ActionError, and still a partial apply the executor can roll back.
    bad = Step("quarantine", "bad", {"path": "x\ny.tmp", "ino": 1})
    with pytest.raises(PartialApplyError, match="after 1 of 2 steps") as info:
        action.apply([*steps, bad])
    assert action.rollback(info.value.undo).startswith("restored 1 file(s)")
    assert (root / "a.tmp").read_bytes() == b"first"


def test_a_slot_is_never_reused_across_stores_sharing_a_quarantine(
    dirs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, quarantine, _ = dirs
    other = tmp_path / "other-root"
    _old(root / "a.tmp", b"store one", 3)
    _old(other / "a.tmp", b"store two", 3)
    undos = []
    for where in (root, other):  # fix 1 of two stores (or of a store restored from backup)
        action = CleanTemp.bind(_target(where, quarantine), {"older_than": "1d"}, Context(fix_id=1))
        steps = action.plan(action.facts())
        assert not isinstance(steps, NoOp)
        undos.append((action, action.apply(steps).undo))
    assert undos[0][1] != undos[1][1]
    for action, undo in undos:
        action.rollback(undo)
    assert (root / "a.tmp").read_bytes() == b"store one"
    assert (other / "a.tmp").read_bytes() == b"store two"


def test_a_rollback_for_another_root_is_refused(
    dirs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, quarantine, _ = dirs
    _old(root / "a.tmp", b"a", 3)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "1d"}, Context(fix_id=2))
    steps = action.plan(action.facts())
    assert not isinstance(steps, NoOp)
    undo = action.apply(steps).undo
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = CleanTemp.bind(_target(elsewhere, quarantine), {}, Context(fix_id=2))
    with pytest.raises(ActionError, match="belongs to"):
        other.rollback(undo)
    assert not (elsewhere / "a.tmp").exists()


def test_restoring_a_purged_quarantine_says_so(dirs: tuple[Path, Path, Path]) -> None:
    root, quarantine, _ = dirs
    action = CleanTemp.bind(_target(root, quarantine), {}, Context())
    with pytest.raises(ActionError, match="quarantine is gone"):
        action.rollback({"quarantine": str(quarantine / "fix-1-gone")})


def test_malformed_slots_are_skipped_and_reported_the_rest_is_purged(
    dirs: tuple[Path, Path, Path],
) -> None:
    _, quarantine, _ = dirs
    now = datetime(2030, 1, 10)
    bad = {
        "fix-1": "not json",
        "fix-2": '{"moved_at": "garbage", "entries": []}',
        "fix-3": '["a list"]',
    }
    for name, text in bad.items():
        (quarantine / name).mkdir()
        (quarantine / name / "manifest.json").write_text(text)
    (quarantine / "fix-4-x").mkdir()
    (quarantine / "fix-4-x" / JOURNAL).write_text('{"op": "begin"}\n')
    old_aware = quarantine / "fix-5"  # a zone-aware moved_at is a time like any other
    old_aware.mkdir()
    (old_aware / "manifest.json").write_text('{"moved_at": "2030-01-01T00:00:00+02:00"}')
    fresh = quarantine / "fix-6"
    fresh.mkdir()
    (fresh / "manifest.json").write_text('{"moved_at": "2030-01-09T00:00:00"}')
    result = purge_quarantine(quarantine, timedelta(days=7), now)
    assert result.purged == [old_aware]
    assert len(result.skipped) == 4
    for name in ("fix-1", "fix-2", "fix-3", "fix-4-x"):
        assert any(name in reason for reason in result.skipped), (name, result.skipped)
        assert (quarantine / name).exists()
    assert fresh.exists()


def test_restored_slots_are_purged_after_the_ttl(dirs: tuple[Path, Path, Path]) -> None:
    root, quarantine, _ = dirs
    _old(root / "a.tmp", b"a", 3)
    moved_at = datetime(2030, 1, 1)
    ctx = Context(fix_id=1, clock=lambda: moved_at)
    action = CleanTemp.bind(_target(root, quarantine), {"older_than": "0s"}, ctx)
    steps = action.plan(action.facts())
    assert not isinstance(steps, NoOp)
    undo = action.apply(steps).undo
    action.rollback(undo)
    slot = Path(undo["quarantine"])
    assert sorted(p.name for p in slot.iterdir()) == [JOURNAL]  # every file went back
    result = purge_quarantine(quarantine, timedelta(days=7), moved_at + timedelta(days=7))
    assert result.purged == [slot]


def test_a_slot_from_before_the_journal_still_restores(dirs: tuple[Path, Path, Path]) -> None:
    root, quarantine, _ = dirs
    legacy = quarantine / "fix-3"
    legacy.mkdir()
    (legacy / "000000").write_bytes(b"old bytes")
    stamp = 1_700_000_000_000_000_000
    entry = {
        "slot": "000000",
        "path": "sub/a.tmp",
        "size": 9,
        "mtime_ns": stamp,
        "mode": 0o640,
        "sha256": hashlib.sha256(b"old bytes").hexdigest(),
    }
    manifest = {
        "root": str(root),
        "fix_id": 3,
        "moved_at": "2030-01-01T00:00:00",
        "entries": [entry],
    }
    (legacy / "manifest.json").write_text(json.dumps(manifest))
    (root / "sub").mkdir()
    action = CleanTemp.bind(_target(root, quarantine), {}, Context(fix_id=3))
    assert action.rollback({"quarantine": str(legacy)}).startswith("restored 1 file(s)")
    restored = root / "sub" / "a.tmp"
    assert restored.read_bytes() == b"old bytes"
    assert (restored.stat().st_mode & 0o777, restored.stat().st_mtime_ns) == (0o640, stamp)


def test_a_full_quarantine_partway_leaves_no_partial_copy(tmp_path: Path) -> None:
    root = tmp_path / "root"
    quarantine = tmp_path / "q"
    with tmpfs(quarantine, "1m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here")
        payloads = {f"{i}.tmp": os.urandom(300_000) for i in range(5)}
        for name, data in payloads.items():
            _old(root / name, data, 3)
        action = CleanTemp.bind(_target(root, quarantine), {"older_than": "1d"}, Context(fix_id=8))
        steps = action.plan(action.facts())
        assert not isinstance(steps, NoOp)
        with pytest.raises(PartialApplyError, match="No space left") as info:
            action.apply(steps)
        slot = Path(info.value.undo["quarantine"])
        moved = [e.slot for e in read_journal(slot).entries if e.state == "moved"]
        assert sorted(p.name for p in slot.iterdir()) == sorted([JOURNAL, *moved])
        action.rollback(info.value.undo)
        assert {p.name: p.read_bytes() for p in root.iterdir()} == payloads
        assert sorted(p.name for p in slot.iterdir()) == [JOURNAL]
