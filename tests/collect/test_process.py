"""Supervised processes: a real supervisord program's state, limits and restarts, and the
memory cgroup a process runs in (the kernel's v1 hierarchy here; v2 from a recorded tree)."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from autofix.collect.base import Sample
from autofix.collect.cgroup import CgroupReader, parse_cgroup_file, parse_mountinfo
from autofix.collect.process import ProcessCollector, RestartCounter, SupervisorCollector, _tree
from autofix.targets import ProcessTarget, SupervisorTarget
from tests.servers import Supervisor, free_port


def _one(samples: list[Sample], metric: str, **labels: str) -> Sample:
    found = [
        s
        for s in samples
        if s.metric == metric and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (metric, labels, [s.metric for s in samples])
    return found[0]


def _target(sup: Supervisor, name: str, **kw: object) -> SupervisorTarget:
    return SupervisorTarget(kind="supervisor", name=name, url=sup.url, program=sup.program, **kw)


def _restart(sup: Supervisor) -> None:
    with xmlrpc.client.ServerProxy(sup.url) as rpc:
        rpc.supervisor.stopProcess(sup.program, True)
        rpc.supervisor.startProcess(sup.program, True)


def test_supervised_program_with_its_limits_and_restarts(supervisor: Supervisor) -> None:
    name = f"web-{secrets.token_hex(3)}"  # its own restart count
    collector = SupervisorCollector(_target(supervisor, name, memory_limit="256MiB"), 2.0)
    try:
        samples = collector.collect()
        assert _one(samples, "probe_up").labels == {"target": name, "kind": "supervisor"}
        assert _one(samples, "probe_up").value == 1.0
        assert _one(samples, "supervisord_process_state").value == 20  # RUNNING
        assert _one(samples, "process_up").value == 1.0
        assert _one(samples, "process_restarts_total").value == 0
        pid = supervisor.pidfile.read_text().strip()
        rss = _one(samples, "process_resident_memory_bytes", pid=pid)
        assert rss.capacity == 256 * 2**20  # the worker's own limit, not the host's RAM
        assert 0 < rss.value < rss.capacity
        fds = _one(samples, "process_open_fds", pid=pid)
        assert fds.capacity == psutil.Process(int(pid)).rlimit(psutil.RLIMIT_NOFILE)[0]
        started = _one(samples, "process_start_time_seconds", pid=pid).value
        assert abs(started - psutil.Process(int(pid)).create_time()) < 1

        _restart(supervisor)
        after = collector.collect()
        assert _one(after, "process_restarts_total").value == 1
        new_pid = supervisor.pidfile.read_text().strip()
        assert new_pid != pid
        assert _one(after, "process_resident_memory_bytes").labels["pid"] == new_pid
        # A fresh collector (what a fix's verify builds) keeps counting where it was.
        fresh = SupervisorCollector(_target(supervisor, name), 2.0)
        try:
            assert _one(fresh.collect(), "process_restarts_total").value == 1
        finally:
            fresh.close()
    finally:
        collector.close()


def test_without_a_limit_rss_is_measured_against_ram(supervisor: Supervisor) -> None:
    collector = SupervisorCollector(_target(supervisor, "web-ram"), 2.0, cgroups=_NoCgroups())
    try:
        rss = _one(collector.collect(), "process_resident_memory_bytes")
    finally:
        collector.close()
    assert rss.capacity == psutil.virtual_memory().total


def test_unreachable_supervisord_is_probe_up_0_and_nothing_else() -> None:
    target = SupervisorTarget(
        kind="supervisor", name="web", url=f"http://127.0.0.1:{free_port()}/RPC2", program="web"
    )
    collector = SupervisorCollector(target, 0.5)
    try:
        assert [(s.metric, s.value) for s in collector.collect()] == [("probe_up", 0.0)]
        assert collector.last_error is not None
    finally:
        collector.close()


def test_unknown_program_is_probe_up_0(supervisor: Supervisor) -> None:
    target = SupervisorTarget(kind="supervisor", name="web", url=supervisor.url, program="nope")
    collector = SupervisorCollector(target, 2.0)
    try:
        assert [(s.metric, s.value) for s in collector.collect()] == [("probe_up", 0.0)]
        assert collector.last_error is not None
        assert "BAD_NAME" in collector.last_error
    finally:
        collector.close()


def test_restart_counter_counts_replacements_not_growth() -> None:
    counter = RestartCounter()
    assert counter.observe("pool", [(1, 1.0), (2, 1.0)]) == 0
    assert counter.observe("pool", [(1, 1.0), (2, 1.0), (3, 2.0)]) == 0  # scaled up
    assert counter.observe("pool", [(1, 1.0), (3, 2.0), (4, 3.0)]) == 1  # 2 replaced by 4
    assert counter.observe("pool", []) == 1  # stopped
    assert counter.observe("pool", [(5, 4.0)]) == 2  # started again: a restart
    assert counter.observe("pool", [(5, 9.0)]) == 3  # same pid, new start time: recycled
    assert counter.observe("other", [(5, 9.0)]) == 0


def test_process_target_counts_a_restarted_worker(tmp_path: Path) -> None:
    marker = f"autofix-restart-{secrets.token_hex(4)}"
    target = ProcessTarget(kind="process", name=marker, cmdline=marker, memory_limit="64MiB")
    collector = ProcessCollector(target)
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        _until_found(collector, first.pid)
        samples = collector.collect()
        rss = _one(samples, "process_resident_memory_bytes", pid=str(first.pid))
        assert rss.capacity == 64 * 2**20
    finally:
        first.kill()
        first.wait()
    second = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        _until_found(collector, second.pid)
        assert _one(collector.collect(), "process_restarts_total").value == 1
    finally:
        second.kill()
        second.wait()


def _until_found(collector: ProcessCollector, pid: int) -> None:
    deadline = time.monotonic() + 5
    while str(pid) not in {s.labels.get("pid") for s in collector.collect()}:
        assert time.monotonic() < deadline, "the process never showed up"
        time.sleep(0.05)


class _NoCgroups(CgroupReader):
    def memory_of(self, pid: int) -> None:
        return None


# --- memory cgroups ----------------------------------------------------------------


@contextlib.contextmanager
def _v1_memory_cgroup(limit: int) -> Iterator[Path | None]:
    """A v1 memory cgroup with ``limit`` (None where this kernel or user cannot make one)."""
    _, memory = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    if memory is None or os.geteuid() != 0:
        yield None
        return
    path = memory.point / f"autofix-test-{secrets.token_hex(4)}"
    try:
        path.mkdir()
        (path / "memory.limit_in_bytes").write_text(str(limit))
    except OSError:
        yield None
        return
    try:
        yield path
    finally:
        for _ in range(50):
            with contextlib.suppress(OSError):
                path.rmdir()
                break
            time.sleep(0.1)


def test_a_process_in_a_limited_cgroup_is_measured_against_the_cgroup(tmp_path: Path) -> None:
    limit = 96 * 2**20
    with _v1_memory_cgroup(limit) as group:
        if group is None:
            pytest.skip("no writable v1 memory hierarchy here (the v2 reader is tested below)")
        marker = f"autofix-cgroup-{secrets.token_hex(4)}"
        script = "import sys, time; b = bytearray(20_000_000); time.sleep(60)"
        # The child moves itself into the cgroup before it allocates.
        proc = subprocess.Popen(
            ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" -c "$1" "$2"',
             sys.executable, script, marker],
        )  # fmt: skip
        try:
            collector = ProcessCollector(ProcessTarget(kind="process", name="w", cmdline=marker))
            _until_found(collector, proc.pid)
            time.sleep(0.3)
            samples = collector.collect()
        finally:
            proc.kill()
            proc.wait()
    cgroup = "/" + group.name
    rss = _one(samples, "process_resident_memory_bytes", pid=str(proc.pid))
    assert rss.capacity == pytest.approx(limit, abs=4096)  # the kernel rounds to a page
    usage = _one(samples, "container_memory_usage_bytes", cgroup=cgroup)
    assert usage.value >= 20_000_000
    assert usage.capacity == rss.capacity
    working = _one(samples, "container_memory_working_set_bytes", cgroup=cgroup)
    assert 0 < working.value <= usage.value
    assert _one(samples, "container_spec_memory_limit_bytes").value == rss.capacity


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_from_a_recorded_tree(tmp_path: Path) -> None:
    # A systemd host: news.service under system.slice, the slice limited tighter.
    _write(tmp_path, "proc/self/mountinfo", "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    _write(tmp_path, "proc/42/cgroup", "0::/system.slice/news.service\n")
    unit = "sys/fs/cgroup/system.slice/news.service"
    _write(tmp_path, f"{unit}/memory.current", "300000000\n")
    _write(tmp_path, f"{unit}/memory.max", "1000000000\n")
    _write(tmp_path, f"{unit}/memory.stat", "anon 200000000\ninactive_file 50000000\n")
    _write(tmp_path, "sys/fs/cgroup/system.slice/memory.max", "800000000\n")
    _write(tmp_path, "proc/43/cgroup", "0::/user.slice\n")
    _write(tmp_path, "sys/fs/cgroup/user.slice/memory.current", "5000\n")
    _write(tmp_path, "sys/fs/cgroup/user.slice/memory.max", "max\n")
    _write(tmp_path, "proc/44/cgroup", "0::/\n")
    reader = CgroupReader(tmp_path)
    news = reader.memory_of(42)
    assert news is not None
    assert (news.version, news.path) == (2, "/system.slice/news.service")
    assert news.usage == 300e6
    assert news.working_set == 250e6  # inactive file pages are not what runs out
    assert news.limit == 800e6  # the slice's limit binds the unit too
    user = reader.memory_of(43)
    assert user is not None
    assert user.limit is None  # "max": unlimited
    assert reader.memory_of(44) is None  # the root cgroup is the host
    assert reader.memory_of(45) is None  # gone


def test_cgroup_file_and_mountinfo_parsing() -> None:
    assert parse_cgroup_file("12:cpu,cpuacct:/a\n4:memory:/b\n0::/c\n") == {
        "cpu": "/a",
        "cpuacct": "/a",
        "memory": "/b",
        "": "/c",
    }
    unified, memory = parse_mountinfo(
        "40 31 0:37 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "41 31 0:38 /ns /sys/fs/cgroup/uni\\040fied rw - cgroup2 cgroup2 rw\n"
    )
    assert memory is not None
    assert str(memory.point) == "/sys/fs/cgroup/memory"
    assert unified is not None
    assert str(unified.point) == "/sys/fs/cgroup/uni fied"
    assert unified.root == "/ns"


def test_a_pid_of_another_host_is_not_described() -> None:
    # supervisord reached over the network reports its own host's pid: the same number
    # here is another process, told apart by its start time.
    me = psutil.Process()
    assert _tree(me.pid, me.create_time())[0].pid == me.pid
    assert _tree(me.pid, me.create_time() - 3600) == []
