"""Notifications against real servers on loopback: an HTTP sink and an aiosmtpd SMTP server."""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import email
import email.policy
import itertools
import json
import logging
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

import autofix.notify
import autofix.notify.channels
import autofix.notify.messages
import autofix.notify.notifier
import autofix.notify.oncall
from autofix.config import Settings, load_settings
from autofix.errors import ConfigError
from autofix.notify import (
    ChannelStats,
    Notification,
    Notifier,
    SlackChannel,
    SmtpChannel,
    WebhookChannel,
    approval,
    escalation,
    report,
)
from tests.clirun import run_autofix
from tests.servers import free_port

BACKOFF = 0.01

# --- an HTTP sink that records requests ---------------------------------------------


@dataclass(frozen=True)
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Sink(ThreadingHTTPServer):
    """Records every POST; fails the first ``fail_first`` with ``fail_status``; can hang."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.hits: list[Hit] = []
        self.cond = threading.Condition()
        self.fail_first = 0
        self.fail_status = 500
        self.hang = False
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Hit]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.hits) >= count, timeout), self.hits
            return list(self.hits)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up on a hanging answer closed the socket: expected here."""


class _SinkHandler(BaseHTTPRequestHandler):
    server: Sink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        sink = self.server
        with sink.cond:
            sink.hits.append(Hit(self.path, dict(self.headers), body, time.monotonic()))
            number = len(sink.hits)
            sink.cond.notify_all()
        if sink.hang:
            sink.release.wait(10)
        failing = number <= sink.fail_first
        answer = b"boom" if failing else b"ok"
        self.send_response(sink.fail_status if failing else 200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextlib.contextmanager
def sink_server() -> Iterator[Sink]:
    sink = Sink()
    thread = threading.Thread(target=sink.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield sink
    finally:
        sink.release.set()
        sink.shutdown()
        thread.join()
        sink.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    with sink_server() as server:
        yield server


@pytest.fixture
def sink2() -> Iterator[Sink]:
    with sink_server() as server:
        yield server


# --- a real SMTP server -------------------------------------------------------------


class Mailbox:
    """aiosmtpd handler: keeps envelopes; answers queued rejections first."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.reject: deque[str] = deque()
        self.attempts = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.attempts += 1
        if self.reject:
            return self.reject.popleft()
        self.envelopes.append(envelope)
        return "250 OK"

    def message(self, index: int = 0) -> EmailMessage:
        content = self.envelopes[index].content
        assert isinstance(content, bytes)
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Smtp:
    mailbox: Mailbox
    port: int


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"ops", b"s3cret")
    return AuthResult(success=ok, handled=False)  # False: the server answers 535


@contextlib.contextmanager
def smtp_server(**smtp_options: Any) -> Iterator[Smtp]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **smtp_options)
    controller.start()
    try:
        yield Smtp(mailbox, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    with smtp_server() as server:
        yield server


def smtp_channel(port: int, **options: Any) -> SmtpChannel:
    return SmtpChannel(
        "127.0.0.1",
        port,
        sender="autofix@example.org",
        recipients=["ops@example.org", "oncall@example.org"],
        timeout=2.0,
        **options,
    )


class Sleeps(list[float]):
    """An injected sleep that records the backoff and really waits it."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


def settings_for(tmp_path: Path, **env: str) -> Settings:
    config = tmp_path / "autofix.toml"
    config.write_text("")
    environ = {"AUTOFIX_CONFIG": str(config), "AUTOFIX_NOTIFY_BACKOFF": "10ms", **env}
    return load_settings(environ=environ)


ESCALATION = escalation(42, "service.restart", "web-1", "budget", "fix budget spent: 3 of 3 in 1h")

# --- retries and backoff ------------------------------------------------------------


def test_500s_are_retried_with_exponential_backoff_then_delivered(sink: Sink) -> None:
    sink.fail_first = 2
    sleeps = Sleeps()
    with Notifier([SlackChannel(sink.url)], retries=3, backoff=BACKOFF, sleep=sleeps) as n:
        assert n.notify(ESCALATION) is True
        assert n.flush(5)
        assert n.stats == {"slack": ChannelStats(sent=1, failed=0, dropped=0)}
    hits = sink.wait_for(3)
    assert len(hits) == 3
    assert sleeps == [BACKOFF, 2 * BACKOFF]
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    assert gaps[0] >= BACKOFF
    assert gaps[1] >= 2 * BACKOFF
    assert hits[0].body == hits[2].body


def test_last_failure_is_logged_once_and_counted_never_raised(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.fail_first = 100
    sleeps = Sleeps()
    with Notifier([WebhookChannel(sink.url)], retries=2, backoff=BACKOFF, sleep=sleeps) as n:
        with caplog.at_level(logging.INFO, logger="autofix.notify"):
            assert n.deliver(ESCALATION) == {"webhook": "failed: HTTP 500 boom"}
        assert n.stats["webhook"] == ChannelStats(sent=0, failed=1, dropped=0)
    assert len(sink.hits) == 3
    assert sleeps == [BACKOFF, 2 * BACKOFF]
    records = [r for r in caplog.records if r.name == "autofix.notify"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert "\n" not in line
    assert "3 attempt(s)" in line
    assert "HTTP 500" in line
    assert sink.url not in line  # a webhook URL is a credential


def test_client_errors_are_not_retried(sink: Sink) -> None:
    sink.fail_first, sink.fail_status = 100, 404
    sleeps = Sleeps()
    with Notifier([SlackChannel(sink.url)], retries=3, backoff=BACKOFF, sleep=sleeps) as n:
        assert n.deliver(ESCALATION) == {"slack": "failed: HTTP 404 boom"}
    assert len(sink.hits) == 1
    assert sleeps == []


def test_unreachable_endpoint_fails_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    sleeps = Sleeps()
    with Notifier([WebhookChannel(url)], retries=1, backoff=BACKOFF, sleep=sleeps) as n:
        result = n.deliver(ESCALATION)
    assert result["webhook"].startswith("failed: ConnectError")
    assert sleeps == [BACKOFF]


class Broken:
    """A plugged-in channel with a bug: it must not kill the worker nor be retried."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def send(self, notification: Notification) -> None:
        self.calls += 1
        raise RuntimeError("bug in a channel")

    def close(self) -> None:
        """Nothing to close."""


def test_a_broken_channel_is_counted_not_retried_and_the_worker_survives(sink: Sink) -> None:
    broken = Broken()
    sleeps = Sleeps()
    with Notifier([broken, WebhookChannel(sink.url)], backoff=BACKOFF, sleep=sleeps) as n:
        assert n.notify(ESCALATION)
        assert n.notify(ESCALATION)
        assert n.flush(5)
        assert n.stats["broken"] == ChannelStats(sent=0, failed=2, dropped=0)
        assert n.stats["webhook"].sent == 2
    assert (broken.calls, sleeps) == (2, [])


# --- never blocking the caller --------------------------------------------------------


def test_hanging_endpoint_never_blocks_notify_nor_the_other_channels(
    sink: Sink, sink2: Sink
) -> None:
    sink.hang = True
    notifier = Notifier(
        [SlackChannel(sink.url, timeout=5.0), WebhookChannel(sink2.url)], backoff=BACKOFF
    )

    async def caller() -> tuple[list[float], float]:
        durations = []
        for _ in range(3):
            start = time.perf_counter()
            assert notifier.notify(ESCALATION) is True
            durations.append(time.perf_counter() - start)
        # The loop keeps ticking while the Slack worker waits on the hanging endpoint.
        worst = 0.0
        for _ in range(10):
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - start)
        return durations, worst

    durations, worst_tick = asyncio.run(caller())
    assert max(durations) < 0.05
    assert worst_tick < 0.5  # blocked, it would wait out the 5 s timeout; slack for busy CI
    sink.wait_for(1)  # Slack is stuck on the first one
    assert len(sink2.wait_for(3)) == 3  # the webhook got all three meanwhile
    assert notifier.stats["webhook"].sent == 3
    assert notifier.stats["slack"].sent == 0
    sink.release.set()
    assert notifier.close(timeout=5) is True
    assert notifier.stats["slack"] == ChannelStats(sent=3, failed=0, dropped=0)


def test_timeout_of_a_hanging_endpoint_is_a_failed_attempt(sink: Sink) -> None:
    sink.hang = True
    with Notifier([WebhookChannel(sink.url, timeout=0.2)], retries=0) as n:
        start = time.monotonic()
        assert n.deliver(ESCALATION) == {"webhook": "failed: timed out after 0.2 s"}
        assert time.monotonic() - start < 2


def test_full_queue_drops_the_newest_and_counts_it(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.hang = True
    notifier = Notifier([WebhookChannel(sink.url)], queue_size=2, backoff=BACKOFF)
    notes = [Notification("test", f"note {i}") for i in range(5)]
    assert notifier.notify(notes[0])
    sink.wait_for(1)  # in flight, out of the queue
    with caplog.at_level(logging.WARNING, logger="autofix.notify"):
        assert [notifier.notify(n) for n in notes[1:]] == [True, True, False, False]
    assert notifier.stats["webhook"].dropped == 2
    assert len(caplog.records) == 1  # one line per burst of drops
    assert "queue full (2)" in caplog.records[0].getMessage()
    sink.release.set()
    assert notifier.close(timeout=5)
    assert [h.json()["title"] for h in sink.wait_for(3)] == ["note 0", "note 1", "note 2"]
    assert notifier.stats["webhook"] == ChannelStats(sent=3, failed=0, dropped=2)


def test_close_times_out_on_a_hanging_endpoint_and_drops_the_rest(sink: Sink) -> None:
    sink.hang = True
    notifier = Notifier([WebhookChannel(sink.url, timeout=5.0)], retries=5, backoff=BACKOFF)
    for i in range(3):
        notifier.notify(Notification("test", f"note {i}"))
    sink.wait_for(1)
    start = time.monotonic()
    assert notifier.close(timeout=0.2) is False
    assert time.monotonic() - start < 1.0  # not the 5 s the hanging attempt may take
    assert notifier.notify(ESCALATION) is False  # closed
    sink.release.set()
    thread = next(t for t in threading.enumerate() if t.name == "autofix-notify-webhook")
    thread.join(5)
    # note 0 was in flight (sent once the sink answered); the two queued ones and the
    # one after close were dropped.
    assert notifier.stats["webhook"] == ChannelStats(sent=1, failed=0, dropped=3)


def test_no_channel_configured(tmp_path: Path) -> None:
    notifier = Notifier.from_settings(settings_for(tmp_path))
    assert notifier.channels == ()
    assert notifier.notify(ESCALATION) is False
    assert notifier.deliver(ESCALATION) == {}
    assert notifier.close() is True


# --- payloads -----------------------------------------------------------------------


def test_webhook_payload_shape(sink: Sink) -> None:
    sent_at = datetime.fromisoformat("2026-03-01T12:00:00+00:00")
    note = approval(
        7,
        "files.clean_temp",
        "tmp",
        datetime(2026, 3, 1, 13, 0),
        link="https://autofix.example/fixes/7",
        runbook="https://wiki.example/runbooks/tmp",
    )
    with Notifier([WebhookChannel(sink.url, clock=lambda: sent_at)]) as n:
        assert n.deliver(note) == {"webhook": "sent"}
    (hit,) = sink.hits
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["User-Agent"].startswith("autofix/")
    assert hit.json() == {
        "kind": "approval",
        "title": "Fix 7 waits for approval: files.clean_temp on tmp",
        "text": "Approve: autofix fix approve 7\nReject: autofix fix reject 7",
        "fields": {
            "fix": "7",
            "action": "files.clean_temp",
            "target": "tmp",
            "expires": "2026-03-01 13:00 UTC",
        },
        "link": "https://autofix.example/fixes/7",
        "runbook_url": "https://wiki.example/runbooks/tmp",
        "incident": None,
        "sent_at": "2026-03-01T12:00:00+00:00",
    }


def test_slack_blocks_escape_untrusted_text(sink: Sink) -> None:
    hostile = "web-1 <!channel> & <https://evil.example|click>"
    note = escalation(9, "service.restart", hostile, None, "exit <@U123> & more", link=None)
    with Notifier([SlackChannel(sink.url)]) as n:
        assert n.deliver(note) == {"slack": "sent"}
    body = sink.hits[0].json()
    header, section, fields = body["blocks"]
    assert header["type"] == "header"
    assert header["text"] == {"type": "plain_text", "text": note.title, "emoji": False}
    assert section["text"]["text"] == (
        "autofix stopped and needs a human: exit &lt;@U123&gt; &amp; more"
    )
    assert fields["fields"][2]["text"] == (
        "*target*\nweb-1 &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
    )
    assert body["text"].startswith("Fix 9 escalated: service.restart on web-1 &lt;!channel&gt;")
    # No raw control sequence anywhere a mrkdwn parser would see it.
    mrkdwn = [body["text"], section["text"]["text"], *(f["text"] for f in fields["fields"])]
    assert not any("<" in text or ">" in text for text in mrkdwn)


def test_slack_link_and_more_than_ten_fields(sink: Sink) -> None:
    note = report(
        "reports/2026-03-01/report.html",
        {f"kpi_{i}": i / 3 for i in range(12)} | {"breakdown": {"x": 1}, "missing": None},
        link="https://autofix.example/r?a=1&b=<2>|x",
    )
    with Notifier([SlackChannel(sink.url)]) as n:
        assert n.deliver(note) == {"slack": "sent"}
    blocks = sink.hits[0].json()["blocks"]
    assert [len(b.get("fields", [])) for b in blocks] == [0, 0, 10, 3, 0]
    assert blocks[2]["fields"][1]["text"] == "*kpi_1*\n0.3333"
    assert blocks[3]["fields"][2]["text"] == "*missing*\nn/a"
    assert blocks[4]["elements"][0]["text"] == (
        "<https://autofix.example/r?a=1&amp;b=%3C2%3E%7Cx|Open in autofix>"
    )


# --- e-mail -------------------------------------------------------------------------


def test_smtp_delivers_the_escalation(smtp: Smtp) -> None:
    with Notifier([smtp_channel(smtp.port)]) as n:
        assert n.deliver(ESCALATION) == {"smtp": "sent"}
    (envelope,) = smtp.mailbox.envelopes
    assert envelope.mail_from == "autofix@example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    msg = smtp.mailbox.message()
    assert msg["Subject"] == "[autofix] Fix 42 escalated: service.restart on web-1"
    assert msg["From"] == "autofix@example.org"
    assert msg["To"] == "ops@example.org, oncall@example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_content().replace("\r\n", "\n")
    assert "fix: 42\n" in body
    assert "fix budget spent: 3 of 3 in 1h" in body
    assert "gate: budget" in body


def test_header_injection_in_the_title_is_neutralised(smtp: Smtp) -> None:
    note = Notification(
        "escalation",
        "disk full\r\nBcc: victim@evil.example\r\n\r\nforged body",
        "real body",
        {"target": "db-1\nBcc: x@evil.example"},
    )
    with Notifier([smtp_channel(smtp.port)]) as n:
        assert n.deliver(note) == {"smtp": "sent"}
    (envelope,) = smtp.mailbox.envelopes
    assert envelope.rcpt_tos == ["ops@example.org", "oncall@example.org"]
    msg = smtp.mailbox.message()
    assert msg["Bcc"] is None
    assert msg["Subject"] == "[autofix] disk full Bcc: victim@evil.example forged body"
    body = msg.get_content().replace("\r\n", "\n")
    assert body.startswith("real body\n\ntarget: db-1 Bcc: x@evil.example\n")


def test_smtp_temporary_errors_retried_permanent_not(smtp: Smtp) -> None:
    smtp.mailbox.reject.extend(["451 4.3.0 try again later", "451 4.3.0 still busy"])
    sleeps = Sleeps()
    with Notifier([smtp_channel(smtp.port)], retries=3, backoff=BACKOFF, sleep=sleeps) as n:
        assert n.deliver(ESCALATION) == {"smtp": "sent"}
        assert (smtp.mailbox.attempts, sleeps) == (3, [BACKOFF, 2 * BACKOFF])

        smtp.mailbox.reject.append("550 5.7.1 rejected")
        assert n.deliver(ESCALATION) == {"smtp": "failed: SMTP 550 5.7.1 rejected"}
        assert smtp.mailbox.attempts == 4
        assert n.stats["smtp"] == ChannelStats(sent=1, failed=1, dropped=0)


def test_smtp_login() -> None:
    wrong: set[int] = set()  # SMTP sessions that sent the wrong password

    def authenticate(*args: Any) -> AuthResult:
        session, auth_data = args[1], args[-1]
        if isinstance(auth_data, LoginPassword) and auth_data.password == b"wrong":
            wrong.add(id(session))  # smtplib tries PLAIN, then LOGIN, in one session
        return _authenticate(*args)

    with smtp_server(authenticator=authenticate, auth_require_tls=False) as server:
        good = smtp_channel(server.port, user="ops", password="s3cret")
        bad = smtp_channel(server.port, user="ops", password="wrong", name="smtp-bad")
        with Notifier([good, bad], retries=2, backoff=BACKOFF, sleep=Sleeps()) as n:
            result = n.deliver(ESCALATION)
        # A wrong password is tried once, never retried (a slow machine may retry the
        # good channel's connection: that is not what is asserted here).
        assert len(wrong) == 1
        assert result["smtp"] == "sent"
        assert result["smtp-bad"].startswith("failed: SMTP 535")
        assert len(server.mailbox.envelopes) == 1


# --- settings -----------------------------------------------------------------------


def test_from_settings_builds_every_channel(tmp_path: Path, sink: Sink, smtp: Smtp) -> None:
    current = settings_for(
        tmp_path,
        AUTOFIX_NOTIFY_SLACK_URL=sink.url,
        AUTOFIX_NOTIFY_WEBHOOK_URL=sink.url,
        AUTOFIX_NOTIFY_SMTP_HOST="127.0.0.1",
        AUTOFIX_NOTIFY_SMTP_PORT=str(smtp.port),
        AUTOFIX_NOTIFY_SMTP_TO="a@example.org, b@example.org,",
    )
    with Notifier.from_settings(current) as n:
        assert n.channels == ("slack", "webhook", "smtp")
        assert all(n.notify(ESCALATION) for _ in range(2))
        assert n.flush(5)
        assert {k: v.sent for k, v in n.stats.items()} == {"slack": 2, "webhook": 2, "smtp": 2}
    assert smtp.mailbox.envelopes[0].rcpt_tos == ["a@example.org", "b@example.org"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTOFIX_NOTIFY_SLACK_URL": "hooks.slack.com/x"}, "AUTOFIX_NOTIFY_SLACK_URL: must be"),
        ({"AUTOFIX_NOTIFY_SMTP_HOST": "mail"}, "AUTOFIX_NOTIFY_SMTP_TO is empty"),
        (
            {"AUTOFIX_NOTIFY_SMTP_HOST": "mail", "AUTOFIX_NOTIFY_SMTP_TO": "ops"},
            "address 'ops' is not valid",
        ),
        (
            {
                "AUTOFIX_NOTIFY_SMTP_HOST": "mail",
                "AUTOFIX_NOTIFY_SMTP_TO": "ops@x",
                "AUTOFIX_NOTIFY_SMTP_USER": "ops",
            },
            "AUTOFIX_NOTIFY_SMTP_PASSWORD is not",
        ),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Notifier.from_settings(settings_for(tmp_path, **env))


def test_helpers_and_module_examples() -> None:
    note = approval(3, "redis.flushdb", "cache", datetime(2026, 1, 1) + timedelta(hours=1))
    assert note.fields["expires"] == "2026-01-01 01:00 UTC"
    assert (
        escalation(None, "http.call", "lb", None, "x").title == "A fix escalated: http.call on lb"
    )
    with pytest.raises(ValueError, match="http"):
        Notification("test", "t", link="javascript:alert(1)")
    for module in (
        autofix.notify,
        autofix.notify.channels,
        autofix.notify.messages,
        autofix.notify.notifier,
        autofix.notify.oncall,
    ):
        assert doctest.testmod(module).failed == 0, module.__name__


# --- the CLI ------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_HOSTNAME": "test-host",
        "AUTOFIX_NOTIFY_BACKOFF": "10ms",
        "AUTOFIX_NOTIFY_TIMEOUT": "2s",
        "COLUMNS": "200",
    }


def test_cli_notify_test_sends_to_every_channel(
    cli_env: dict[str, str], sink: Sink, smtp: Smtp
) -> None:
    cli_env |= {
        "AUTOFIX_NOTIFY_WEBHOOK_URL": sink.url,
        "AUTOFIX_NOTIFY_SMTP_HOST": "127.0.0.1",
        "AUTOFIX_NOTIFY_SMTP_PORT": str(smtp.port),
        "AUTOFIX_NOTIFY_SMTP_TO": "ops@example.org",
    }
    proc = run_autofix(["notify", "test", "--json"], cli_env, 0)
    assert json.loads(proc.stdout) == {"webhook": "sent", "smtp": "sent"}
    assert sink.hits[0].json()["kind"] == "test"
    assert "test-host" in smtp.mailbox.message().get_content()

    human = run_autofix(["notify", "test"], cli_env, 0)
    assert human.stdout.splitlines() == ["webhook: sent", "smtp: sent"]


def test_cli_notify_test_exit_1_when_a_channel_fails(
    cli_env: dict[str, str], sink: Sink, sink2: Sink
) -> None:
    sink.fail_first = 100
    cli_env |= {
        "AUTOFIX_NOTIFY_SLACK_URL": sink.url,
        "AUTOFIX_NOTIFY_WEBHOOK_URL": sink2.url,
        "AUTOFIX_NOTIFY_RETRIES": "1",
    }
    proc = run_autofix(["notify", "test", "--json"], cli_env, 1)
    assert json.loads(proc.stdout) == {"slack": "failed: HTTP 500 boom", "webhook": "sent"}
    assert len(sink.hits) == 2  # one retry
    assert "slack: test notification 'autofix test notification' failed" in proc.stderr


def test_cli_notify_test_exit_2_without_a_channel(cli_env: dict[str, str]) -> None:
    proc = run_autofix(["notify", "test"], cli_env, 2)
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        "autofix: error: no notification channel configured: set AUTOFIX_NOTIFY_SLACK_URL, "
        "AUTOFIX_NOTIFY_WEBHOOK_URL or AUTOFIX_NOTIFY_SMTP_HOST"
    )


# --- PagerDuty (Events API v2) against a local recording server ----------------------


class PagerDuty(ThreadingHTTPServer):
    """Answers POST /v2/enqueue as PagerDuty does (202 + dedup_key) over TLS (the client
    speaks https only; ``trust`` is a client context trusting its throwaway CA)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PagerDutyHandler)
        ca = trustme.CA()
        server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(server_side)
        self.socket = server_side.wrap_socket(self.socket, server_side=True)
        self.trust = ssl.create_default_context()
        ca.configure_trust(self.trust)
        self.events: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fail: deque[int] = deque()  # statuses to answer first
        self.cond = threading.Condition()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.events) >= count, timeout), self.events
            return list(self.events)


class _PagerDutyHandler(BaseHTTPRequestHandler):
    server: PagerDuty

    def do_POST(self) -> None:
        event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        pd = self.server
        with pd.cond:
            pd.paths.append(self.path)
            status = pd.fail.popleft() if pd.fail else 202
            if status == 202:
                pd.events.append(event)
            pd.cond.notify_all()
        if status == 202:
            key = event.get("dedup_key") or "generated-key"
            answer = {"status": "success", "message": "Event processed", "dedup_key": key}
        else:
            answer = {"status": "invalid event", "message": "Event object is invalid"}
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def pagerduty() -> Iterator[PagerDuty]:
    server = PagerDuty()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


ROUTING_KEY = "R0123456789abcdef0123456789abcdef"
RUNBOOK = "https://wiki.example/runbooks/disk"


def test_pagerduty_trigger_then_resolve_with_one_dedup_key(
    tmp_path: Path, pagerduty: PagerDuty, sink: Sink
) -> None:
    settings = settings_for(
        tmp_path,
        AUTOFIX_HOSTNAME="web-1",
        AUTOFIX_NOTIFY_PAGERDUTY_ROUTING_KEY=ROUTING_KEY,
        AUTOFIX_NOTIFY_PAGERDUTY_URL=pagerduty.url,
        AUTOFIX_NOTIFY_WEBHOOK_URL=sink.url,
    )
    trigger = escalation(
        42, "files.rotate_logs", "logs", "postcheck", "verify failed: still 97 % full",
        rule="disk-full", runbook=RUNBOOK, incident="autofix/web-1/logs",
    )  # fmt: skip
    with Notifier.from_settings(settings, verify=pagerduty.trust) as notifier:
        assert notifier.channels == ("webhook", "pagerduty")
        assert "R0123" not in repr(notifier._lanes[1].channel)  # the key is a secret
        assert notifier.notify(approval(7, "files.clean_temp", "tmp", None))  # webhook only
        assert notifier.notify(trigger)
        assert notifier.notify(autofix.notify.messages.resolved("logs", "autofix/web-1/logs", "ok"))
        assert notifier.flush(10)
        assert notifier.stats["pagerduty"] == ChannelStats(sent=2)
    first, second = pagerduty.wait_for(2)
    assert pagerduty.paths == ["/v2/enqueue", "/v2/enqueue"]
    assert first["routing_key"] == second["routing_key"] == ROUTING_KEY
    assert (first["event_action"], second["event_action"]) == ("trigger", "resolve")
    assert first["dedup_key"] == second["dedup_key"] == "autofix/web-1/logs"
    payload = first["payload"]
    assert payload["summary"] == "Fix 42 escalated: files.rotate_logs on logs"
    assert (payload["source"], payload["severity"]) == ("web-1", "critical")
    assert (payload["component"], payload["group"], payload["class"]) == (
        "logs", "disk-full", "files.rotate_logs",
    )  # fmt: skip
    details = payload["custom_details"]
    assert (details["fix"], details["runbook_url"], details["gate"]) == ("42", RUNBOOK, "postcheck")
    assert details["summary"].endswith("still 97 % full")
    assert first["links"] == [{"href": RUNBOOK, "text": "Runbook"}]
    assert len(sink.wait_for(3)) == 3  # the approval, the escalation and the resolution


def test_pagerduty_errors_transient_retried_permanent_not(
    tmp_path: Path, pagerduty: PagerDuty
) -> None:
    channel = autofix.notify.oncall.PagerDutyChannel(
        ROUTING_KEY, url=pagerduty.url, timeout=2, verify=pagerduty.trust
    )
    note = escalation(1, "a.b", "t", None, "r", incident="autofix/h/t")
    pagerduty.fail.extend([500, 503])
    with Notifier([channel], retries=3, backoff=BACKOFF) as notifier:
        assert notifier.deliver(note) == {"pagerduty": "sent"}
        pagerduty.fail.append(400)
        result = notifier.deliver(note)["pagerduty"]
    assert result.startswith("failed: PagerDuty")
    assert "400" in result
    assert len(pagerduty.paths) == 4  # 500, 503, 202, then one 400 (not retried)
    closed = autofix.notify.oncall.PagerDutyChannel(
        ROUTING_KEY, url=f"https://127.0.0.1:{free_port()}", verify=pagerduty.trust
    )
    with Notifier([closed], retries=1, backoff=BACKOFF) as notifier:
        assert notifier.deliver(note)["pagerduty"].startswith("failed: PagerDuty")
    with pytest.raises(autofix.notify.DeliveryError, match="incident key"):
        channel.send(escalation(1, "a.b", "t", None, "no key"))


def test_cli_notify_test_skips_incident_tools(
    cli_env: dict[str, str], pagerduty: PagerDuty, sink: Sink
) -> None:
    cli_env |= {
        "AUTOFIX_NOTIFY_WEBHOOK_URL": sink.url,
        "AUTOFIX_NOTIFY_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "AUTOFIX_NOTIFY_PAGERDUTY_URL": pagerduty.url,
    }
    proc = run_autofix(["notify", "test", "--json"], cli_env, 0)
    results = json.loads(proc.stdout)
    assert results["webhook"] == "sent"
    assert results["pagerduty"] == "skipped: takes only escalation, resolved"  # nobody paged
    assert pagerduty.events == []
    assert ROUTING_KEY not in proc.stdout + proc.stderr


# --- incidents from a real store: escalate, then resolve --------------------------------


def _healing_service(
    tmp_path: Path, verify: ssl.SSLContext | bool = True, **env: str
) -> tuple[Any, Path]:
    from autofix.jobs import Service
    from autofix.pipeline import Pipeline
    from autofix.store import MetricStore

    flag = tmp_path / "healthy"
    pipeline = Pipeline.model_validate(
        {
            "targets": [
                {
                    "name": "app",
                    "kind": "command",
                    "argv": ["true"],  # the recovery runs but does not make it healthy
                    "check_argv": ["test", "-e", str(flag)],
                    "recovery": {
                        "after": 1,
                        "mode": "auto",
                        "actions": [{"action": "command.run"}],
                    },
                }
            ]
        }
    )
    settings = settings_for(
        tmp_path,
        AUTOFIX_HOSTNAME="web-1",
        AUTOFIX_DB_PATH=str(tmp_path / "a.duckdb"),
        AUTOFIX_QUARANTINE_DIR=str(tmp_path / "q"),
        AUTOFIX_FIX_VERIFY_WAIT="0s",
        AUTOFIX_NOTIFY_RUNBOOK_URL=RUNBOOK,
        **env,
    )
    store = MetricStore(settings.db_path)
    notifier = Notifier.from_settings(settings, verify=verify)
    return Service(settings, pipeline, store, notifier=notifier), flag


def test_service_escalates_to_pagerduty_and_resolves_when_the_target_recovers(
    tmp_path: Path, pagerduty: PagerDuty
) -> None:
    service, flag = _healing_service(
        tmp_path,
        pagerduty.trust,
        AUTOFIX_NOTIFY_PAGERDUTY_ROUTING_KEY=ROUTING_KEY,
        AUTOFIX_NOTIFY_PAGERDUTY_URL=pagerduty.url,
    )
    try:
        run = service.run_job("health")  # unhealthy → command.run → verify fails → escalate
        assert run.ok, run.error
        # Two escalations (the failed verify, then "no candidate verified"): one incident.
        triggers = pagerduty.wait_for(2)
        assert {(t["event_action"], t["dedup_key"]) for t in triggers} == {
            ("trigger", "autofix/web-1/app")
        }
        fix_id = triggers[0]["payload"]["custom_details"]["fix"]
        assert service.executor.get(int(fix_id)).state == "failed"
        assert triggers[0]["payload"]["custom_details"]["gate"] == "postcheck"
        assert triggers[0]["links"] == [{"href": RUNBOOK, "text": "Runbook"}]
        service.run_job("health")  # still unhealthy: acted on already, nothing new
        flag.touch()
        service.run_job("health")  # healthy again: the incident is over
        resolve = pagerduty.wait_for(3)[-1]
        assert resolve == {
            "event_action": "resolve",
            "dedup_key": "autofix/web-1/app",
            "routing_key": ROUTING_KEY,
        }
        service.run_job("health")
        time.sleep(0.2)
        assert len(pagerduty.events) == 3  # resolved once
    finally:
        service.close()
        service.store.close()


def test_a_new_process_resolves_the_incident_an_earlier_one_opened(
    tmp_path: Path, pagerduty: PagerDuty
) -> None:
    env = {
        "AUTOFIX_NOTIFY_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "AUTOFIX_NOTIFY_PAGERDUTY_URL": pagerduty.url,
    }
    first, flag = _healing_service(tmp_path, pagerduty.trust, **env)
    first.run_job("health")
    first.close()
    first.store.close()
    assert [e["event_action"] for e in pagerduty.wait_for(2)] == ["trigger", "trigger"]
    flag.touch()
    second, _ = _healing_service(tmp_path, pagerduty.trust, **env)  # like `autofix run` from cron
    try:
        second.run_job("health")
        resolve = pagerduty.wait_for(3)[-1]
        assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", "autofix/web-1/app")
    finally:
        second.close()
        second.store.close()


def test_rule_runbook_reaches_approval_and_escalation(tmp_path: Path, sink: Sink) -> None:
    from autofix.jobs import Service
    from autofix.pipeline import Pipeline
    from autofix.store import MetricStore

    spool = tmp_path / "spool"
    spool.mkdir()
    old = spool / "old.tmp"
    old.write_bytes(b"x" * 800)
    os.utime(old, (1_000_000_000, 1_000_000_000))
    when = {"type": "threshold", "metric": "autofix_dir_size_bytes", "match": {"target": "spool"},
            "of_capacity": True, "above": 0.5}  # fmt: skip
    pipeline = Pipeline.model_validate(
        {
            "targets": [{"name": "spool", "kind": "logdir", "path": str(spool), "capacity": 1000}],
            "rules": [
                {"name": "spool-full", "when": when, "mode": "approve", "runbook_url": RUNBOOK,
                 "actions": [{"action": "files.clean_temp", "params": {"older_than": "1h"}}]},
                {"name": "spool-human", "when": when, "runbook_url": RUNBOOK + "#human"},
            ],
        }
    )  # fmt: skip
    settings = settings_for(
        tmp_path,
        AUTOFIX_DB_PATH=str(tmp_path / "a.duckdb"),
        AUTOFIX_QUARANTINE_DIR=str(tmp_path / "q"),
        AUTOFIX_FIX_VERIFY_WAIT="0s",
        AUTOFIX_NOTIFY_WEBHOOK_URL=sink.url,
        AUTOFIX_HOSTNAME="web-1",
    )
    with MetricStore(settings.db_path) as store:
        service = Service(settings, pipeline, store, notifier=Notifier.from_settings(settings))
        try:
            service.run_job("collect")
            assert service.run_job("remediate").ok
            notes = {hit.json()["kind"]: hit.json() for hit in sink.wait_for(2)}
            assert notes["approval"]["runbook_url"] == RUNBOOK
            assert notes["escalation"]["runbook_url"] == RUNBOOK + "#human"
            assert notes["escalation"]["incident"] == "autofix/web-1/spool"
            pending = service.executor.audit.list(state="pending_approval")[0]
            assert service.executor.approve(pending.id, "ann").state == "succeeded"
            service.run_job("snapshot")  # after any job the notifications follow
            done = sink.wait_for(3)[-1].json()
            assert (done["kind"], done["incident"]) == ("resolved", "autofix/web-1/spool")
            assert f"fix {pending.id} (files.clean_temp) on spool verified" in done["text"]
        finally:
            service.close()


# --- Alertmanager: Debian's real one ------------------------------------------------------


def _alerts(url: str, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v2/alerts", params=params, timeout=5)
    response.raise_for_status()
    return [a for a in response.json() if a["labels"].get("alertname") == "AutofixEscalation"]


def test_alertmanager_routes_silences_and_resolves_escalations(tmp_path: Path) -> None:
    from tests.promstack import alertmanager, stack_or_skip, webhook_receiver

    with webhook_receiver() as hook:
        for am in stack_or_skip(lambda: alertmanager(hook.url)):
            settings = settings_for(
                tmp_path, AUTOFIX_HOSTNAME="web-1", AUTOFIX_NOTIFY_ALERTMANAGER_URL=am.url
            )
            trigger = escalation(
                42, "files.rotate_logs", "logs", "postcheck", "verify failed",
                rule="disk-full", runbook=RUNBOOK, incident="autofix/web-1/logs",
            )  # fmt: skip
            with Notifier.from_settings(settings) as notifier:
                assert notifier.channels == ("alertmanager",)
                assert notifier.deliver(approval(7, "a.b", "logs", None)) == {
                    "alertmanager": "skipped: takes only escalation, resolved"
                }
                assert notifier.deliver(trigger) == {"alertmanager": "sent"}
                (alert,) = _alerts(am.url)
                assert alert["status"]["state"] == "active"
                assert alert["labels"] == {
                    "alertname": "AutofixEscalation",
                    "autofix_incident": "autofix/web-1/logs",
                    "instance": "web-1",
                    "target": "logs",
                    "severity": "critical",
                    "service": "autofix",
                }
                notes = alert["annotations"]
                assert (notes["runbook_url"], notes["fix_id"], notes["rule"]) == (
                    RUNBOOK, "42", "disk-full",
                )  # fmt: skip
                # Alertmanager routed it to its receiver (the webhook), grouped by alertname.
                firing = hook.wait(lambda p: p["status"] == "firing")
                assert firing["alerts"][0]["labels"]["target"] == "logs"

                # A silence applies: a silenced escalation is kept but sent to nobody.
                silence = {
                    "matchers": [
                        {"name": "target", "value": "cache", "isRegex": False, "isEqual": True}
                    ],
                    "startsAt": "2020-01-01T00:00:00Z",
                    "endsAt": "2099-01-01T00:00:00Z",
                    "createdBy": "test",
                    "comment": "maintenance",
                }
                created = httpx.post(f"{am.url}/api/v2/silences", json=silence, timeout=5)
                silence_id = created.json()["silenceID"]
                quiet = escalation(
                    43, "redis.flushdb", "cache", None, "x", incident="autofix/web-1/cache"
                )
                assert notifier.deliver(quiet) == {"alertmanager": "sent"}
                states = {a["labels"]["target"]: a["status"] for a in _alerts(am.url)}
                assert states["cache"]["state"] == "suppressed"
                assert states["cache"]["silencedBy"] == [silence_id]

                end = autofix.notify.messages.resolved("logs", "autofix/web-1/logs", "fixed")
                assert notifier.deliver(end) == {"alertmanager": "sent"}
                active = _alerts(am.url, active="true", silenced="false")
                assert [a["labels"]["target"] for a in active] == []
                resolved_post = hook.wait(lambda p: p["status"] == "resolved")
                assert resolved_post["alerts"][0]["labels"]["autofix_incident"] == (
                    "autofix/web-1/logs"
                )
            assert all(p["alerts"][0]["labels"]["target"] == "logs" for p in hook.posts)
