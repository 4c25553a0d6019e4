"""The ``Notifier``: one bounded queue and worker thread per channel, retries with backoff,
and the channels the ``notify_*`` settings configure."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential,
)

from autofix.config import ENV_PREFIX, Settings
from autofix.errors import ConfigError
from autofix.notify.channels import (
    _CONTROL,
    Channel,
    DeliveryError,
    SlackChannel,
    SmtpChannel,
    WebhookChannel,
    one_line,
)
from autofix.notify.messages import Notification

log = logging.getLogger("autofix.notify")  # one logger for the whole package, as before

_MAX_WAIT = 300.0  # seconds: the longest backoff between two attempts


@dataclass(frozen=True)
class ChannelStats:
    """Notifications a channel sent, gave up on, and dropped (queue full or closed)."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0


# --- the notifier ---------------------------------------------------------------------


class _Lane:
    """One channel's bounded queue, worker thread and counters (guarded by ``cond``)."""

    def __init__(self, channel: Channel, size: int) -> None:
        self.channel = channel
        self.size = size
        self.items: deque[Notification] = deque()
        self.busy = False
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.dropping = False


class Notifier:
    """Fan notifications out to channels without ever blocking the caller.

    ``notify`` queues (one bounded queue and worker thread per channel, started on first
    use); ``deliver`` sends now and says how each channel fared. Thread-safe.
    """

    def __init__(
        self,
        channels: Sequence[Channel],
        *,
        retries: int = 5,
        backoff: float = 1.0,
        queue_size: int = 100,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique: {names}")
        if retries < 0 or backoff < 0 or queue_size < 1:
            raise ValueError("retries and backoff must be >= 0, queue_size >= 1")
        self._lanes = [_Lane(c, queue_size) for c in channels]
        self._retries = retries
        self._backoff = backoff
        self._abort = threading.Event()
        self._sleep = sleep if sleep is not None else self._interruptible_sleep
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        queue_size: int = 100,
        verify: ssl.SSLContext | bool = True,
    ) -> Notifier:
        """The channels the ``notify_*`` settings configure (possibly none).

        ``transport`` and ``verify`` (TLS trust of the PagerDuty client) are for tests.
        """
        timeout = settings.notify_timeout.total_seconds()
        slack = _url(settings.notify_slack_url, "notify_slack_url")
        webhook = _url(settings.notify_webhook_url, "notify_webhook_url")
        smtp = _smtp(settings, timeout)  # validates before any client is opened
        channels: list[Channel] = []
        if slack:
            channels.append(SlackChannel(slack, timeout=timeout, transport=transport))
        if webhook:
            channels.append(WebhookChannel(webhook, timeout=timeout, transport=transport))
        if smtp:
            channels.append(smtp)
        channels += _incident_tools(settings, timeout, transport, verify)
        return cls(
            channels,
            retries=settings.notify_retries,
            backoff=settings.notify_backoff.total_seconds(),
            queue_size=queue_size,
            sleep=sleep,
        )

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the configured channels, e.g. ``("slack", "smtp")``."""
        return tuple(lane.channel.name for lane in self._lanes)

    @property
    def stats(self) -> dict[str, ChannelStats]:
        """Sent, failed and dropped notifications per channel so far."""
        result = {}
        for lane in self._lanes:
            with lane.cond:
                result[lane.channel.name] = ChannelStats(lane.sent, lane.failed, lane.dropped)
        return result

    def start(self) -> None:
        """Start the worker threads now (else the first ``notify`` starts them)."""
        for lane in self._lanes:
            with lane.cond:
                self._start(lane)

    def notify(self, notification: Notification) -> bool:
        """Queue for every channel that takes its kind; False when none took it."""
        accepted = [
            self._enqueue(lane, notification)
            for lane in self._lanes
            if _takes(lane.channel, notification)
        ]
        return any(accepted)

    def deliver(self, notification: Notification, *, retries: int | None = None) -> dict[str, str]:
        """Send now, in this thread: ``{"slack": "sent", "smtp": "failed: …"}``.

        A channel that does not take the notification's kind (PagerDuty and Alertmanager
        take only escalations and resolutions) answers ``skipped: …``.
        """
        if self._closed:
            raise RuntimeError("the notifier is closed")
        attempts = self._retries if retries is None else retries
        return {
            lane.channel.name: self._send(lane, notification, attempts)
            if _takes(lane.channel, notification)
            else f"skipped: takes only {', '.join(sorted(_kinds(lane.channel) or ()))}"
            for lane in self._lanes
        }

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued notification is sent or given up; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for lane in self._lanes:
            with lane.cond:
                while lane.items or lane.busy:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    lane.cond.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Stop taking notifications and deliver the queued ones within ``timeout``.

        What is still queued after ``timeout`` is dropped (and counted); an attempt in
        flight ends within the channel's own timeout, on a daemon thread. True when
        everything queued was delivered or given up in time.
        """
        if self._closed:
            return self.flush(timeout)
        deadline = time.monotonic() + timeout
        self._closed = True
        for lane in self._lanes:
            with lane.cond:
                lane.cond.notify_all()
        done = self.flush(timeout)
        if not done:
            self._abort.set()  # cuts backoff sleeps short and stops retrying
        for lane in self._lanes:
            with lane.cond:
                thread = lane.thread
                lane.thread = None
            if thread is None:
                lane.channel.close()
            else:  # the worker closes its channel when it ends
                thread.join(max(deadline - time.monotonic(), 0))
        return done

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _interruptible_sleep(self, seconds: float) -> None:
        self._abort.wait(seconds)

    def _enqueue(self, lane: _Lane, n: Notification) -> bool:
        with lane.cond:
            if self._closed or len(lane.items) >= lane.size:
                lane.dropped += 1
                if not lane.dropping:  # one line per burst, not one per notification
                    why = "notifier closed" if self._closed else f"queue full ({lane.size})"
                    log.warning("%s: %s, dropping %r", lane.channel.name, why, one_line(n.title))
                lane.dropping = True
                return False
            lane.dropping = False
            lane.items.append(n)
            self._start(lane)
            lane.cond.notify_all()
            return True

    def _start(self, lane: _Lane) -> None:
        # Called with lane.cond held.
        if lane.thread is None and not self._closed:
            lane.thread = threading.Thread(
                target=self._work,
                args=(lane,),
                name=f"autofix-notify-{lane.channel.name}",
                daemon=True,  # a hung endpoint must never keep the process alive
            )
            lane.thread.start()

    def _work(self, lane: _Lane) -> None:
        try:
            while True:
                with lane.cond:
                    while not lane.items and not self._closed:
                        lane.cond.wait()
                    if not lane.items:
                        return
                    if self._abort.is_set():
                        lane.dropped += len(lane.items)
                        lane.items.clear()
                        lane.cond.notify_all()
                        return
                    n = lane.items.popleft()
                    lane.busy = True
                try:
                    self._send(lane, n, self._retries)
                finally:
                    with lane.cond:
                        lane.busy = False
                        lane.cond.notify_all()
        finally:
            lane.channel.close()

    def _send(self, lane: _Lane, n: Notification, retries: int) -> str:
        channel = lane.channel
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            channel.send(n)

        retrying = Retrying(
            stop=stop_after_attempt(retries + 1) | stop_when_event_set(self._abort),
            wait=wait_exponential(multiplier=self._backoff, max=_MAX_WAIT),
            retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.transient),
            sleep=self._sleep,
            before_sleep=_log_retry(channel.name),
            reraise=True,
        )
        try:
            retrying(attempt)
        except DeliveryError as exc:
            reason = str(exc)
        except Exception as exc:
            # A broken channel must not kill the worker; the traceback goes to debug.
            reason = f"{type(exc).__name__}: {one_line(str(exc))}"
            log.debug("%s: unexpected error", channel.name, exc_info=True)
        else:
            with lane.cond:
                lane.sent += 1
            return "sent"
        with lane.cond:
            lane.failed += 1
        log.warning(
            "%s: %s notification %r failed after %d attempt(s): %s",
            channel.name,
            n.kind,
            one_line(n.title),
            attempts,
            reason,
        )
        return f"failed: {reason}"


def _kinds(channel: Channel) -> frozenset[str] | None:
    kinds = getattr(channel, "kinds", None)
    return frozenset(kinds) if kinds is not None else None


def _takes(channel: Channel, n: Notification) -> bool:
    """A channel with ``kinds`` takes only those; every other channel takes everything."""
    kinds = _kinds(channel)
    return kinds is None or n.kind in kinds


def _log_retry(name: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.debug(
            "%s: attempt %d failed (%s), retry in %.3g s", name, state.attempt_number, error, wait
        )

    return before_sleep


# --- settings -------------------------------------------------------------------------


def _env(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def _url(value: str | None, setting: str) -> str | None:
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{_env(setting)}: must be an http:// or https:// URL")
    return value


def _incident_tools(
    settings: Settings,
    timeout: float,
    transport: httpx.BaseTransport | None,
    verify: ssl.SSLContext | bool,
) -> list[Channel]:
    from autofix.notify.oncall import AlertmanagerChannel, PagerDutyChannel

    channels: list[Channel] = []
    manager = _url(settings.notify_alertmanager_url, "notify_alertmanager_url")
    if manager:
        channels.append(
            AlertmanagerChannel(
                manager, host=settings.hostname, timeout=timeout, transport=transport
            )
        )
    key = settings.notify_pagerduty_routing_key
    if key is not None and key.get_secret_value():
        url = _url(settings.notify_pagerduty_url, "notify_pagerduty_url")
        assert url is not None
        channels.append(
            PagerDutyChannel(
                key.get_secret_value(),
                url=url,
                source=settings.hostname,
                timeout=timeout,
                verify=verify,
            )
        )
    return channels


def _smtp(settings: Settings, timeout: float) -> SmtpChannel | None:
    if not settings.notify_smtp_host:
        return None
    recipients = [a.strip() for a in settings.notify_smtp_to.split(",") if a.strip()]
    if not recipients:
        raise ConfigError(
            f"{_env('notify_smtp_to')} is empty but {_env('notify_smtp_host')} is set: "
            "name at least one recipient"
        )
    for address in [settings.notify_smtp_from, *recipients]:
        if "@" not in address or _CONTROL.search(address):
            raise ConfigError(f"notification e-mail address {address!r} is not valid")
    password = settings.notify_smtp_password
    if settings.notify_smtp_user and password is None:
        raise ConfigError(
            f"{_env('notify_smtp_user')} is set but {_env('notify_smtp_password')} is not"
        )
    return SmtpChannel(
        settings.notify_smtp_host,
        settings.notify_smtp_port,
        sender=settings.notify_smtp_from,
        recipients=recipients,
        starttls=settings.notify_smtp_starttls,
        user=settings.notify_smtp_user or None,
        password=password.get_secret_value() if password is not None else None,
        timeout=timeout,
    )
