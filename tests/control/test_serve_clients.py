"""A real `autofix serve` owns the store; the CLI, run from other processes, goes through it.

One running service over real targets — a web program under a real supervisord, a real
Redis, a log directory with a quota — and the `autofix` command run as a user would, in a
second process:

- the quick start's commands that use the store give the same exit code and the same
  JSON shape as without a service (they ran first, with no service), and none of them
  meets a lock;
- `fix approve` from the CLI runs the pending fix (a real restart);
- `pause` stops the self-healing loop's fix of a real fault (a SIGSTOPped web program),
  `resume` lets it through; a silence on the target does the same and ends on time;
- over HTTP from "another host" (AUTOFIX_URL + AUTOFIX_TOKEN) a viewer reads but cannot
  pause; an owner that does not answer is one line naming its PID.

The tests run in order on one service.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.api.world import OPERATOR, VIEWER
from tests.clirun import AUTOFIX, run_autofix
from tests.conftest import _under_ci
from tests.servers import RedisServer, ServerUnavailableError, free_port, supervisord_server

ROOT = Path(__file__).parents[2]


def keys(value: Any) -> Any:
    """The shape of a JSON document: its keys, recursively (values differ run to run)."""
    if isinstance(value, dict):
        return {k: keys(v) for k, v in value.items()}
    if isinstance(value, list):
        merged: dict[str, Any] = {}
        for item in value:
            shape = keys(item)
            if isinstance(shape, dict):
                merged.update(shape)
        return [merged] if merged else []
    return None


def documents(stdout: str) -> list[Any]:
    """Every JSON document printed (one per line)."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@dataclass
class Home:
    base: Path
    env: dict[str, str]
    supervisor_url: str
    port: int
    serve: subprocess.Popen[str] | None = None
    local: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def cli(
        self, *args: str, check: int | None = 0, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return run_autofix(list(args), {**self.env, **env}, check, cwd=self.base, timeout=180)

    def json(self, *args: str, **env: str) -> Any:
        docs = documents(self.cli(*args, **env).stdout)
        return docs[0] if len(docs) == 1 else docs

    def pid(self) -> int:
        with xmlrpc.client.ServerProxy(self.supervisor_url) as rpc:
            return int(rpc.supervisor.getProcessInfo("web")["pid"])

    def fixes(self) -> list[dict[str, Any]]:
        return list(self.json("fix", "list", "--json", "--limit", "200"))


def _pipeline(base: Path, supervisor_url: str, health_url: str, redis_url: str) -> Path:
    (base / "spool").mkdir()
    old = base / "spool" / "old.tmp"  # something for `fix run files.clean_temp` to plan
    old.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    data = {
        "jobs": {
            "collect": {"every": "1s"},
            "health": {"every": "1s"},
            **{
                name: {"every": "1h", "enabled": False}
                for name in ("remediate", "train", "maintenance", "report", "retention", "kpi")
            },
            "snapshot": {"every": "1h", "enabled": False},
        },
        "targets": [
            {
                "name": "web",
                "kind": "supervisor",
                "url": supervisor_url,
                "program": "web",
                "health_url": health_url,
                "recovery": {
                    "after": 2,
                    "actions": [{"action": "service.restart"}],
                    "mode": "auto",
                    "gates": {"cooldown": "0s", "max_runs": 100, "flap_count": 100},
                },
            },
            {"name": "cache", "kind": "redis", "url": redis_url},
            {"name": "spool", "kind": "logdir", "path": str(base / "spool"), "capacity": 1e6},
        ],
    }
    file = base / "pipeline.yaml"
    file.write_text(yaml.safe_dump(data))
    return file


@pytest.fixture(scope="module")
def home(redis_srv: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    base = tmp_path_factory.mktemp("control")
    try:
        sup_cm = supervisord_server(program="web", stopwaitsecs=1)
        sup = sup_cm.__enter__()
    except ServerUnavailableError as exc:
        if _under_ci():
            pytest.fail(f"CI=true but {exc}")
        pytest.skip(str(exc))
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base),
        "COLUMNS": "120",
        "AUTOFIX_DB_PATH": str(base / "data" / "autofix.duckdb"),
        "AUTOFIX_SNAPSHOT_DIR": str(base / "data" / "snapshot"),
        "AUTOFIX_MODELS_DIR": str(base / "models"),
        "AUTOFIX_QUARANTINE_DIR": str(base / "quarantine"),
        "AUTOFIX_REPORT_DIR": str(base / "reports"),
        "AUTOFIX_PIPELINE": str(_pipeline(base, sup.url, sup.health_url, redis_srv.url)),
        "AUTOFIX_HOSTNAME": "web-host",
        "AUTOFIX_FIX_MODE": "approve",
        "AUTOFIX_FIX_VERIFY_WAIT": "500ms",
        # A restart here is followed at once by the next fault: no settling between them.
        "AUTOFIX_FIX_SETTLE": "1s",
        "AUTOFIX_PROBE_TIMEOUT": "1s",
        "AUTOFIX_API_PORT": str(port),
        "AUTOFIX_API_TOKENS": f"ops:operator:{OPERATOR},eve:viewer:{VIEWER}",
    }
    found = Home(base, env, sup.url, port)
    try:
        yield found
    finally:
        if found.serve is not None and found.serve.poll() is None:
            found.serve.send_signal(signal.SIGTERM)
            found.serve.wait(timeout=60)
        sup_cm.__exit__(None, None, None)


#: The quick start's commands that use the store, as a script would run them (--json).
QUICK_START: list[tuple[str, ...]] = [
    ("collect", "--once", "--json"),
    ("import", str(ROOT / "data" / "samples"), "--json"),
    ("series", "--summary", "--json"),
    ("series", "--host", "web-2", "--json"),
    ("export", "--parquet", "snapshot-copy", "--json"),
    ("run", "retention", "--json"),
    ("fix", "run", "files.clean_temp", "--target", "spool", "--dry-run", "--json"),
    ("run", "health", "--json"),
    ("jobs", "--json"),
    ("status", "--json"),
    ("kpi", "--json"),
    ("report", "--out", "report-dir", "--json"),
    ("fix", "label", "1", "--false", "--json"),
    ("maintenance", "plan", "--json"),
    ("maintenance", "list", "--json"),
    ("fix", "list", "--json"),
    ("fix", "show", "1", "--json"),
    ("silence", "list", "--json"),
]


def _run_all(home: Home) -> dict[str, tuple[int, Any]]:
    out = {}
    for args in QUICK_START:
        proc = home.cli(*args, check=None)
        assert "in use by another process" not in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        docs = documents(proc.stdout)
        out[" ".join(args)] = (proc.returncode, [keys(d) for d in docs][:1])
    return out


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_quick_start_without_a_service(home: Home) -> None:
    home.local = _run_all(home)
    assert [cmd for cmd, (code, _) in home.local.items() if code != 0] == []
    assert all(shape for _, shape in home.local.values())  # each printed JSON


def test_serve_owns_the_store_and_announces_itself(home: Home) -> None:
    # Files, not pipes: nobody reads a pipe while the tests run, and a full one would
    # stall the service's logging (and with it its jobs).
    with (home.base / "serve.out").open("w") as out, (home.base / "serve.err").open("w") as err:
        home.serve = subprocess.Popen(
            [AUTOFIX, "serve"], env=home.env, cwd=home.base, stdout=out, stderr=err, text=True
        )
    record = Path(home.env["AUTOFIX_DB_PATH"] + ".owner")

    def ready() -> bool:
        assert home.serve is not None
        assert home.serve.poll() is None, (home.base / "serve.err").read_text()[-2000:]
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"http://127.0.0.1:{home.port}/readyz", timeout=2)
            return record.exists() and answer.status_code == 200
        return False

    _until(ready, 90, "autofix serve to be ready")
    owner = json.loads(record.read_text())
    assert owner["pid"] == home.serve.pid
    assert owner["api_url"] == f"http://127.0.0.1:{home.port}"
    assert (Path(owner["socket"]).stat().st_mode & 0o777) == 0o600


def test_quick_start_through_the_service_gives_the_same_json(home: Home) -> None:
    served = _run_all(home)
    assert served == home.local
    # The commands ran in the service: its store holds what they wrote.
    assert home.json("fix", "show", "1", "--json")["requested_by"].startswith("cli:")
    assert (home.base / "snapshot-copy" / "manifest.json").is_file()  # the client's directory
    assert (home.base / "report-dir" / "index.html").is_file()


def test_fix_approve_from_the_cli_runs_the_pending_fix(home: Home) -> None:
    before = home.pid()
    pending = home.json("fix", "run", "service.restart", "--target", "web", "--json")
    assert pending["state"] == "pending_approval"
    done = home.json("fix", "approve", str(pending["id"]), "--json")
    assert done["state"] == "succeeded", done
    assert done["approved_by"].startswith("cli:")
    assert home.pid() != before


def _restarts(home: Home) -> list[dict[str, Any]]:
    return [f for f in home.fixes() if f["requested_by"] == "self-heal"]


def _done(fix: dict[str, Any]) -> bool:
    return fix["state"] == "succeeded"


def _decisions(home: Home, mode: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"http://127.0.0.1:{home.port}/api/v1/decisions",
        params={"rule": "recovery:web", "mode": mode},
        headers={"Authorization": f"Bearer {VIEWER}"},
    )
    return list(response.json()["items"])


def test_pause_stops_a_real_fault_s_fix_and_resume_lets_it_through(home: Home) -> None:
    paused = home.json("pause", "--reason", "deploy window", "--json")
    assert paused["paused"] is True
    assert home.json("status", "--json")["pause"]["reason"] == "deploy window"
    known = {f["id"] for f in _restarts(home)}
    pid = home.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        _until(lambda: _decisions(home, "shadow"), 30, "the held recovery decision")
        time.sleep(3)  # more failed checks: still nothing applied, recorded once
        assert {f["id"] for f in _restarts(home)} == known
        assert len(_decisions(home, "shadow")) == 1
        assert home.pid() == pid
        home.cli("resume")
        fix = _until(
            lambda: [
                f for f in _restarts(home) if f["id"] not in known and f["state"] == "succeeded"
            ],
            60,
            "the recovery after resume",
        )
        assert fix[0]["action"] == "service.restart"
        assert home.pid() != pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def test_a_silence_holds_the_target_and_ends_on_time(home: Home) -> None:
    made = home.json(
        "silence", "add", "target=web", "--for", "8s", "--comment", "known issue", "--json"
    )
    assert made["state"] == "active"
    known = {f["id"] for f in _restarts(home)}
    pid = home.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        fix = _until(
            lambda: [
                f for f in _restarts(home) if f["id"] not in known and f["state"] == "succeeded"
            ],
            60,
            "the recovery after the silence",
        )[0]
        ends = _utc(made["ends_at"])
        requested = _utc(fix["requested_at"])
        assert requested >= ends  # nothing was done while it silenced
        assert (requested - ends).total_seconds() < 15  # and it ended on time
        assert len(_decisions(home, "silenced")) == 1  # recorded once, not every check
        assert home.json("silence", "list", "--json") == []  # no longer in force
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_another_host_goes_through_the_api(home: Home, tmp_path: Path) -> None:
    remote = {
        "AUTOFIX_DB_PATH": str(tmp_path / "elsewhere.duckdb"),  # no store of its own
        "AUTOFIX_URL": f"http://127.0.0.1:{home.port}",
    }
    status = home.json("status", "--json", **remote, AUTOFIX_TOKEN=VIEWER)
    assert status["pause"] == {"paused": False}
    refused = home.cli("pause", "--reason", "x", check=1, **remote, AUTOFIX_TOKEN=VIEWER)
    assert "403" in refused.stderr
    assert "viewer" in refused.stderr
    assert not (tmp_path / "elsewhere.duckdb").exists()


def test_an_owner_that_does_not_answer_is_one_line(home: Home, tmp_path: Path) -> None:
    stand_in = subprocess.Popen(["sleep", "60"])
    try:
        db = tmp_path / "x.duckdb"
        record = {
            "pid": stand_in.pid,
            "start": None,
            "socket": str(tmp_path / "gone.sock"),
            "api_url": None,
            "since": "",
            "version": "",
        }
        Path(f"{db}.owner").write_text(json.dumps(record))
        proc = home.cli("fix", "list", check=1, AUTOFIX_DB_PATH=str(db))
        (line,) = proc.stderr.splitlines()
        assert line.startswith(
            f"autofix: error: {db} is owned by autofix serve (PID {stand_in.pid})"
        )
        assert "restart it" in line
    finally:
        stand_in.kill()
        stand_in.wait()


def test_serve_stops_cleanly_and_removes_its_record(home: Home) -> None:
    assert home.serve is not None
    home.serve.send_signal(signal.SIGTERM)
    home.serve.wait(timeout=60)
    out, err = (home.base / "serve.out").read_text(), (home.base / "serve.err").read_text()
    assert home.serve.returncode == 0, err[-2000:]
    assert "control socket" in out
    assert not Path(home.env["AUTOFIX_DB_PATH"] + ".owner").exists()
    assert "Traceback" not in err
    # Without a service the CLI opens the store itself again.
    assert home.json("fix", "show", "1", "--json")["id"] == 1
