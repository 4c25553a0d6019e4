"""What the CLI prints: data literally (no markup, no terminal escapes), tables at 80 columns."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from autofix.cli._render import Col, clean, line, table
from tests.clirun import run_autofix

HOSTILE = [
    "[/]",
    "[bold red]boom[/]",
    "evil\x1b]0;pwned\x07title",
    "\x1b[31mred\x1b[0m",
    "c1\x9bcsi",
    "bidi\u202eevil",
    "nl\nhost",
]


def _render(renderable: object, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", HOSTILE)
def test_clean_shows_control_codes_escaped_and_keeps_markup_literal(value: str) -> None:
    shown = _render(line("host ", (value, "bold")))
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u202e" not in shown
    assert shown.rstrip("\n").count("\n") == 0  # one value, one line
    assert clean(value) in shown
    if value.startswith("["):
        assert value in shown  # markup printed as written


def test_undecodable_file_names_print() -> None:
    name = b"caf\xe9.tmp".decode("utf-8", "surrogateescape")
    assert clean(name) == "caf\\udce9.tmp"
    _render(line(name))  # no UnicodeEncodeError


def test_key_columns_are_never_cut_and_long_cells_fold_at_80_columns() -> None:
    names = ["AUTOFIX_FIX_MAINTENANCE_WINDOWS", "AUTOFIX_NOTEBOOK_SIZE", "files.clean_temp"]
    listing = table(Col("setting", key=True), "value", "source", "help")
    for name in names:
        listing.add_row(name, "q" * 70, "file:/etc/autofix/autofix.toml", "help " * 30)
    shown = _render(listing)
    assert all(len(row) <= 80 for row in shown.splitlines())
    for name in names:
        assert name in shown
    assert "…" not in shown
    assert "q" * 70 not in shown.replace("\n", "")  # folded, not cut: every x is still there
    assert shown.count("q") == 3 * 70


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
        "AUTOFIX_PIPELINE": str(tmp_path / "pipeline.yaml"),
        "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "quarantine"),
        "COLUMNS": "80",
    }


def _no_escapes(text: str) -> None:
    bad = [c for c in text if (ord(c) < 0x20 and c not in "\n") or 0x7F <= ord(c) <= 0x9F]
    assert bad == [], repr(text)


def test_series_prints_hostile_hosts_and_labels_literally(tmp_path: Path) -> None:
    env = _env(tmp_path)
    rows = ["timestamp,host,metric,value,labels"]
    for i, host in enumerate(HOSTILE):
        quoted = '"' + host.replace('"', '""') + '"'
        label = json.dumps({"path": f"[link=file:///etc]x{i}\x1b[2J"}).replace('"', '""')
        rows.append(f'2026-01-01T00:0{i}:00,{quoted},node_load1,1,"{label}"')
    (tmp_path / "h.csv").write_text("\n".join(rows) + "\n")
    run_autofix(["import", str(tmp_path / "h.csv")], env)
    narrow = run_autofix(["series"], env)
    _no_escapes(narrow.stdout + narrow.stderr)
    assert all(len(row) <= 80 for row in narrow.stdout.splitlines())
    wide = {**env, "COLUMNS": "250"}
    listed = run_autofix(["series"], wide)
    summary = run_autofix(["series", "--summary"], wide)
    for proc in (listed, summary):
        _no_escapes(proc.stdout + proc.stderr)
        assert "[/]" in proc.stdout
        assert "[bold red]boom[/]" in proc.stdout
        assert "evil\\x1b]0;pwned\\x07title" in proc.stdout
    assert "path=[link=file:///etc]x0\\x1b[2J" in listed.stdout


def test_fix_run_prints_a_plan_with_hostile_file_names_literally(tmp_path: Path) -> None:
    env = _env(tmp_path)
    root = tmp_path / "tmpdir"
    root.mkdir()
    for name in ("[bold]x[reset].tmp", "\x1b]8;;evil\x07link.tmp"):
        (root / name).write_bytes(b"old")
        stamp = time.time() - 3 * 86400
        os.utime(root / name, (stamp, stamp))
    Path(env["AUTOFIX_PIPELINE"]).write_text(
        f"targets:\n  - {{name: tmp, kind: logdir, path: {root}}}\n"
    )
    args = ["fix", "run", "files.clean_temp", "--target", "tmp", "--dry-run"]
    proc = run_autofix(args, {**env, "COLUMNS": "200"})
    _no_escapes(proc.stdout + proc.stderr)
    assert "[bold]x[reset].tmp" in proc.stdout
    assert "\\x1b]8;;evil\\x07link.tmp" in proc.stdout


def test_config_show_and_actions_are_readable_at_80_columns(tmp_path: Path) -> None:
    env = _env(tmp_path)
    shown = run_autofix(["config", "show"], env).stdout
    actions = run_autofix(["actions"], env).stdout
    for text in (shown, actions):
        assert all(len(row) <= 80 for row in text.splitlines()), text
        assert "…" not in text
    from autofix.config import Settings

    for name in Settings.model_fields:
        assert f"AUTOFIX_{name.upper()}" in shown
    for action in ("files.clean_temp", "files.rotate_logs", "postgres.terminate_idle"):
        assert action in actions
