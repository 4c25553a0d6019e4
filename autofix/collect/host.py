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
from collections.abc import Iterable, Iterator

import psutil

from autofix.collect.base import Sample
from autofix.collect.process import ProcessCollector

__all__ = ["HostCollector", "ProcessCollector"]  # ProcessCollector lives in .process

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


def parse_fs_include(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """``AUTOFIX_HOST_FS_INCLUDE`` → (fstypes, mountpoints): entries starting with ``/``
    are mountpoints, the others filesystem types.

    >>> parse_fs_include("tmpfs, /run/news")
    (frozenset({'tmpfs'}), frozenset({'/run/news'}))
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    mounts = frozenset(i.rstrip("/") or "/" for i in items if i.startswith("/"))
    return frozenset(i for i in items if not i.startswith("/")), mounts


class HostCollector:
    """CPU, load, memory, swap, filesystems, disk and network I/O of this machine.

    ``node_cpu_usage_ratio`` needs two observations, so it appears from the second
    cycle on; everything else is there from the first. Filesystems are the ones backed
    by a device, plus those whose type is in ``include_fstypes`` or whose mountpoint is
    in ``include_mounts`` (a tmpfs a service writes to: ``AUTOFIX_HOST_FS_INCLUDE``).
    """

    name = "host"

    def __init__(
        self, include_fstypes: Iterable[str] = (), include_mounts: Iterable[str] = ()
    ) -> None:
        self._last_cpu: tuple[float, float] | None = None  # (busy, total) seconds
        self.include_fstypes = frozenset(include_fstypes)
        self.include_mounts = frozenset(include_mounts)

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
        # network mounts whose statvfs can hang the cycle) unless they are included.
        parts = psutil.disk_partitions(all=False)
        if not any(p.mountpoint == "/" for p in parts):
            # In containers the root is often overlayfs, which all=False drops; the root
            # is the one filesystem everybody wants to watch.
            parts += [p for p in psutil.disk_partitions(all=True) if p.mountpoint == "/"][:1]
        if self.include_fstypes or self.include_mounts:
            # Asked for by name: a tmpfs or a network mount someone decided to watch.
            parts += [
                p
                for p in psutil.disk_partitions(all=True)
                if p.fstype in self.include_fstypes or p.mountpoint in self.include_mounts
            ]
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
