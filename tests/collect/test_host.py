"""HostCollector and ProcessCollector against this machine and real child processes."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autofix.collect.base import Sample
from autofix.collect.host import HostCollector, ProcessCollector
from autofix.errors import ConfigError
from autofix.pipeline import ProcessTarget


def _by_metric(samples: list[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for sample in samples:
        out.setdefault(sample.metric, []).append(sample)
    return out


def _one(samples: list[Sample], metric: str, **labels: str) -> Sample:
    found = [
        s
        for s in samples
        if s.metric == metric and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, f"{metric}{labels}: {found}"
    return found[0]


def test_host_metric_names_and_sane_values() -> None:
    collector = HostCollector()
    first = _by_metric(collector.collect())
    for name in (
        "node_load1",
        "node_load5",
        "node_load15",
        "node_memory_total_bytes",
        "node_memory_available_bytes",
        "node_memory_used_bytes",
        "node_memory_swap_used_bytes",
        "node_memory_swap_total_bytes",
        "node_filesystem_size_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_free_bytes",
        "node_filesystem_used_bytes",
        "node_network_receive_bytes_total",
        "node_network_transmit_bytes_total",
    ):
        assert name in first, name
    # CPU usage needs a delta, so it starts on the second cycle.
    assert "node_cpu_usage_ratio" not in first

    total = first["node_memory_total_bytes"][0]
    avail = first["node_memory_available_bytes"][0]
    assert total.value > 0
    assert 0 < avail.value <= total.value
    assert avail.capacity == total.value
    assert avail.unit == "bytes"
    assert all(s.value >= 0 for s in first["node_load1"])

    sizes = {s.labels["mountpoint"]: s for s in first["node_filesystem_size_bytes"]}
    assert "/" in sizes
    for s in first["node_filesystem_avail_bytes"]:
        assert set(s.labels) == {"mountpoint", "device", "fstype"}
        size = sizes[s.labels["mountpoint"]]
        assert 0 <= s.value <= size.value
        assert s.capacity == size.value
    for s in first.get("node_filesystem_files_free", []):
        assert 0 <= s.value <= (s.capacity or 0)

    assert "lo" in {s.labels["device"] for s in first["node_network_receive_bytes_total"]}
    assert all(s.metric.endswith("_total") for s in first["node_network_receive_bytes_total"])
    for s in first.get("node_disk_read_bytes_total", []):
        assert not s.labels["device"].startswith(("loop", "ram", "zram"))

    sum(i * i for i in range(200_000))  # some CPU between the two cycles
    second = _by_metric(collector.collect())
    (cpu,) = second["node_cpu_usage_ratio"]
    assert 0.0 <= cpu.value <= 1.0
    assert cpu.unit == "ratio"


def test_host_cycle_is_cheap() -> None:
    collector = HostCollector()
    collector.collect()
    cpu0 = time.process_time()
    for _ in range(5):
        collector.collect()
    per_cycle = (time.process_time() - cpu0) / 5
    assert per_cycle < 0.05, f"{per_cycle * 1000:.1f} ms CPU per host cycle"


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A child process with a unique executable name, and a pidfile naming it."""
    name = f"afx{secrets.token_hex(4)}"  # < 15 chars: the kernel's comm keeps all of it
    binary = tmp_path / name
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, binary)
    proc = subprocess.Popen([str(binary), "60"])
    pidfile = tmp_path / "app.pid"
    pidfile.write_text(f"{proc.pid}\n")
    try:
        yield proc, name, pidfile
    finally:
        proc.kill()
        proc.wait()


def _check_process(samples: list[Sample], target: str, pid: int) -> None:
    assert _one(samples, "process_up", target=target).value == 1.0
    assert _one(samples, "process_count", target=target).value == 1.0
    rss = _one(samples, "process_resident_memory_bytes", target=target, pid=str(pid))
    assert rss.value > 0
    assert rss.unit == "bytes"
    assert rss.capacity is not None
    assert rss.capacity > rss.value
    assert _one(samples, "process_threads", pid=str(pid)).value >= 1
    assert _one(samples, "process_cpu_seconds_total", pid=str(pid)).value >= 0
    fds = _one(samples, "process_open_fds", pid=str(pid))
    assert fds.value >= 0
    assert fds.capacity is not None  # the RLIMIT_NOFILE soft limit
    assert _one(samples, "process_connections", pid=str(pid)).value == 0


def test_process_by_pidfile(sleeper: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    proc, _, pidfile = sleeper
    collector = ProcessCollector(ProcessTarget(kind="process", name="app", pidfile=pidfile))
    _check_process(collector.collect(), "app", proc.pid)
    _check_process(collector.collect(), "app", proc.pid)  # cached Process object


def test_process_by_name(sleeper: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    proc, name, _ = sleeper
    target = ProcessTarget(kind="process", name="app", process_name=name)
    _check_process(ProcessCollector(target).collect(), "app", proc.pid)


def test_process_by_cmdline() -> None:
    marker = f"autofix-test-{secrets.token_hex(6)}"
    script = "import time; time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script, marker])
    try:
        target = ProcessTarget(kind="process", name="worker", cmdline=rf"-c .* {marker}$")
        deadline = time.monotonic() + 5
        samples = ProcessCollector(target).collect()
        while _one(samples, "process_up").value == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # exec may not have replaced the forked child's argv yet
            samples = ProcessCollector(target).collect()
        _check_process(samples, "worker", proc.pid)
    finally:
        proc.kill()
        proc.wait()


def test_process_never_matches_itself() -> None:
    # Our own argv contains "pytest"; a collector inside autofix must not count itself.
    target = ProcessTarget(kind="process", name="me", cmdline=".")
    pids = {s.labels.get("pid") for s in ProcessCollector(target).collect()}
    assert str(os.getpid()) not in pids


def test_process_down_is_a_sample_not_an_error(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    cases = [
        ProcessTarget(kind="process", name="missing", pidfile=tmp_path / "none.pid"),
        ProcessTarget(kind="process", name="stale", pidfile=tmp_path / "stale.pid"),
        ProcessTarget(kind="process", name="garbage", pidfile=tmp_path / "garbage.pid"),
        ProcessTarget(kind="process", name="noname", process_name=f"no-{secrets.token_hex(4)}"),
    ]
    (tmp_path / "stale.pid").write_text(str(dead.pid))
    (tmp_path / "garbage.pid").write_text("not a pid")
    for target in cases:
        samples = ProcessCollector(target).collect()
        assert [(s.metric, s.value) for s in samples] == [
            ("process_up", 0.0),
            ("process_count", 0.0),
            ("process_restarts_total", 0.0),
        ], target.name


def test_process_bad_regex_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bad-regex"):
        ProcessCollector(ProcessTarget(kind="process", name="bad-regex", cmdline="(unclosed"))


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of our own; /dev/shm (a tmpfs too) where mount is refused."""
    path = tmp_path / "spool"
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        shm = Path("/dev/shm")
        if not shm.is_dir():
            pytest.skip("cannot mount a tmpfs and there is no /dev/shm")
        yield shm
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _mounts(collector: HostCollector) -> set[str]:
    return {
        s.labels["mountpoint"]
        for s in collector.collect()
        if s.metric == "node_filesystem_avail_bytes"
    }


def test_tmpfs_is_watched_only_when_included(tmpfs: Path) -> None:
    # Skipped by default like the node exporter's pseudo filesystems: a rule on
    # node_filesystem_* would see nothing of a tmpfs a service fills.
    assert str(tmpfs) not in _mounts(HostCollector())
    assert str(tmpfs) in _mounts(HostCollector(include_mounts={str(tmpfs)}))
    by_type = HostCollector(include_fstypes={"tmpfs"}).collect()
    avail = _one(by_type, "node_filesystem_avail_bytes", mountpoint=str(tmpfs))
    assert avail.labels["fstype"] == "tmpfs"
    assert avail.capacity is not None
    assert 0 < avail.value <= avail.capacity
