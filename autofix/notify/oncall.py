"""Incident tools: PagerDuty (Events API v2) and Alertmanager (``/api/v2/alerts``).

Both take only escalations and their resolution (``kinds``): an escalation triggers, a
``resolved`` note with the same ``incident`` key resolves. PagerDuty gets the incident key
as ``dedup_key`` (repeated escalations of one incident join one alert); Alertmanager gets
an alert whose labels are derived from the key, so its routing, grouping, inhibition and
silences apply, and the resolution is the same alert with ``endsAt`` now.

>>> from autofix.notify.messages import escalation
>>> ch = AlertmanagerChannel("http://127.0.0.1:9093", host="web-1")
>>> n = escalation(7, "files.clean_temp", "logs", None, "verify failed", incident="k")
>>> sorted(ch.alert(n, datetime(2026, 3, 1, tzinfo=UTC))["labels"].items())[:3]
[('alertname', 'AutofixEscalation'), ('autofix_incident', 'k'), ('instance', 'web-1')]
"""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any

from autofix import __version__
from autofix.errors import ConfigError
from autofix.notify.channels import DeliveryError, _HttpChannel, one_line
from autofix.notify.messages import Notification, _utc_now

log = logging.getLogger("autofix.notify")  # one logger for the whole package, as before

#: What incident tools take: a page for an escalation, and its end.
INCIDENT_KINDS = frozenset({"escalation", "resolved"})
#: An escalation alert autofix never resolves ends on its own after this long.
ALERT_HOLD = timedelta(hours=24)
ALERTNAME = "AutofixEscalation"
_TRANSIENT_HTTP = {408, 425, 429}


def _details(n: Notification) -> dict[str, str]:
    details = {"summary": n.text, **n.fields}
    if n.runbook:
        details["runbook_url"] = n.runbook
    if n.incident:
        details["incident"] = n.incident
    return details


def _need_incident(n: Notification, channel: str) -> str:
    if not n.incident:
        raise DeliveryError(f"{channel}: a {n.kind} notification without an incident key", False)
    return n.incident


class PagerDutyChannel:
    """PagerDuty Events API v2 through PagerDuty's own client (``pagerduty``).

    ``url`` is the Events API base (``https://events.pagerduty.com``, or the EU one);
    retries are the notifier's (backoff, transient errors only), not the client's.
    ``verify`` is the TLS trust (tests pass a context trusting their own CA).
    """

    kinds = INCIDENT_KINDS

    def __init__(
        self,
        routing_key: str,
        *,
        url: str = "https://events.pagerduty.com",
        source: str = "autofix",
        timeout: float = 5.0,
        name: str = "pagerduty",
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        from pagerduty import EventsApiV2Client, UrlError

        self._name = name
        self._source = source
        try:
            self._client = EventsApiV2Client(routing_key, base_url=url, verify=verify)
        except UrlError as exc:  # it speaks https only
            raise ConfigError(f"AUTOFIX_NOTIFY_PAGERDUTY_URL: {exc}") from None
        self._client.timeout = timeout  # type: ignore[assignment]  # seconds, as httpx
        self._client.retry = {429: 1}  # the client's own limit; the notifier backs off
        self._client.max_network_attempts = 0
        self._client.headers["User-Agent"] = f"autofix/{__version__}"

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"PagerDutyChannel(name={self._name!r})"  # never the routing key

    def event(self, n: Notification) -> dict[str, Any]:
        """The Events API v2 body (without the routing key) this channel sends for ``n``."""
        key = _need_incident(n, self._name)
        if n.kind == "resolved":
            return {"event_action": "resolve", "dedup_key": key}
        links = []
        if n.runbook:
            links.append({"href": n.runbook, "text": "Runbook"})
        if n.link:
            links.append({"href": n.link, "text": "Open in autofix"})
        payload: dict[str, Any] = {
            "summary": one_line(n.title, 1024),
            "source": self._source,
            "severity": "critical",
            "component": n.fields.get("target", ""),
            "group": n.fields.get("rule", ""),
            "class": n.fields.get("action", ""),
            "custom_details": _details(n),
        }
        event: dict[str, Any] = {
            "event_action": "trigger",
            "dedup_key": key,
            "payload": {k: v for k, v in payload.items() if v != ""},
            "client": "autofix",
        }
        if links:
            event["links"] = links
        return event

    def send(self, notification: Notification) -> None:
        from pagerduty import Error, HttpError, ServerHttpError

        event = self.event(notification)
        action = event.pop("event_action")
        try:
            self._client.send_event(action, **event)
        except ServerHttpError as exc:
            raise DeliveryError(f"PagerDuty {one_line(str(exc), 200)}", transient=True) from exc
        except HttpError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            raise DeliveryError(
                f"PagerDuty {one_line(str(exc), 200)}", transient=status in _TRANSIENT_HTTP
            ) from exc
        except Error as exc:  # the network: refused, reset, timed out
            raise DeliveryError(f"PagerDuty {one_line(str(exc), 200)}", transient=True) from exc

    def close(self) -> None:
        self._client.close()


class AlertmanagerChannel(_HttpChannel):
    """Posts escalations as alerts to Alertmanager's ``/api/v2/alerts``.

    Labels (the alert's identity): ``alertname=AutofixEscalation``, ``autofix_incident``,
    ``instance`` (this host), ``target``, ``severity=critical``, ``service=autofix``.
    Annotations: ``summary``, ``description``, ``runbook_url``, ``fix_id``, ``rule``,
    ``action``, ``gate``. A firing alert holds for ``ALERT_HOLD`` unless resolved first.
    """

    kinds = INCIDENT_KINDS

    def __init__(
        self,
        url: str,
        *,
        host: str,
        name: str = "alertmanager",
        timeout: float = 5.0,
        transport: Any | None = None,
        clock: Any = _utc_now,
    ) -> None:
        super().__init__(
            url.rstrip("/") + "/api/v2/alerts", name=name, timeout=timeout, transport=transport
        )
        self._host = host
        self._clock = clock

    def alert(self, n: Notification, now: datetime) -> dict[str, Any]:
        """One alert of the API's list: firing for an escalation, ended for ``resolved``."""
        key = _need_incident(n, self.name)
        labels = {
            "alertname": ALERTNAME,
            "autofix_incident": key,
            "instance": self._host,
            "target": n.fields.get("target", "-"),
            "severity": "critical",
            "service": "autofix",
        }
        stamp = now.astimezone(UTC)
        if n.kind == "resolved":
            return {"labels": labels, "endsAt": _rfc3339(stamp)}
        annotations = {
            "summary": one_line(n.title),
            "description": n.text,
            "fix_id": n.fields.get("fix", "-"),
            **{k: n.fields[k] for k in ("rule", "action", "gate") if k in n.fields},
        }
        if n.runbook:
            annotations["runbook_url"] = n.runbook
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": _rfc3339(stamp),
            "endsAt": _rfc3339(stamp + ALERT_HOLD),
        }
        if n.link:
            alert["generatorURL"] = n.link
        return alert

    def payload(self, n: Notification) -> Any:
        return [self.alert(n, self._clock())]


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["ALERT_HOLD", "INCIDENT_KINDS", "AlertmanagerChannel", "PagerDutyChannel"]
