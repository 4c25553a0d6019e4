"""Notifications: a Slack incoming webhook, SMTP e-mail and a generic JSON webhook.

Escalations, fixes waiting for approval and the daily report reach a human here.
``Notifier.notify`` never blocks its caller: every channel has its own bounded queue and
worker thread, so a hanging Slack endpoint delays neither the scheduler nor the e-mail.
A full queue drops the newest notification and counts it. A failed attempt is retried
with exponential backoff (tenacity) when the failure is transient (a timeout, a refused
connection, HTTP 5xx/408/429, SMTP 4xx); what still fails is logged on one line and
counted, never raised.

Each channel renders the same plain ``Notification``: Slack escapes it for mrkdwn, e-mail
puts only the (single-line) title in a header, the webhook posts it as JSON.

>>> n = escalation(42, "service.restart", "web-1", "budget", "fix budget spent")
>>> n.title
'Fix 42 escalated: service.restart on web-1'
>>> slack_payload(approval(7, "files.clean_temp", "<!channel>", None))["text"]
'Fix 7 waits for approval: files.clean_temp on &lt;!channel&gt;'
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Protocol

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential,
)

from autofix import __version__
from autofix.config import ENV_PREFIX, Settings
from autofix.errors import AutofixError, ConfigError

log = logging.getLogger(__name__)

Kind = Literal["escalation", "approval", "report", "test"]

_MAX_WAIT = 300.0  # seconds: the longest backoff between two attempts
_TRANSIENT_HTTP = {408, 425, 429}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_MRKDWN = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Slack Block Kit limits (characters / fields per section).
_SLACK_HEADER = 150
_SLACK_TEXT = 3000
_SLACK_FIELD = 2000
_SLACK_FIELDS = 10


class DeliveryError(AutofixError):
    """One delivery attempt failed; ``transient`` failures are retried, others are not."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class Notification:
    """What to tell a human; plain text (channels escape it), fields in display order."""

    kind: Kind
    title: str
    text: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    link: str | None = None

    def __post_init__(self) -> None:
        # A read-only copy: the notification crosses to a worker thread after notify().
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        if self.link is not None and not self.link.startswith(("http://", "https://")):
            raise ValueError(f"link must be an http(s) URL, not {self.link[:40]!r}")


@dataclass(frozen=True)
class ChannelStats:
    """Notifications a channel sent, gave up on, and dropped (queue full or closed)."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0


class Channel(Protocol):
    """Where notifications go. ``send`` raises ``DeliveryError`` when an attempt fails."""

    @property
    def name(self) -> str: ...

    def send(self, notification: Notification) -> None: ...

    def close(self) -> None: ...


# --- rendering ------------------------------------------------------------------------


def one_line(text: str, limit: int = 200) -> str:
    """Control characters and line breaks become one space; clipped to ``limit``."""
    return _clip(" ".join(_CONTROL.sub(" ", text).split()), limit)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mrkdwn_escape(text: str, limit: int | None = None) -> str:
    """Escape ``&``, ``<`` and ``>`` for Slack mrkdwn, clipped without cutting an entity.

    >>> mrkdwn_escape("<!here> & <https://evil|click>")
    '&lt;!here&gt; &amp; &lt;https://evil|click&gt;'
    """
    escaped = "".join(_MRKDWN.get(ch, ch) for ch in text)
    if limit is None or len(escaped) <= limit:
        return escaped
    parts: list[str] = []
    size = 0
    for ch in text:
        piece = _MRKDWN.get(ch, ch)
        if size + len(piece) > limit - 1:
            break
        parts.append(piece)
        size += len(piece)
    return "".join(parts) + "…"


def _slack_link(url: str) -> str:
    # Inside <url|label> a raw '|' or '>' would end the URL early.
    safe = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe}|Open in autofix>"


def slack_payload(n: Notification) -> dict[str, Any]:
    """Slack incoming-webhook body: fallback ``text`` and header/section blocks."""
    title = one_line(n.title, _SLACK_HEADER) or n.kind
    blocks: list[dict[str, Any]] = [
        # plain_text is shown as is: no mrkdwn parsing, so no escaping.
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": False}}
    ]
    if n.text:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": mrkdwn_escape(n.text, _SLACK_TEXT)},
            }
        )
    items = list(n.fields.items())
    for start in range(0, len(items), _SLACK_FIELDS):
        cells = [
            {"type": "mrkdwn", "text": mrkdwn_escape(f"*{k}*\n{v}", _SLACK_FIELD)}
            for k, v in items[start : start + _SLACK_FIELDS]
        ]
        blocks.append({"type": "section", "fields": cells})
    if n.link:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_link(n.link)}]}
        )
    # ``text`` is what phone notifications show; it is mrkdwn too.
    return {"text": mrkdwn_escape(one_line(n.title, _SLACK_TEXT), _SLACK_TEXT), "blocks": blocks}


def webhook_payload(n: Notification, sent_at: datetime) -> dict[str, Any]:
    """The generic webhook body: the notification as JSON plus when it was sent."""
    return {
        "kind": n.kind,
        "title": n.title,
        "text": n.text,
        "fields": dict(n.fields),
        "link": n.link,
        "sent_at": sent_at.isoformat(timespec="seconds"),
    }


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- channels -------------------------------------------------------------------------


class _HttpChannel:
    """POSTs JSON; a non-2xx answer or a transport error is a failed attempt."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._name = name
        self._url = url
        self._timeout = timeout
        self._client = httpx.Client(
            transport=transport,
            timeout=timeout,
            headers={"User-Agent": f"autofix/{__version__}"},
        )

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        # Never the URL: a Slack webhook URL is a credential.
        return f"{type(self).__name__}(name={self._name!r})"

    def payload(self, n: Notification) -> dict[str, Any]:
        raise NotImplementedError

    def send(self, notification: Notification) -> None:
        try:
            response = self._client.post(self._url, json=self.payload(notification))
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"timed out after {self._timeout:g} s", transient=True) from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", transient=True) from exc
        if not response.is_success:
            status = response.status_code
            detail = one_line(response.text, 100)
            raise DeliveryError(
                f"HTTP {status}" + (f" {detail}" if detail else ""),
                transient=status >= 500 or status in _TRANSIENT_HTTP,
            )

    def close(self) -> None:
        self._client.close()


class SlackChannel(_HttpChannel):
    """A Slack incoming webhook (``https://hooks.slack.com/services/…``)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "slack",
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, name=name, timeout=timeout, transport=transport)

    def payload(self, n: Notification) -> dict[str, Any]:
        return slack_payload(n)


class WebhookChannel(_HttpChannel):
    """Any endpoint that takes the notification as JSON (see ``webhook_payload``)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "webhook",
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        super().__init__(url, name=name, timeout=timeout, transport=transport)
        self._clock = clock

    def payload(self, n: Notification) -> dict[str, Any]:
        return webhook_payload(n, self._clock())


class SmtpChannel:
    """E-mail through an SMTP server: one plain-text message to every recipient."""

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str,
        recipients: Sequence[str],
        starttls: bool = False,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        name: str = "smtp",
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._name = name
        self._host = host
        self._port = port
        self._sender = sender
        self._recipients = list(recipients)
        self._starttls = starttls
        self._user = user
        self._password = password
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._clock = clock

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"SmtpChannel(name={self._name!r}, host={self._host!r}, port={self._port})"

    def message(self, n: Notification) -> EmailMessage:
        """The e-mail; only the title reaches a header, flattened to one line."""
        msg = EmailMessage()
        msg["Subject"] = one_line(f"[autofix] {n.title}")
        msg["From"] = self._sender
        msg["To"] = ", ".join(self._recipients)
        msg["Date"] = format_datetime(self._clock())
        domain = self._sender.rpartition("@")[2].strip("> ") or "autofix.local"
        msg["Message-ID"] = make_msgid("autofix", domain=domain)
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        msg["X-Autofix-Kind"] = n.kind
        lines = [n.text, ""] if n.text else []
        # One line per field, so a value cannot forge another field.
        lines += [f"{one_line(k, 80)}: {one_line(v, 2000)}" for k, v in n.fields.items()]
        if n.link:
            lines += ["", n.link]
        msg.set_content("\n".join(lines) + "\n")
        return msg

    def send(self, notification: Notification) -> None:
        msg = self.message(notification)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                if self._user is not None:
                    smtp.login(self._user, self._password or "")
                refused = smtp.send_message(msg)
        except smtplib.SMTPResponseException as exc:
            error = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            raise DeliveryError(
                f"SMTP {exc.smtp_code} {one_line(error, 100)}",
                transient=400 <= exc.smtp_code < 500,
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise DeliveryError(
                f"SMTP recipients refused ({', '.join(map(str, codes))})",
                transient=all(400 <= code < 500 for code in codes),
            ) from exc
        except (smtplib.SMTPNotSupportedError, ssl.SSLCertVerificationError) as exc:
            raise DeliveryError(f"SMTP {type(exc).__name__}: {exc}", transient=False) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {type(exc).__name__}: {exc}", transient=True) from exc
        if refused:
            # Some recipients got it: a retry would send them a duplicate.
            log.warning("%s: %d recipient(s) refused the e-mail", self._name, len(refused))

    def close(self) -> None:
        """Nothing to close: every send opens and quits its own SMTP session."""


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
    ) -> Notifier:
        """The channels the ``notify_*`` settings configure (possibly none)."""
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
        """Queue for every channel; False when no channel took it (none, full, closed)."""
        accepted = [self._enqueue(lane, notification) for lane in self._lanes]
        return any(accepted)

    def deliver(self, notification: Notification, *, retries: int | None = None) -> dict[str, str]:
        """Send now, in this thread: ``{"slack": "sent", "smtp": "failed: …"}``."""
        if self._closed:
            raise RuntimeError("the notifier is closed")
        attempts = self._retries if retries is None else retries
        return {lane.channel.name: self._send(lane, notification, attempts) for lane in self._lanes}

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


# --- notifications from plain values -------------------------------------------------


def escalation(
    fix_id: int | None,
    action: str,
    target: str,
    gate: str | None,
    reason: str,
    *,
    link: str | None = None,
) -> Notification:
    """A fix that stopped and needs a human (refused by a gate, failed, rolled back)."""
    subject = f"Fix {fix_id}" if fix_id is not None else "A fix"
    fields = {"fix": str(fix_id) if fix_id is not None else "-", "action": action, "target": target}
    if gate:
        fields["gate"] = gate
    return Notification(
        kind="escalation",
        title=f"{subject} escalated: {action} on {target}",
        text=f"autofix stopped and needs a human: {reason}",
        fields=fields,
        link=link,
    )


def approval(
    fix_id: int,
    action: str,
    target: str,
    expires_at: datetime | None,
    *,
    reason: str = "",
    link: str | None = None,
) -> Notification:
    """A fix waiting for approval; ``expires_at`` is UTC (naive values are taken as UTC)."""
    fields = {"fix": str(fix_id), "action": action, "target": target}
    text = f"Approve: autofix fix approve {fix_id}\nReject: autofix fix reject {fix_id}"
    if expires_at is not None:
        at = expires_at.astimezone(UTC) if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
        fields["expires"] = at.strftime("%Y-%m-%d %H:%M UTC")
    if reason:
        text = f"{reason}\n{text}"
    return Notification(
        kind="approval",
        title=f"Fix {fix_id} waits for approval: {action} on {target}",
        text=text,
        fields=fields,
        link=link,
    )


def _kpi(value: object) -> str | None:
    if value is None:
        return "n/a"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return None  # nested breakdowns belong in the report itself


def report(
    path: Path | str,
    kpis: Mapping[str, object],
    *,
    title: str = "autofix daily report",
    link: str | None = None,
) -> Notification:
    """The daily report is ready: where it is and its headline KPIs.

    Numbers show 4 significant digits, None shows ``n/a``; nested values (breakdowns by
    state, say) are left to the report file.
    """
    fields = {name: text for name, value in kpis.items() if (text := _kpi(value)) is not None}
    return Notification(
        kind="report", title=title, text=f"Report: {path}", fields=fields, link=link
    )


def self_test(host: str) -> Notification:
    """What ``autofix notify test`` sends."""
    return Notification(
        kind="test",
        title="autofix test notification",
        text=f"If you can read this, autofix on {host} can reach you here.",
        fields={"host": host, "sent": _utc_now().strftime("%Y-%m-%d %H:%M:%S UTC")},
    )


__all__ = [
    "Channel",
    "ChannelStats",
    "DeliveryError",
    "Kind",
    "Notification",
    "Notifier",
    "SlackChannel",
    "SmtpChannel",
    "WebhookChannel",
    "approval",
    "escalation",
    "mrkdwn_escape",
    "one_line",
    "report",
    "self_test",
    "slack_payload",
    "webhook_payload",
]
