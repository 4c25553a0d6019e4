"""The CLI's side of the control plane: which commands go where, the owner record, JSON
times, and a `--help` that imports nothing heavy."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autofix.cli import _command
from autofix.cli._app import plain, words
from autofix.control import client, owner


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["status", "--json"], ("status",)),
        (["--config", "x.toml", "fix", "approve", "12"], ("fix", "approve")),
        (["silence", "add", "target=web", "--comment", "c"], ("silence", "add")),
        (["config", "check"], ("config", "check")),
        (["fix", "approve"], None),  # a usage error: printed by the local run
        (["fix"], None),  # a group's help
        (["nope"], None),
    ],
)
def test_command_path(argv: list[str], path: tuple[str, ...] | None) -> None:
    found = client.command_path(_command(), argv)
    assert (found[0] if found else None) == path


def test_store_free_commands_stay_local_and_reads_are_known() -> None:
    for local in (("serve",), ("train",), ("config", "check"), ("forecast",)):
        assert local in client.LOCAL
    assert client.READS.isdisjoint(client.LOCAL)
    # Every read a viewer may run over HTTP is a command that exists.
    for path in client.READS:
        assert client.command_path(_command(), [*path, "--help"]) is None  # --help: local
        assert _command().commands[path[0]] is not None


def test_a_stale_owner_record_is_ignored(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    done = subprocess.run(["true"], check=True)
    assert done.returncode == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = {"pid": dead.pid, "start": None, "socket": str(tmp_path / "s"), "api_url": None}
    owner.record_path(db).write_text(json.dumps({**record, "since": "", "version": ""}))
    found = owner.read(db)
    assert found is not None
    assert not found.alive()
    assert owner.read(tmp_path / "none.duckdb") is None
    owner.record_path(tmp_path / "bad.duckdb").write_text("{not json")
    assert owner.read(tmp_path / "bad.duckdb") is None


def test_a_long_store_path_gets_a_private_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / "autofix.duckdb"
    path = owner.socket_path(deep)
    assert len(os.fsencode(path)) <= 107
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert owner.socket_path(tmp_path / "a.duckdb") == (tmp_path / "a.duckdb.sock").absolute()


def test_json_times_are_utc_with_z() -> None:
    naive = datetime(2026, 3, 1, 12, 0, 5)
    assert plain(naive) == "2026-03-01T12:00:05Z"
    assert plain(datetime(2026, 3, 1, 13, tzinfo=UTC) + timedelta(microseconds=5)) == (
        "2026-03-01T13:00:00.000005Z"
    )
    assert plain({"at": "2026-03-01 12:00:05", "why": "since 2026-03-01 12:00"}) == {
        "at": "2026-03-01T12:00:05Z",
        "why": "since 2026-03-01 12:00",  # text that only contains a time stays text
    }
    assert plain([math.nan, math.inf, 1.5]) == [None, None, 1.5]
    import numpy as np
    import pandas as pd

    assert plain({"n": np.int64(3), "t": pd.Timestamp("2026-03-01 12:00"), "x": pd.NaT}) == {
        "n": 3,
        "t": "2026-03-01T12:00:00Z",
        "x": None,
    }


def test_summaries_read_as_words() -> None:
    summary = {"predictions": 12, "fixes": {"succeeded": 1}, "unhealthy": [], "causes": {}}
    assert words(summary) == "predictions 12; fixes: 1 succeeded; unhealthy: none; causes: none"
    assert words({"inhibited": ["web"], "ok": True, "ratio": 0.25}) == (
        "inhibited: web; ok: yes; ratio 0.25"
    )


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from autofix.cli import main\n"
        "sys.argv = ['autofix', 'fix', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('pandas', 'numpy', 'duckdb', 'pydantic', 'pydantic_settings', 'httpx',"
        " 'sklearn', 'mlflow', 'structlog')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stderr.strip() == "[]"
    assert "approve" in done.stdout


def test_doctests() -> None:
    import doctest

    import autofix.cli._app
    import autofix.control.owner
    import autofix.pause
    import autofix.silences

    for module in (autofix.pause, autofix.silences, autofix.control.owner, autofix.cli._app):
        assert doctest.testmod(module).failed == 0, module.__name__
