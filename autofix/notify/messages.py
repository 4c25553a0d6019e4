"""What to tell a human: ``Notification`` and the builders for escalations, their
resolution, approvals, the daily report and the self-test.

An escalation and its ``resolved`` note share an ``incident`` key (one per host and
target, see ``autofix.notify.incidents``): PagerDuty's ``dedup_key`` and the identity of
the Alertmanager alert. ``runbook`` is the rule's ``runbook_url`` (or the default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Literal

Kind = Literal["escalation", "resolved", "approval", "report", "test"]


@dataclass(frozen=True)
class Notification:
    """What to tell a human; plain text (channels escape it), fields in display order."""

    kind: Kind
    title: str
    text: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    link: str | None = None
    runbook: str | None = None
    incident: str | None = None

    def __post_init__(self) -> None:
        # A read-only copy: the notification crosses to a worker thread after notify().
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        for name in ("link", "runbook"):
            url = getattr(self, name)
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} must be an http(s) URL, not {url[:40]!r}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- notifications from plain values -------------------------------------------------


def escalation(
    fix_id: int | None,
    action: str,
    target: str,
    gate: str | None,
    reason: str,
    *,
    link: str | None = None,
    rule: str | None = None,
    runbook: str | None = None,
    incident: str | None = None,
) -> Notification:
    """A fix that stopped and needs a human (refused by a gate, failed, rolled back)."""
    subject = f"Fix {fix_id}" if fix_id is not None else "A fix"
    fields = {"fix": str(fix_id) if fix_id is not None else "-", "action": action, "target": target}
    if gate:
        fields["gate"] = gate
    if rule:
        fields["rule"] = rule
    return Notification(
        kind="escalation",
        title=f"{subject} escalated: {action} on {target}",
        text=f"autofix stopped and needs a human: {reason}",
        fields=fields,
        link=link,
        runbook=runbook,
        incident=incident,
    )


def resolved(
    target: str,
    incident: str,
    reason: str,
    *,
    fix_id: int | None = None,
    runbook: str | None = None,
) -> Notification:
    """The incident of an earlier escalation is over: a fix verified or the target recovered."""
    fields = {"target": target, "incident": incident}
    if fix_id is not None:
        fields["fix"] = str(fix_id)
    return Notification(
        kind="resolved",
        title=f"Resolved: {target}",
        text=reason,
        fields=fields,
        runbook=runbook,
        incident=incident,
    )


def approval(
    fix_id: int,
    action: str,
    target: str,
    expires_at: datetime | None,
    *,
    reason: str = "",
    link: str | None = None,
    runbook: str | None = None,
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
        runbook=runbook,
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
