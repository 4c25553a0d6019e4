"""The CLI's error path under random input: exit 2 and one line, never a traceback.

Random bytes, random CSV and random YAML/TOML go into ``autofix import``, the pipelines
loader (``fix list --pipeline``) and the settings loader (``--config``), through the
command's own entry point (``autofix.cli.main``, in this process: hundreds of runs in
seconds). Whatever the input, the command either works (exit 0) or fails with exit 2
and one line on stderr, never a traceback, and a failure leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autofix.cli import main
from autofix.store import MetricStore
from tests.clirun import run_autofix
from tests.fsutil import tmpfs

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass
class Cli:
    base: Path
    db: Path
    count: int = 0

    def file(self, suffix: str, content: bytes) -> Path:
        self.count += 1
        path = self.base / f"in{self.count}{suffix}"
        path.write_bytes(content)
        return path

    def run(self, *args: str) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        code: int | str | None = 0
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                main(args)
        except SystemExit as exc:
            code = exc.code
        return int(code or 0), stdout.getvalue(), stderr.getvalue()

    def fingerprint(self) -> dict[str, str]:
        """The store's files, byte for byte (a refused input never gets to open it)."""
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.base.glob("autofix.duckdb*"))
        }

    def rows(self) -> int:
        with MetricStore(self.db, read_only=True) as store:
            return store.count_samples()

    def check(self, *args: str) -> int:
        """Run; a failure must be exit 2, one line, no traceback, nothing stored."""
        before = self.fingerprint()
        code, _, err = self.run(*args)
        assert "Traceback" not in err, err
        if code != 0:
            lines = err.strip().splitlines()
            assert code == 2, (code, err)
            assert len(lines) == 1, err
            assert lines[0].startswith("autofix: error: "), err
            assert self.fingerprint() == before
        return code


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    base = tmp_path_factory.mktemp("fuzz")
    pipeline = base / "pipeline.yaml"
    pipeline.write_text("targets: []\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)  # no .env or autofix.toml of the checkout
        for key in [k for k in os.environ if k.startswith("AUTOFIX_")]:
            mp.delenv(key)
        mp.setenv("AUTOFIX_DB_PATH", str(base / "autofix.duckdb"))
        mp.setenv("AUTOFIX_PIPELINE", str(pipeline))
        mp.setenv("AUTOFIX_QUARANTINE_DIR", str(base / "quarantine"))
        mp.setenv("AUTOFIX_SNAPSHOT_DIR", str(base / "snapshot"))
        mp.setenv("COLUMNS", "120")
        world = Cli(base, base / "autofix.duckdb")
        good = world.file(".csv", b"timestamp,host,metric,value\n2026-01-01T00:00:00Z,h,m,1\n")
        assert world.run("import", str(good))[0] == 0
        assert world.rows() == 1
        yield world


# -- random CSV ------------------------------------------------------------------------

_COLUMNS = ["timestamp", "host", "metric", "value", "labels", "capacity", "unit", "x", ""]
_FIELDS = st.one_of(
    st.sampled_from(
        [
            "",
            "1",
            "1.10",
            "-5",
            "1e400",
            "NaN",
            "inf",
            "1767225600",
            "1767225600000",
            "99999999999999999999999",
            "2026-01-01T00:00:00Z",
            "2026-13-45",
            "yesterday",
            '"',
            '""',
            '"a,b"',
            '"{""a"": 1}"',
            '"{""a"": [1]}"',
            "{bad",
            "\x1b[31m",
            "[bold]x[/]",
            "é",
        ]
    ),
    st.text(string.printable, max_size=12),
)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=8))
    if draw(st.booleans()):
        header = ["timestamp", "host", "metric", "value", *header[:3]]
    rows = [",".join(header)]
    for _ in range(draw(st.integers(0, 6))):
        width = len(header) + draw(st.sampled_from([0, 0, 0, -1, 1]))
        rows.append(",".join(draw(_FIELDS) for _ in range(max(width, 0))))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(rows) + draw(st.sampled_from([newline, ""]))
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8", "latin-1"])), "replace")


@FUZZ
@given(content=csv_files())
def test_random_csv_into_import(cli: Cli, content: bytes) -> None:
    cli.check("import", str(cli.file(".csv", content)))


@FUZZ
@given(content=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".parquet"]))
def test_random_bytes_into_import(cli: Cli, content: bytes, suffix: str) -> None:
    cli.check("import", str(cli.file(suffix, content)))


# -- random YAML into the pipelines loader ------------------------------------------------

_WORDS = st.sampled_from(
    ["targets", "jobs", "rules", "name", "kind", "path", "logdir", "tcp", "command", "argv",
     "params", "actions", "files.clean_temp", "nope.x", "gates", "mode", "auto", "when",
     "type", "threshold", "every", "1m", "cron", "maintenance", "quarantine", "[0-9", "/"]
)  # fmt: skip
_SCALARS = st.one_of(
    _WORDS, st.integers(-(10**20), 10**20), st.floats(), st.booleans(), st.none(), st.text()
)
_TREES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_WORDS, inner, max_size=4)
    ),
    max_leaves=20,
)
_YAML_TEXT = st.text(alphabet=string.printable + "&*!|>%@`é\x00\x1b", max_size=200)


@FUZZ
@given(
    content=st.one_of(
        _TREES.map(lambda tree: yaml.safe_dump(tree).encode()),
        _YAML_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.binary(max_size=200),
    )
)
def test_random_yaml_into_the_pipelines_loader(cli: Cli, content: bytes) -> None:
    cli.check("fix", "list", "--pipeline", str(cli.file(".yaml", content)))


# -- random TOML into the settings loader --------------------------------------------------

_SETTING = st.sampled_from(
    ["db_path", "log_level", "fix_mode", "collect_interval", "api_tokens", "api_port",
     "notify_slack_url", "quarantine_ttl", "unknown_thing", "autofix"]
)  # fmt: skip
_TOML_VALUE = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.text(max_size=20).map(json.dumps),
    st.sampled_from(["true", "[1, 2]", "{a = 1}", "1979-05-27", "nan", "inf", "'2m'"]),
)


@FUZZ
@given(
    content=st.one_of(
        st.lists(st.tuples(_SETTING, _TOML_VALUE), max_size=5).map(
            lambda pairs: "".join(f"{k} = {v}\n" for k, v in pairs).encode()
        ),
        st.text(alphabet=string.printable + "é", max_size=200).map(str.encode),
        st.binary(max_size=200),
    )
)
def test_random_toml_into_the_settings_loader(cli: Cli, content: bytes) -> None:
    cli.check("--config", str(cli.file(".toml", content)), "config", "show")


# -- the real command on the cases the issue found --------------------------------------


def _env(base: Path) -> dict[str, str]:
    pipeline = base / "pipeline.yaml"
    pipeline.write_text("targets: []\n")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base),
        "AUTOFIX_DB_PATH": str(base / "data" / "autofix.duckdb"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_QUARANTINE_DIR": str(base / "quarantine"),
        "AUTOFIX_LOCK_WAIT": "30s",
    }


def _one_line(proc: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0], proc.stderr


def test_a_fifo_is_refused_at_once_even_while_another_process_writes(tmp_path: Path) -> None:
    env = _env(tmp_path)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from autofix.store import MetricStore; "
         "s = MetricStore(sys.argv[1]); print('held', flush=True); time.sleep(60)",
         env["AUTOFIX_DB_PATH"]],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        proc = run_autofix(["import", str(fifo)], env, check=None, timeout=60)
        assert time.monotonic() - started < 20  # not AUTOFIX_LOCK_WAIT, not forever
        _one_line(proc, 2, "pipe.csv: not a regular file")
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def test_a_full_disk_at_commit_is_one_line_and_keeps_the_store(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    with tmpfs(disk, "8m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here")
        env = {**_env(tmp_path), "AUTOFIX_DB_PATH": str(disk / "autofix.duckdb")}
        first = tmp_path / "first.csv"
        first.write_text("timestamp,host,metric,value\n2026-01-01T00:00:00Z,h,kept,1\n")
        run_autofix(["import", str(first)], env)
        more = tmp_path / "more.csv"
        rows = [f"{1767225600 + i},h,lost,{i}" for i in range(3000)]
        more.write_text("timestamp,host,metric,value\n" + "\n".join(rows) + "\n")
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={disk / 'filler'}", "bs=4k"], capture_output=True
        )
        proc = run_autofix(["import", str(more)], env, check=None)
        _one_line(proc, 1, "No space left on device")
        (disk / "filler").unlink()
        with MetricStore(disk / "autofix.duckdb", read_only=True) as store:
            assert store.series()["metric"].tolist() == ["kept"]


def test_a_store_directory_on_a_read_only_filesystem_is_one_line(tmp_path: Path) -> None:
    readonly = tmp_path / "ro"
    with tmpfs(readonly, "1m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here")
        subprocess.run(["mount", "-o", "remount,ro", str(readonly)], check=True)
        env = {**_env(tmp_path), "AUTOFIX_DB_PATH": str(readonly / "missing" / "a.duckdb")}
        good = tmp_path / "good.csv"
        good.write_text("timestamp,host,metric,value\n2026-01-01T00:00:00Z,h,m,1\n")
        proc = run_autofix(["import", str(good)], env, check=None)
        _one_line(proc, 1, "cannot create the store's directory: Read-only file system")


def test_a_malformed_quarantine_slot_is_reported_and_the_commands_go_on(tmp_path: Path) -> None:
    env = _env(tmp_path)
    for name, text in (("fix-1", "not json"), ("fix-2", '{"moved_at": "garbage"}')):
        slot = tmp_path / "quarantine" / name
        slot.mkdir(parents=True)
        (slot / "manifest.json").write_text(text)
    listed = run_autofix(["fix", "list", "--json"], env)
    assert json.loads(listed.stdout) == []
    assert "quarantine slot skipped" in listed.stderr
    assert "fix-1" in listed.stderr
    assert "fix-2" in listed.stderr
    assert "Traceback" not in listed.stderr
    shown = run_autofix(["fix", "show", "7"], env, check=2)
    assert "no fix with id 7" in shown.stderr
