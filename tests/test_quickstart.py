"""The README's quick start, as a user runs it: every command, in order, in a fresh
directory (a copy of the files a checkout has), exits 0 — and `run retention` after
`import data/samples` keeps the samples."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).parents[1]
#: Lines that set up the environment the test already runs in (the venv is this one).
SETUP = ("make install", ". .venv/bin/activate")


def quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "no shell block under ## Quick start"
    commands = []
    for line in block.group(1).splitlines():
        command = line.split("  #", 1)[0].strip()
        if command and not command.startswith(SETUP):
            commands.extend(part.strip() for part in command.split(";") if part.strip())
    return commands


def test_the_quick_start_is_ten_lines() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8").split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None
    assert len(block.group(1).splitlines()) <= 10


def test_the_quick_start_names_only_files_that_exist() -> None:
    for command in quick_start():
        for word in shlex.split(command):
            if word.startswith(("data/", "pipelines/")) and "latest" not in word:
                assert (ROOT / word).exists(), f"{command}: {word} does not exist"


@pytest.mark.timeout(900)
def test_every_quick_start_command_runs_in_a_fresh_directory(tmp_path: Path) -> None:
    fresh = tmp_path / "checkout"
    fresh.mkdir()
    for part in ("pipelines", "data/samples", "data/examples", "data/real"):
        shutil.copytree(ROOT / part, fresh / part)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFIX_")}
    env.update({"HOME": str(tmp_path), "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
                "COLUMNS": "160"})  # fmt: skip
    commands = quick_start()
    assert any(c.startswith("autofix import data/samples") for c in commands)
    assert any(c == "autofix run retention" for c in commands)
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "autofix", command
        done = subprocess.run(
            argv, cwd=fresh, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        if command.startswith("autofix import data/samples"):
            imported = _samples(fresh)
        if command == "autofix run retention":
            # Retention keeps the samples just imported: raw, or rolled up (each 5-minute
            # sample is one bucket), never dropped.
            assert _samples(fresh) == imported
    assert (fresh / "data" / "reports" / "latest" / "index.html").is_file()


def _samples(checkout: Path) -> int:
    with duckdb.connect(str(checkout / "data" / "autofix.duckdb"), read_only=True) as con:
        row = con.execute(
            """SELECT count(*) FROM (
                   SELECT series_id, ts FROM samples
                   UNION SELECT series_id, last_ts FROM samples_5m
               ) JOIN series USING (series_id) WHERE series.host <> ?""",
            [os.uname().nodename],
        ).fetchone()
    assert row is not None
    return int(row[0])
