"""Host and process metrics read with psutil, named like the Prometheus node exporter.

A cycle is cheap on purpose: a handful of /proc reads and one ``statvfs`` per real
filesystem. CPU usage comes from ``cpu_times`` deltas between cycles, so nothing sleeps.

>>> from autofix.collect.host import HostCollector
>>> names = {s.metric for s in HostCollector().collect()}
>>> "node_memory_available_bytes" in names
True
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psutil

from autofix.collect.base import Sample
from autofix.errors import ConfigError
from autofix.targets import ProcessTarget

log = logging.getLogger(__name__)

# Same default as the node exporter's diskstats collector: whole disks only, no
# partitions, loop or RAM devices (their I/O is already counted on the parent disk).
_IGNORED_DISKS = re.compile(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$")

_DISK_COUNTERS = (
    # psutil field, metric, unit, scale (psutil reports times in milliseconds)
    ("read_bytes", "node_disk_read_bytes_total", "bytes", 1.0),
    ("write_bytes", "node_disk_written_bytes_total", "bytes", 1.0),
    ("read_count", "node_disk_reads_completed_total", "count", 1.0),
    ("write_count", "node_disk_writes_completed_total", "count", 1.0),
    ("read_time", "node_disk_read_time_seconds_total", "seconds", 0.001),
    ("write_time", "node_disk_write_time_seconds_total", "seconds", 0.001),
    ("busy_time", "node_disk_io_time_seconds_total", "seconds", 0.001),
)

_NET_COUNTERS = (
    ("bytes_recv", "node_network_receive_bytes_total", "bytes"),
    ("bytes_sent", "node_network_transmit_bytes_total", "bytes"),
    ("packets_recv", "node_network_receive_packets_total", "count"),
    ("packets_sent", "node_network_transmit_packets_total", "count"),
    ("errin", "node_network_receive_errs_total", "count"),
    ("errout", "node_network_transmit_errs_total", "count"),
    ("dropin", "node_network_receive_drop_total", "count"),
    ("dropout", "node_network_transmit_drop_total", "count"),
)


class HostCollector:
    """CPU, load, memory, swap, filesystems, disk and network I/O of this machine.

    ``node_cpu_usage_ratio`` needs two observations, so it appears from the second
    cycle on; everything else is there from the first.
    """

    name = "host"

    def __init__(self) -> None:
        self._last_cpu: tuple[float, float] | None = None  # (busy, total) seconds

    def collect(self) -> list[Sample]:
        samples: list[Sample] = []
        samples.extend(self._cpu())
        samples.extend(self._memory())
        samples.extend(self._filesystems())
        samples.extend(self._disks())
        samples.extend(self._network())
        return samples

    def _cpu(self) -> Iterator[Sample]:
        times = psutil.cpu_times()
        # iowait and steal are time the CPU was not doing our work; count them idle,
        # as node-mixin's CPU utilisation does.
        idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "steal", 0.0)
        total = sum(times)
        # guest time is already included in user time on Linux; don't count it twice.
        total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
        busy = total - idle
        if self._last_cpu is not None:
            d_busy, d_total = busy - self._last_cpu[0], total - self._last_cpu[1]
            if d_total > 0:
                ratio = min(1.0, max(0.0, d_busy / d_total))
                yield Sample("node_cpu_usage_ratio", ratio, unit="ratio", capacity=1.0)
        self._last_cpu = (busy, total)
        yield Sample("node_cpus", float(psutil.cpu_count() or 1), unit="count")
        for minutes, value in zip((1, 5, 15), psutil.getloadavg(), strict=True):
            yield Sample(f"node_load{minutes}", value, unit="count")

    def _memory(self) -> Iterator[Sample]:
        mem = psutil.virtual_memory()
        total = float(mem.total)
        yield Sample("node_memory_total_bytes", total, unit="bytes", capacity=total)
        yield Sample("node_memory_available_bytes", mem.available, unit="bytes", capacity=total)
        yield Sample("node_memory_used_bytes", mem.used, unit="bytes", capacity=total)
        swap = psutil.swap_memory()
        swap_total = float(swap.total)
        swap_capacity = swap_total if swap_total > 0 else None
        yield Sample("node_memory_swap_total_bytes", swap_total, unit="bytes")
        yield Sample("node_memory_swap_used_bytes", swap.used, unit="bytes", capacity=swap_capacity)

    def _filesystems(self) -> Iterator[Sample]:
        # all=False keeps filesystems backed by a device (no proc, tmpfs, cgroup, nor
        # network mounts whose statvfs can hang the cycle).
        parts = psutil.disk_partitions(all=False)
        if not any(p.mountpoint == "/" for p in parts):
            # In containers the root is often overlayfs, which all=False drops; the root
            # is the one filesystem everybody wants to watch.
            parts += [p for p in psutil.disk_partitions(all=True) if p.mountpoint == "/"][:1]
        seen: set[str] = set()
        for part in parts:
            if part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            try:
                st = os.statvfs(part.mountpoint)
            except OSError as exc:  # unmounted between listing and stat, or no access
                log.debug("statvfs %s failed: %s", part.mountpoint, exc)
                continue
            labels = {"mountpoint": part.mountpoint, "device": part.device, "fstype": part.fstype}
            size = float(st.f_blocks * st.f_frsize)
            if size <= 0:
                continue
            free = float(st.f_bfree * st.f_frsize)
            avail = float(st.f_bavail * st.f_frsize)  # what non-root users can still write
            for metric, value in (
                ("node_filesystem_size_bytes", size),
                ("node_filesystem_free_bytes", free),
                ("node_filesystem_avail_bytes", avail),
                ("node_filesystem_used_bytes", size - free),
            ):
                yield Sample(metric, value, labels, unit="bytes", capacity=size)
            files = float(st.f_files)
            if files > 0:  # btrfs and some others report no inode limit
                for metric, value in (
                    ("node_filesystem_files", files),
                    ("node_filesystem_files_free", float(st.f_ffree)),
                    ("node_filesystem_files_used", files - st.f_ffree),
                ):
                    yield Sample(metric, value, labels, unit="count", capacity=files)

    def _disks(self) -> Iterator[Sample]:
        counters = psutil.disk_io_counters(perdisk=True, nowrap=True) or {}
        for device, io in counters.items():
            if _IGNORED_DISKS.match(device):
                continue
            labels = {"device": device}
            for field, metric, unit, scale in _DISK_COUNTERS:
                value = getattr(io, field, None)
                if value is not None:
                    yield Sample(metric, float(value) * scale, labels, unit=unit)

    def _network(self) -> Iterator[Sample]:
        counters = psutil.net_io_counters(pernic=True, nowrap=True) or {}
        for device, io in counters.items():
            labels = {"device": device}
            for field, metric, unit in _NET_COUNTERS:
                yield Sample(metric, float(getattr(io, field)), labels, unit=unit)


class ProcessCollector:
    """Processes of one target, found by pidfile, exact name or a cmdline regex.

    Emits ``process_up`` (1 when at least one process matched) and ``process_count``
    per target, then per process (labels ``target``, ``pid``) its RSS, CPU seconds, open
    file descriptors, threads and inet connections. A matcher that finds nothing is not
    an error: it is the ``process_up 0`` that rules act on.
    """

    def __init__(self, target: ProcessTarget) -> None:
        self.target = target
        self.name = target.name
        self._pattern: re.Pattern[str] | None = None
        if target.cmdline is not None:
            try:
                self._pattern = re.compile(target.cmdline)
            except re.error as exc:
                raise ConfigError(
                    f"target {target.name!r}: cmdline is not a valid regular expression: {exc}"
                ) from None
        self._cache: dict[int, psutil.Process] = {}

    def collect(self) -> list[Sample]:
        processes = self._find()
        labels = {"target": self.name}
        samples = [
            Sample("process_up", 1.0 if processes else 0.0, labels),
            Sample("process_count", float(len(processes)), labels, unit="count"),
        ]
        if not processes:
            return samples
        ram = float(psutil.virtual_memory().total)
        for proc in processes:
            samples.extend(self._describe(proc, ram))
        return samples

    def _find(self) -> list[psutil.Process]:
        target = self.target
        if target.pidfile is not None:
            return [p for p in (self._from_pidfile(target.pidfile),) if p is not None]
        own = os.getpid()
        # Ask process_iter for the one attribute we match on, so a cycle reads one small
        # /proc file per process instead of everything psutil knows.
        if target.process_name is not None:
            return [
                p
                for p in psutil.process_iter(["name"])
                if p.info["name"] == target.process_name and p.pid != own
            ]
        assert self._pattern is not None
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            argv = proc.info["cmdline"]
            # Never match ourselves: our own argv may well contain the pattern.
            if argv and proc.pid != own and self._pattern.search(" ".join(argv)):
                found.append(proc)
        return found

    def _from_pidfile(self, path: Path) -> psutil.Process | None:
        try:
            pid = int(path.read_text(encoding="ascii").split()[0])
        except (OSError, ValueError, IndexError) as exc:
            log.info("target %s: cannot read pidfile %s: %s", self.name, path, exc)
            return None
        # Reuse the Process object: psutil checks its create time, so a recycled pid is
        # not mistaken for the process we saw before.
        proc = self._cache.get(pid)
        try:
            if proc is None or not proc.is_running():
                proc = psutil.Process(pid)
        except psutil.Error:
            log.info("target %s: pid %d from %s is not running", self.name, pid, path)
            self._cache.pop(pid, None)
            return None
        self._cache = {pid: proc}
        return proc

    def _describe(self, proc: psutil.Process, ram: float) -> list[Sample]:
        labels = {"target": self.name, "pid": str(proc.pid)}
        out: list[Sample] = []
        try:
            with proc.oneshot():
                mem = proc.memory_info()
                out.append(Sample("process_resident_memory_bytes", mem.rss, labels, "bytes", ram))
                cpu = proc.cpu_times()
                out.append(
                    Sample("process_cpu_seconds_total", cpu.user + cpu.system, labels, "seconds")
                )
                out.append(Sample("process_threads", proc.num_threads(), labels, "count"))
                out.extend(self._fds(proc, labels))
                try:
                    conns = len(proc.net_connections(kind="inet"))
                    out.append(Sample("process_connections", conns, labels, "count"))
                except psutil.AccessDenied:
                    pass
        except psutil.NoSuchProcess:
            return []  # exited between listing and reading: it is simply gone
        except psutil.AccessDenied as exc:
            log.debug("target %s: no access to pid %d: %s", self.name, proc.pid, exc)
        return out

    @staticmethod
    def _fds(proc: psutil.Process, labels: dict[str, str]) -> list[Sample]:
        try:
            fds = float(proc.num_fds())
        except psutil.AccessDenied:
            return []
        limit: float | None = None
        try:
            soft, _hard = proc.rlimit(psutil.RLIMIT_NOFILE)
            if soft > 0:
                limit = float(soft)  # an fd leak exhausts the soft limit, not RAM
        except (psutil.AccessDenied, AttributeError, OSError):
            pass
        out = [Sample("process_open_fds", fds, labels, "count", limit)]
        if limit is not None:
            out.append(Sample("process_max_fds", limit, labels, "count"))
        return out
