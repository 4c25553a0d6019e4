"""Processes of a target: ``process`` targets found by matcher, ``supervisor`` programs by pid.

Per process (labels ``target``, ``pid``) the collectors emit RSS, CPU seconds, threads,
open file descriptors against the soft ``RLIMIT_NOFILE`` and the start time; per target
``process_up``, ``process_count`` and ``process_restarts_total``; per memory cgroup
(labels ``target``, ``cgroup``) usage and working set against the cgroup's limit.

What RSS is measured against — its ``capacity``, what exhaustion means for a worker — is
the first of: the target's ``memory_limit``, the limit of the memory cgroup the process
runs in, the host's RAM. An fd leak exhausts the soft fd limit, not RAM.

Restarts are counted by this process (supervisord keeps no count): a new pid (or start
time) where another ran before. The count lives beside the collectors, not in them, so
the fresh collectors a fix's verify builds keep adding to the same counter; it starts at
0 when autofix starts, which the store treats as a counter reset.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import xmlrpc.client
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import psutil

from autofix.collect.base import Sample
from autofix.collect.cgroup import CgroupMemory, CgroupReader
from autofix.errors import ConfigError
from autofix.targets import ProcessTarget, SupervisorTarget

log = logging.getLogger(__name__)

#: supervisord's process states (``getProcessInfo`` ``state``), kept as a number series.
SUPERVISOR_STATES = {
    "STOPPED": 0,
    "STARTING": 10,
    "RUNNING": 20,
    "BACKOFF": 30,
    "STOPPING": 40,
    "EXITED": 100,
    "FATAL": 200,
    "UNKNOWN": 1000,
}

_Identity = tuple[int, float]  # (pid, start time): a recycled pid is another process


class RestartCounter:
    """Restarts per target, observed from the set of running (pid, start) pairs.

    A process that vanished while a new one appeared is a restart; a pool that grows is
    not. A stop followed by a start is counted when the start is seen.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, tuple[frozenset[_Identity], int]] = {}

    def observe(self, key: str, running: Iterable[_Identity]) -> int:
        now = frozenset(running)
        with self._lock:
            last, count = self._state.get(key, (frozenset(), 0))
            if last and now:
                count += min(len(last - now), len(now - last))
            self._state[key] = (now or last, count)
            return count


#: Shared by every collector of this process (see the module docstring).
RESTARTS = RestartCounter()


class _Processes:
    """What ProcessCollector and SupervisorCollector share: describing processes."""

    name: str
    memory_limit: float | None

    def __init__(self, cgroups: CgroupReader | None) -> None:
        self.cgroups = cgroups or CgroupReader()

    def _describe_all(self, processes: list[psutil.Process]) -> list[Sample]:
        ram = float(psutil.virtual_memory().total)
        out: list[Sample] = []
        seen: dict[str, CgroupMemory] = {}
        for proc in processes:
            group = self.cgroups.memory_of(proc.pid)
            if group is not None:
                seen.setdefault(group.path, group)
            capacity = self.memory_limit
            if capacity is None and group is not None and group.limit is not None:
                capacity = group.limit
            out.extend(self._describe(proc, capacity or ram))
        for group in seen.values():
            out.extend(_cgroup_samples(self.name, group, ram))
        return out

    def _describe(self, proc: psutil.Process, memory_capacity: float) -> list[Sample]:
        labels = {"target": self.name, "pid": str(proc.pid)}
        out: list[Sample] = []
        try:
            with proc.oneshot():
                rss = proc.memory_info().rss
                out.append(
                    Sample("process_resident_memory_bytes", rss, labels, "bytes", memory_capacity)
                )
                cpu = proc.cpu_times()
                out.append(
                    Sample("process_cpu_seconds_total", cpu.user + cpu.system, labels, "seconds")
                )
                out.append(Sample("process_threads", proc.num_threads(), labels, "count"))
                out.append(
                    Sample("process_start_time_seconds", proc.create_time(), labels, "seconds")
                )
                out.extend(_fds(proc, labels))
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


def _cgroup_samples(target: str, group: CgroupMemory, ram: float) -> list[Sample]:
    """cAdvisor's names; without a limit the cgroup can take the whole host's RAM."""
    labels = {"target": target, "cgroup": group.path}
    capacity = group.limit if group.limit is not None else ram
    out = [
        Sample("container_memory_usage_bytes", group.usage, labels, "bytes", capacity),
        Sample("container_memory_working_set_bytes", group.working_set, labels, "bytes", capacity),
    ]
    if group.limit is not None:
        out.append(Sample("container_spec_memory_limit_bytes", group.limit, labels, "bytes"))
    return out


def _identities(processes: Iterable[psutil.Process]) -> list[_Identity]:
    out = []
    for proc in processes:
        try:
            out.append((proc.pid, proc.create_time()))
        except psutil.Error:
            continue
    return out


class ProcessCollector(_Processes):
    """Processes of one ``process`` target, found by pidfile, exact name or a cmdline regex.

    Emits ``process_up`` (1 when at least one process matched), ``process_count`` and
    ``process_restarts_total`` per target, then per process its RSS, CPU seconds, open
    file descriptors, threads, start time and inet connections. A matcher that finds
    nothing is not an error: it is the ``process_up 0`` that rules act on.
    """

    def __init__(
        self,
        target: ProcessTarget,
        *,
        cgroups: CgroupReader | None = None,
        restarts: RestartCounter = RESTARTS,
    ) -> None:
        super().__init__(cgroups)
        self.target = target
        self.name = target.name
        self.memory_limit = float(target.memory_limit) if target.memory_limit else None
        self.restarts = restarts
        self._pattern: re.Pattern[str] | None = None
        if target.cmdline is not None:
            try:
                self._pattern = re.compile(target.cmdline)
            except re.error as exc:
                raise ConfigError(
                    f"target {target.name!r}: cmdline is not a valid regular expression: {exc}"
                ) from None
        self._cache: dict[int, psutil.Process] = {}
        matcher = target.pidfile or target.process_name or target.cmdline
        self._key = f"process:{target.name}:{matcher}"

    def collect(self) -> list[Sample]:
        processes = self._find()
        labels = {"target": self.name}
        restarts = self.restarts.observe(self._key, _identities(processes))
        samples = [
            Sample("process_up", 1.0 if processes else 0.0, labels),
            Sample("process_count", float(len(processes)), labels, unit="count"),
            Sample("process_restarts_total", float(restarts), labels, unit="count"),
        ]
        if processes:
            samples.extend(self._describe_all(processes))
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


class SupervisorCollector(_Processes):
    """A supervisord program: its state over XML-RPC, then its process tree from /proc.

    Emits ``probe_up{kind=supervisor}`` (supervisord answered within the timeout; 0 and
    nothing else when it did not), ``supervisord_process_state`` (supervisord's state
    code: 20 RUNNING …), ``process_up`` (RUNNING), ``process_restarts_total``, and per
    process of the program — its main pid and every descendant (a gunicorn master's
    workers) — the per-process series. The program must run on this host for the
    per-process series; on another host only the state and restarts are known.
    """

    def __init__(
        self,
        target: SupervisorTarget,
        timeout: float,
        *,
        cgroups: CgroupReader | None = None,
        restarts: RestartCounter = RESTARTS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(cgroups)
        self.target = target
        self.name = target.name
        self.timeout = timeout
        self.memory_limit = float(target.memory_limit) if target.memory_limit else None
        self.restarts = restarts
        self._transport = transport
        self._key = f"supervisor:{target.name}:{target.url}:{target.program}"
        #: Why the last collection found supervisord unreachable, or None.
        self.last_error: str | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def collect(self) -> list[Sample]:
        probe = {"target": self.name, "kind": "supervisor"}
        labels = {"target": self.name}
        try:
            info = self._process_info()
        except (httpx.HTTPError, xmlrpc.client.Error, ValueError) as exc:
            self.last_error = " ".join(str(exc).split()) or type(exc).__name__
            log.warning("supervisor %s down: %s", self.name, self.last_error)
            return [Sample("probe_up", 0.0, probe)]
        self.last_error = None
        state = str(info.get("statename", "UNKNOWN"))
        pid = int(info.get("pid", 0) or 0)
        running = state == "RUNNING" and pid > 0
        start = float(info.get("start", 0) or 0)
        restarts = self.restarts.observe(self._key, [(pid, start)] if running else [])
        samples = [
            Sample("probe_up", 1.0, probe),
            Sample("supervisord_process_state", float(SUPERVISOR_STATES.get(state, 1000)), labels),
            Sample("process_up", 1.0 if running else 0.0, labels),
            Sample("process_restarts_total", float(restarts), labels, unit="count"),
        ]
        if running:
            samples.extend(self._describe_all(_tree(pid, start)))
        return samples

    def _process_info(self) -> dict[str, Any]:
        body = xmlrpc.client.dumps((self.target.program,), "supervisor.getProcessInfo")
        with self._lock:
            if self._client is None:
                # Built once: creating the TLS context costs more than the call itself.
                self._client = httpx.Client(timeout=self.timeout, transport=self._transport)
            client = self._client
        reply = client.post(self.target.url, content=body, headers={"Content-Type": "text/xml"})
        reply.raise_for_status()
        (info,), _ = xmlrpc.client.loads(reply.content)  # a Fault raises here
        if not isinstance(info, dict):
            raise ValueError(f"unexpected getProcessInfo reply: {type(info).__name__}")
        return info


#: supervisord's ``start`` and the kernel's start time of the same process differ by the
#: time supervisord takes to fork and exec it; another process is seconds or days apart.
_SAME_START = 5.0


def _tree(pid: int, start: float) -> list[psutil.Process]:
    """The process ``pid`` and its descendants; empty when it is not on this host.

    A pid is only this host's when its start time matches the one supervisord reports:
    the program may run on another host (supervisord reached over the network), where
    the same number names an unrelated local process.
    """
    try:
        main = psutil.Process(pid)
        if start > 0 and abs(main.create_time() - start) > _SAME_START:
            return []
        return [main, *main.children(recursive=True)]
    except psutil.Error:
        return []
