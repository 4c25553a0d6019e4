"""deploy/systemd: the unit passes ``systemd-analyze verify``, the env file holds valid
settings, and a real ``autofix serve`` speaks sd_notify to a real ``NOTIFY_SOCKET``:
READY once the store is open and the API listens, WATCHDOG pings from the scheduler's
heartbeat (they stop when the scheduler wedges), STOPPING on SIGTERM."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autofix.config import Settings, load_settings, systemd_watchdog
from autofix.heartbeat import Heartbeat, interval_for
from autofix.jobs import Service, build_scheduler
from autofix.pipeline import Pipeline
from autofix.store import MetricStore
from tests.clirun import AUTOFIX
from tests.conftest import _under_ci
from tests.servers import free_port

DEPLOY = Path(__file__).parents[2] / "deploy" / "systemd"


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if _under_ci():
            pytest.fail("CI=true but systemd-analyze is missing (apt-get install systemd)")
        pytest.skip("systemd-analyze not installed")
    return found


def _verify(unit: Path) -> str:
    proc = subprocess.run(
        [_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    return (proc.stdout + proc.stderr).strip() + (
        "" if proc.returncode == 0 else f" rc={proc.returncode}"
    )


def _installed_unit(tmp_path: Path, text: str) -> Path:
    # verify checks that ExecStart is executable: point it at this checkout's autofix.
    unit = tmp_path / "autofix.service"
    unit.write_text(text.replace("/opt/autofix/.venv/bin/autofix", AUTOFIX))
    return unit


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = (DEPLOY / "autofix.service").read_text()
    assert _verify(_installed_unit(tmp_path, text)) == ""
    # The check can fail: a misspelt key is reported.
    (tmp_path / "bad").mkdir()
    bad = _installed_unit(tmp_path / "bad", text.replace("WatchdogSec=", "WatchdogSecs="))
    assert "Unknown key" in _verify(bad)


def test_the_unit_is_a_hardened_notify_service() -> None:
    lines = (DEPLOY / "autofix.service").read_text().splitlines()
    keys: dict[str, list[str]] = {}
    for line in lines:
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    assert keys["Type"] == ["notify"]
    assert keys["ExecStart"] == ["/opt/autofix/.venv/bin/autofix serve"]
    watchdog = int(keys["WatchdogSec"][0].removesuffix("s"))
    default_beat = Settings.model_fields["heartbeat_interval"].default.total_seconds()
    assert watchdog >= 3 * default_beat
    assert keys["Restart"] == ["on-failure"]
    assert {"StartLimitIntervalSec", "StartLimitBurst"} <= keys.keys()
    assert keys["NoNewPrivileges"] == ["yes"]
    assert keys["ProtectSystem"] == ["strict"]
    assert keys["StateDirectory"] == ["autofix"]  # data, models, quarantine: writable
    assert "/var/log/news" in keys["ReadWritePaths"][0]


def _env_file(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.removeprefix("#")
        if line.startswith("AUTOFIX_") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def test_the_env_file_names_only_real_settings() -> None:
    text = (DEPLOY / "autofix.env").read_text()
    active = {
        k: v for k, v in _env_file(text).items() if f"\n{k}=" in f"\n{text}"
    }  # uncommented lines
    settings = load_settings(environ=active)  # a bad name or value raises ConfigError
    assert settings.log_format == "json"
    assert settings.db_path.is_relative_to("/var/lib/autofix")
    assert settings.quarantine_dir.is_relative_to("/var/lib/autofix")
    assert settings.models_dir.is_relative_to("/var/lib/autofix")
    commented = set(_env_file(text)) - set(active)
    known = {f"AUTOFIX_{name.upper()}" for name in Settings.model_fields}
    assert commented <= known, commented - known


def test_watchdog_interval_follows_systemd() -> None:
    pid = str(os.getpid())
    assert systemd_watchdog({}) is None
    assert systemd_watchdog({"WATCHDOG_USEC": "60000000"}).total_seconds() == 60  # type: ignore[union-attr]
    assert systemd_watchdog({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert systemd_watchdog({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": pid}) is not None
    ten = Settings.model_fields["heartbeat_interval"].default
    assert interval_for(ten, None) == 10
    assert interval_for(ten, systemd_watchdog({"WATCHDOG_USEC": "6000000"})) == 2


# -- the heartbeat comes from the scheduler ----------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = load_settings(environ={"AUTOFIX_DB_PATH": str(tmp_path / "a.duckdb")})
    with MetricStore(settings.db_path) as store:
        svc = Service(settings, Pipeline(), store)
        yield svc
        svc.close()


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_wedged_scheduler_stops_the_watchdog_pings(service: Service) -> None:
    from apscheduler.events import EVENT_JOB_SUBMITTED

    sent: list[str] = []
    heartbeat = Heartbeat(0.1, send=sent.append)
    scheduler = build_scheduler(service, only=set(), heartbeat=heartbeat)
    release = threading.Event()
    wedge = threading.Event()

    def hang(event: object) -> None:  # a listener that never returns wedges the loop
        if wedge.is_set():
            release.wait(30)

    scheduler.add_listener(hang, EVENT_JOB_SUBMITTED)
    scheduler.start()
    try:
        _wait(lambda: heartbeat.beats >= 3)
        assert set(sent) == {"WATCHDOG=1"}
        wedge.set()
        time.sleep(0.3)  # the beat in flight, if any, lands
        stuck = heartbeat.beats
        time.sleep(1.0)  # ten intervals
        assert heartbeat.beats <= stuck + 1
        wedge.clear()
        release.set()
        _wait(lambda: heartbeat.beats >= stuck + 3)  # the scheduler runs again: so do beats
    finally:
        release.set()
        scheduler.shutdown(wait=True)


def test_a_long_job_does_not_delay_the_heartbeat(service: Service) -> None:
    sent: list[str] = []
    heartbeat = Heartbeat(0.1, send=sent.append)
    scheduler = build_scheduler(service, only=set(), heartbeat=heartbeat)
    busy = threading.Event()
    for n in range(6):  # more long jobs than the default pool has workers
        scheduler.add_job(busy.wait, args=[5], id=f"long-{n}")
    scheduler.start()
    try:
        time.sleep(0.2)
        before = heartbeat.beats
        _wait(lambda: heartbeat.beats >= before + 5)
    finally:
        busy.set()
        scheduler.shutdown(wait=True)


# -- a real `autofix serve` and a real NOTIFY_SOCKET ---------------------------------------


class NotifySocket:
    """A bound AF_UNIX datagram socket, as systemd listens on, recording what arrives."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="autofix-notify-", dir="/tmp"))
        self.path = self.dir / "notify.sock"  # short: sun_path holds 108 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.received: list[tuple[float, str]] = []

    def next(self, timeout: float) -> str:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        self.received.append((time.monotonic(), data))
        return data

    def until(self, message: str, timeout: float) -> list[str]:
        """Every datagram up to and including ``message``."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {message!r} in {timeout}s: {seen}"
            seen.append(self.next(left))
            if seen[-1] == message:
                return seen

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_serve_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "logs").mkdir()
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(f"targets:\n  - {{name: logs, kind: logdir, path: {tmp_path / 'logs'}}}\n")
    notify = NotifySocket()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
        "AUTOFIX_API_PORT": str(port),
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "1500000",  # WatchdogSec=1.5s: a beat every 0.5 s
    }
    proc = subprocess.Popen(
        [AUTOFIX, "serve", "--jobs", "collect"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        before = notify.until("READY=1", timeout=90)
        assert any(m.startswith("STATUS=serving ") for m in before)
        # Ready means ready: the API answers at once and the store file exists.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        assert (tmp_path / "autofix.duckdb").exists()
        pings = []
        while len(pings) < 4:
            message = notify.next(timeout=5)
            if message == "WATCHDOG=1":
                pings.append(notify.received[-1][0])
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.5, gaps  # inside the watchdog: systemd would not restart it
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "autofix_scheduler_heartbeat_timestamp_seconds " in metrics
        proc.send_signal(signal.SIGTERM)
        notify.until("STOPPING=1", timeout=30)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
        notify.close()
    assert "Traceback" not in err


def test_module_examples() -> None:
    import doctest

    import autofix.heartbeat
    import autofix.notify.incidents

    for module in (autofix.heartbeat, autofix.notify.incidents):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_sd_notify_outside_systemd_is_silent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`autofix serve` in a terminal: no NOTIFY_SOCKET, no error line at each heartbeat."""
    from autofix.heartbeat import sd_notify

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with caplog.at_level(logging.DEBUG):
        sd_notify("READY=1")
        sd_notify("WATCHDOG=1")
        sd_notify("STATUS=serving")
    assert caplog.records == []
