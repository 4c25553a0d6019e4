"""`autofix demo --short` end to end: real stack, real faults, autofix's real service.

One run of the demo (the PyPI-embedded PostgreSQL and Redis, forced with
``--servers embedded``, so the path `make run` takes on a machine without Debian's
packages is the one tested) feeds the tests below. They check the demo's raw record —
event times from the ground-truth recorder, fixes from autofix's audit log — not the
demo's own verdicts: each fault fixed by autofix and verified before it went away,
each benign event left alone, the KPI table printed with numbers, and nothing the demo
started left running or on disk. A second run is stopped with SIGTERM midway.

Assertions today's loop cannot meet are marked ``xfail(strict=True)`` with the missing
capability: when it lands, the mark fails and must go.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.clirun import AUTOFIX

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

APPLIED = {"succeeded", "failed", "rolled_back", "interrupted"}
GRACE = 3.0  # a decision is made on samples a collection cycle old


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFIX_")}
    env.update({"HOME": str(tmp), "COLUMNS": "160"})
    return env


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("demo")
    parent = tmp / "tmp"
    started = time.monotonic()
    lines: list[str] = []
    dashboard: dict[str, Any] = {}
    with (
        open(tmp / "stderr", "w+") as errors,
        subprocess.Popen(
            [AUTOFIX, "demo", "--short", "--no-live", "--servers", "embedded", "--dashboard",
             "--json", str(tmp / "result.json"), "--report-dir", str(tmp / "report"),
             "--tmp", str(parent)],
            stdout=subprocess.PIPE, stderr=errors, text=True,
            env={**_env(tmp), "PYTHONUNBUFFERED": "1"}, cwd=Path(__file__).parents[2],
        ) as proc,
    ):  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:  # the dashboard is asked while the demo runs
            lines.append(line)
            found = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/ .* token in (\S+)\)", line)
            if found and not dashboard:
                dashboard = _ask_dashboard(found.group(1), Path(found.group(2)))
        code = proc.wait(timeout=840)
        errors.seek(0)
        stderr = errors.read()
    seconds = time.monotonic() - started
    stdout = "".join(lines)
    print(stdout[-6000:])  # the figures quoted in the report (pytest -s)
    assert code == 0, (stdout[-4000:], stderr[-4000:])
    result = json.loads((tmp / "result.json").read_text())
    return {"result": result, "stdout": stdout, "tmp": tmp, "parent": parent,
            "seconds": seconds, "dashboard": dashboard}  # fmt: skip


def _ask_dashboard(url: str, token_file: Path) -> dict[str, Any]:
    """What the demo's dashboard answered while it ran: the page, and who the token is."""
    import httpx

    token = token_file.read_text().strip()
    mode = token_file.stat().st_mode & 0o777
    page = httpx.get(f"{url}/", timeout=10)
    who = httpx.get(
        f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    anonymous = httpx.get(f"{url}/api/v1/whoami", timeout=10)
    return {"page": page.status_code, "whoami": who.json(), "anonymous": anonymous.status_code,
            "mode": mode, "token": token, "token_file": token_file}  # fmt: skip


def _event(result: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in result["truth"]["events"] if e["name"] == name)


def _fixes(result: dict[str, Any]) -> list[dict[str, Any]]:
    return list(result["fixes"])


FAULTS = [
    pytest.param("disk-fill", id="disk-fill"),
    pytest.param("memory-leak", id="memory-leak"),
    pytest.param("hung-worker", id="hung-worker"),
    pytest.param("db-connections", id="db-connections"),
    pytest.param("cache-bloat", id="cache-bloat"),
]


@pytest.mark.parametrize("name", FAULTS)
def test_each_fault_is_fixed_by_autofix_and_verified(demo: dict[str, Any], name: str) -> None:
    result = demo["result"]
    event = _event(result, name)
    start, end = event["started_at"], event["ended_at"]
    assert start is not None
    assert end is not None, f"{name} never cleared"
    verified = [
        f
        for f in _fixes(result)
        if f["target"] in event["targets"]
        and f["state"] == "succeeded"
        and start <= f["requested_at"] <= end
    ]
    assert verified, (name, event, _fixes(result))
    # Gone before the on-call operator had to step in: autofix fixed it, nobody else.
    assert event["fixed_by"] == "autofix", event
    if event["predictable"]:
        assert event["prevented"] is True, event


BENIGN = [
    pytest.param("traffic-spike", id="traffic-spike"),
    pytest.param("log-rotation", id="log-rotation"),
    pytest.param("backup-burst", id="backup-burst"),
    pytest.param("planned-restart", id="planned-restart"),
]


@pytest.mark.parametrize("name", BENIGN)
def test_each_benign_event_gets_no_fix(demo: dict[str, Any], name: str) -> None:
    result = demo["result"]
    event = _event(result, name)
    start, end = event["started_at"], event["ended_at"]
    assert start is not None
    assert end is not None
    wrong = [
        f
        for f in _fixes(result)
        if f["state"] in APPLIED
        and f["target"] in event["targets"]
        and start <= f["requested_at"] <= end + GRACE
    ]
    assert wrong == [], wrong


def test_no_false_fixes(demo: dict[str, Any]) -> None:
    truth = demo["result"]["truth"]
    assert truth["applied_fixes"] > 0
    false = [f for f in _fixes(demo["result"]) if f["id"] in truth["false_fixes"]]
    assert truth["false_fixes"] == [], (false, demo["stdout"][-6000:])


def test_the_dashboard_answered_while_the_demo_ran(demo: dict[str, Any]) -> None:
    seen = demo["dashboard"]
    assert seen, "no dashboard URL printed"
    assert seen["page"] == 200
    assert seen["whoami"]["role"] == "operator", seen["whoami"]
    assert seen["anonymous"] == 401
    assert seen["mode"] == 0o600  # the token is in a file only its owner reads
    assert seen["token"] not in demo["stdout"]  # and never printed
    assert not seen["token_file"].exists()  # gone with the run


def test_kpi_table_is_printed_with_numbers(demo: dict[str, Any]) -> None:
    out = demo["stdout"]
    assert "KPIs of this run" in out
    rows = {
        label: line
        for line in out.splitlines()
        for label in (
            "auto-fix success",
            "MTTR reduction",
            "preventive",
            "false-fix rate",
            "recovery time p95",
        )
        if label in line
    }
    assert len(rows) == 5, out[-3000:]
    number = re.compile(r"-?\d+(\.\d+)? ?(%|s)")
    for label, line in rows.items():
        # Ground truth first, then autofix kpi: at least the ground truth has a number.
        assert number.search(line), (label, line)
    truth = demo["result"]["truth"]
    for name in ("auto_fix_success_rate", "mttr_reduction", "preventive_execution_rate",
                 "false_fix_rate", "recovery_p95_seconds"):  # fmt: skip
        assert isinstance(truth[name], float), (name, truth[name])
    assert demo["result"]["autofix_kpi"] is not None
    assert Path(demo["result"]["report"]).is_file()
    assert "report: " in out


def test_everything_it_started_is_gone(demo: dict[str, Any]) -> None:
    result = demo["result"]
    base = Path(result["base"])
    assert base.parent == demo["parent"]
    assert not base.exists()
    assert list(demo["parent"].iterdir()) == []
    assert result["dirs"]
    assert [d for d in result["dirs"] if Path(d).exists()] == []
    pids = [pid for name, seen in result["pids"].items() for pid in seen]
    assert {"postgres", "redis", "supervisord", "users", "news-web-1", "news-web-2"} <= set(
        result["pids"]
    )
    alive = [p for p in pids if psutil.pid_exists(p) and _mentions(p, str(base))]
    assert alive == []
    leftovers = [
        p.info
        for p in psutil.process_iter(["pid", "cmdline"])
        if str(base) in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
    with open("/proc/mounts", encoding="utf-8") as mounts:
        assert str(base) not in mounts.read()


def _mentions(pid: int, text: str) -> bool:
    try:
        return text in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def test_sigterm_stops_and_removes_everything(tmp_path: Path) -> None:
    parent = tmp_path / "tmp"
    result = tmp_path / "result.json"
    proc = subprocess.Popen(
        [AUTOFIX, "demo", "--short", "--no-live", "--json", str(result),
         "--report-dir", str(tmp_path / "report"), "--tmp", str(parent)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path),
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        seen.append(line)
        if "event" in line and "running" in line:  # the schedule has begun
            break
        assert time.monotonic() < deadline, "".join(seen)
    stack_pids = [p.pid for p in psutil.Process(proc.pid).children(recursive=False)]
    assert stack_pids
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    doc = json.loads(result.read_text())
    assert doc["interrupted"] is True
    assert not Path(doc["base"]).exists()
    assert list(parent.iterdir()) == []
    assert [d for d in doc["dirs"] if Path(d).exists()] == []
    time.sleep(0.5)
    pids = [pid for seen_pids in doc["pids"].values() for pid in seen_pids]
    assert [p for p in pids if psutil.pid_exists(p) and _mentions(p, doc["base"])] == []


def test_demo_refuses_bad_options(tmp_path: Path) -> None:
    proc = subprocess.run(
        [AUTOFIX, "demo", "--servers", "docker"], capture_output=True, text=True,
        env=_env(tmp_path), cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--servers" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
