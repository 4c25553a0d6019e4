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

``messages`` builds notifications, ``channels`` delivers one (and renders it), the
``notifier`` queues, retries and counts.

>>> n = escalation(42, "service.restart", "web-1", "budget", "fix budget spent")
>>> n.title
'Fix 42 escalated: service.restart on web-1'
>>> slack_payload(approval(7, "files.clean_temp", "<!channel>", None))["text"]
'Fix 7 waits for approval: files.clean_temp on &lt;!channel&gt;'
"""

from autofix.notify.channels import (
    Channel,
    DeliveryError,
    SlackChannel,
    SmtpChannel,
    WebhookChannel,
    mrkdwn_escape,
    one_line,
    slack_payload,
    webhook_payload,
)
from autofix.notify.messages import Kind, Notification, approval, escalation, report, self_test
from autofix.notify.notifier import ChannelStats, Notifier

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
