"""`autofix serve` runs the API beside the scheduled jobs in one process, and stops cleanly.

A real subprocess on a free loopback port: health, readiness (the scheduler runs), an
authenticated read, then SIGTERM and exit 0. A second serve on the same port fails with
one clear error line, exit 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.api.world import OPERATOR, VIEWER, auth
from tests.clirun import AUTOFIX, run_autofix
from tests.servers import free_port


def _env(tmp_path: Path, port: int, db: str = "autofix.duckdb") -> dict[str, str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"targets:\n  - {{name: scratch, kind: logdir, path: {tmp_path / 'tmp'}}}\n"
    )
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / db),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
        "AUTOFIX_SNAPSHOT_DIR": str(tmp_path / "snapshot"),
        "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "quarantine"),
        "AUTOFIX_API_PORT": str(port),
        "AUTOFIX_API_TOKENS": f"ops:operator:{OPERATOR},eve:viewer:{VIEWER}",
    }


def _wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with contextlib.suppress(httpx.TransportError):  # not listening yet: poll again
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200 and response.json()["jobs"]:
                return response
        time.sleep(0.2)
    raise AssertionError(f"autofix serve not ready on {url} in {timeout}s")


def test_serve_runs_the_api_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(tmp_path, port)
    proc = subprocess.Popen(
        [AUTOFIX, "serve", "--jobs", "collect"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = _wait_ready(url, proc).json()
        assert (ready["ready"], ready["store"], ready["scheduler"]) == (True, "ok", "running")
        assert [j["job"] for j in ready["jobs"]] == ["collect"]  # recorded by the same process
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        fixes = httpx.get(f"{url}/api/v1/fixes", headers=auth(VIEWER))
        assert fixes.json() == {"total": 0, "limit": 50, "offset": 0, "items": []}
        assert httpx.get(f"{url}/api/v1/fixes").status_code == 401
        metrics = httpx.get(f"{url}/metrics").text
        assert 'autofix_job_runs_total{autofix_job="collect"}' in metrics
        # The port is taken: a second serve (its own store) says so in one line, exit 1.
        clash = run_autofix(
            ["serve", "--jobs", "collect"], _env(tmp_path, port, "b.duckdb"), check=1, timeout=60
        )
        last = clash.stderr.strip().splitlines()[-1]
        assert last.startswith(f"autofix: error: API: cannot listen on 127.0.0.1:{port}: ")
        assert "Traceback" not in clash.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"API on {url}" in out
    assert "stopped:" in out
    assert "Traceback" not in err
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))


def test_ctrl_c_stops_serve_its_front_and_its_workers_quietly(tmp_path: Path) -> None:
    """A Ctrl-C in the terminal reaches the whole process group: the service, its model
    workers and its API front. One clean stop, no traceback, no error line, nobody left."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [AUTOFIX, "serve", "--jobs", "collect,remediate"],
        env={**_env(tmp_path, port), "AUTOFIX_LOG_FORMAT": "json"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
    )
    try:
        deadline = time.monotonic() + 90
        while {j["job"] for j in _wait_ready(url, proc).json()["jobs"]} != {
            "collect",
            "remediate",
        }:
            assert time.monotonic() < deadline, "remediate never ran"
            time.sleep(0.5)
        forecasts = httpx.get(f"{url}/api/v1/forecasts", headers=auth(VIEWER))
        assert forecasts.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "stopped:" in out
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert '"level": "error"' not in err, err
    deadline = time.monotonic() + 30
    while True:  # every process of the group has left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a process of autofix serve is still running"
        time.sleep(0.2)
