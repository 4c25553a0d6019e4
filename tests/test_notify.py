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

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

import autofix.notify
import autofix.notify.channels
import autofix.notify.messages
import autofix.notify.notifier
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
    with smtp_server(authenticator=_authenticate, auth_require_tls=False) as server:
        good = smtp_channel(server.port, user="ops", password="s3cret")
        bad = smtp_channel(server.port, user="ops", password="wrong", name="smtp-bad")
        sleeps = Sleeps()
        with Notifier([good, bad], retries=2, backoff=BACKOFF, sleep=sleeps) as n:
            result = n.deliver(ESCALATION)
        assert sleeps == []  # a wrong password is not retried
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
