"""The scheduler's heartbeat and systemd's notify protocol for ``autofix serve``.

Under ``Type=notify`` systemd waits for ``READY=1`` (sent once the store is open, the API
listens and the scheduler runs) and, with ``WatchdogSec=``, restarts the service unless
``WATCHDOG=1`` arrives in time. Here that ping is sent by ``Heartbeat.beat``, which is a
job of the scheduler itself (``autofix.scheduler``, on an executor of its own so a long
``train`` cannot delay it): when the scheduler's loop wedges — a lock held forever, a
dead thread — the pings stop and systemd restarts autofix. No free-running thread pets the
watchdog. A job that hangs inside its own run is a different failure: the scheduler goes
on, and the ``AutofixJobNotRunning`` alert reports the job (``deploy/prometheus/``).

The datagrams go through libsystemd's own ``sd_notify`` (cysystemd); without
``NOTIFY_SOCKET`` (not under systemd) they are no-ops. ``last`` (Unix time) is what
``/metrics`` exports as ``autofix_scheduler_heartbeat_timestamp_seconds``.

>>> sent = []
>>> beat = Heartbeat(5.0, send=sent.append, clock=lambda: 100.0)
>>> beat.beat(); beat.last, sent
(100.0, ['WATCHDOG=1'])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from autofix.config import systemd_notify_socket

log = logging.getLogger(__name__)

#: The scheduler job id of the heartbeat.
JOB_ID = "heartbeat"


def sd_notify(message: str) -> None:
    """One ``KEY=VALUE`` datagram to ``$NOTIFY_SOCKET`` via libsystemd (no-op when unset)."""
    socket = systemd_notify_socket()
    if socket is None:
        # Not under systemd: libsystemd sends nothing and cysystemd would log that as an
        # error at every heartbeat of a service run in a terminal.
        return
    from cysystemd.daemon import Notification, notify

    logging.getLogger("cysystemd.daemon").setLevel(logging.CRITICAL)  # reported below
    key, _, value = message.partition("=")
    kind = Notification[key]
    result = notify(kind, value) if kind.value.constant is None else notify(kind)
    if isinstance(result, Exception):  # cysystemd returns failures
        log.warning("sd_notify %s to %s failed: %s", key, socket, result)


def interval_for(configured: timedelta, watchdog: timedelta | None) -> float:
    """Seconds between beats: the setting, but at most a third of systemd's watchdog."""
    seconds = configured.total_seconds()
    if watchdog is not None and watchdog.total_seconds() > 0:
        seconds = min(seconds, watchdog.total_seconds() / 3)
    return max(seconds, 0.05)


class Heartbeat:
    """Beats when the scheduler runs it; tells systemd about readiness and stopping."""

    def __init__(
        self,
        interval: float,
        *,
        send: Callable[[str], object] = sd_notify,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.beats = 0
        self.last: float | None = None
        self._send = send
        self._clock = clock

    def beat(self) -> None:
        """The scheduler job: stamp the time and pet systemd's watchdog."""
        self.last = self._clock()
        self.beats += 1
        self._send("WATCHDOG=1")

    def ready(self, status: str) -> None:
        """The service is up: store open, API listening, scheduler running."""
        self._send(f"STATUS={status}")
        self._send("READY=1")

    def stopping(self, status: str = "stopping") -> None:
        self._send(f"STATUS={status}")
        self._send("STOPPING=1")


__all__ = ["JOB_ID", "Heartbeat", "interval_for", "sd_notify"]
