"""Channels: Slack, a generic JSON webhook and SMTP e-mail, and how each renders a
``Notification``."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

import httpx

from autofix import __version__
from autofix.errors import AutofixError
from autofix.notify.messages import Notification, _utc_now

log = logging.getLogger("autofix.notify")  # one logger for the whole package, as before

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


def _links(n: Notification) -> list[tuple[str, str]]:
    """The notification's links with their labels, the runbook first."""
    out = [(n.runbook, "Runbook")] if n.runbook else []
    return out + ([(n.link, "Open in autofix")] if n.link else [])


def _slack_link(url: str, label: str) -> str:
    # Inside <url|label> a raw '|' or '>' would end the URL early.
    safe = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe}|{label}>"


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
    links = [_slack_link(url, label) for url, label in _links(n)]
    if links:
        elements = [{"type": "mrkdwn", "text": link} for link in links]
        blocks.append({"type": "context", "elements": elements})
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
        "runbook_url": n.runbook,
        "incident": n.incident,
        "sent_at": sent_at.isoformat(timespec="seconds"),
    }


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

    def payload(self, n: Notification) -> Any:
        """The JSON body for ``n``."""
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
        if n.runbook:
            lines += ["", f"Runbook: {n.runbook}"]
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
