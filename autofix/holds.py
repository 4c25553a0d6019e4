"""What holds the service back from acting on a decision: a silence, or the global pause.

The service asks here at the few places where it is about to act — a rule's decision
(``Service.remediate``), an Alertmanager alert (``Service.handle_alerts``), a recovery of
the self-healing loop (``SelfHealer._recover``) — and, when held, records the decision
instead of acting: mode ``silenced`` under a matching silence (``autofix.silences``),
mode ``shadow`` while paused (``autofix.pause``; scored after its horizon like any shadow
decision). A held decision is recorded once per hold, not on every run, and is not
remembered as decided: once the hold ends, the next run decides (and acts) again.

A silence holds everything about what it matches, escalations included; the pause holds
fixes only — a decision with nothing to try still escalates, since a human is exactly
who should hear about it while autofix stands still.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from autofix import pause as _pause
from autofix import silences as _silences
from autofix.policy import RuleDecision
from autofix.store import MetricStore

#: Modes that apply nothing anyway: the pause does not need to hold them.
PASSIVE_MODES = frozenset({"shadow", "off", "dry_run"})


@dataclass(frozen=True)
class Hold:
    """Why a decision is not acted on now."""

    kind: Literal["paused", "silenced"]
    #: Identity of the hold: a decision is recorded once per hold.
    key: str
    #: Mode the held decision is recorded with.
    mode: str
    reason: str


class Holds:
    """The pause and the silences in force, read from the store when asked."""

    def __init__(self, store: MetricStore, hostname: str) -> None:
        self.store = store
        self.hostname = hostname
        self._recorded: dict[str, str] = {}  # decision key → the hold it was recorded under
        self._lock = threading.Lock()  # decisions about different targets run side by side

    def paused(self, now: datetime) -> _pause.Pause | None:
        return _pause.current(self.store, now)

    def check(self, facts: Mapping[str, str], now: datetime, *, fixes: bool) -> Hold | None:
        """The hold on a decision with these facts: a matching silence first, then (when
        the decision would apply fixes) the pause; None when nothing holds it."""
        silence = _silences.silencing(_silences.in_force(self.store, now), facts, now)
        if silence is not None:
            return Hold(
                "silenced",
                f"silence:{silence.id}",
                "silenced",
                f"silenced by {silence.describe()} until {_pause.iso(silence.end)}, "
                f"{silence.creator}: {silence.comment}",
            )
        if fixes:
            paused = self.paused(now)
            if paused is not None:
                return Hold(
                    "paused", f"pause:{paused.since.isoformat()}", "shadow", paused.describe()
                )
        return None

    def facts(self, rd: RuleDecision) -> dict[str, str]:
        """What a silence's matchers see of a rule's (or an alert's) decision."""
        labels = rd.inputs.get("labels")
        host = rd.inputs.get("host")
        return _silences.decision_facts(
            rd.rule,
            rd.target or rd.about,
            str(host) if host else self.hostname,
            labels if isinstance(labels, Mapping) else None,
        )

    def hold(
        self, rd: RuleDecision, now: datetime, record: Callable[[RuleDecision, datetime], Any]
    ) -> Hold | None:
        """Whether ``rd`` is held now; the first time under a hold, ``record`` it as held."""
        fixes = bool(rd.decision.candidates) and rd.mode not in PASSIVE_MODES
        found = self.check(self.facts(rd), now, fixes=fixes)
        with self._lock:
            if found is None:
                self._recorded.pop(rd.key, None)
                return None
            fresh = self._recorded.get(rd.key) != found.key
            self._recorded[rd.key] = found.key
        if fresh:
            record(
                dataclasses.replace(
                    rd,
                    mode=found.mode,
                    reason=f"{rd.reason}; {found.reason}",
                    inputs={**dict(rd.inputs), found.kind: found.key},
                ),
                now,
            )
        return found


__all__ = ["PASSIVE_MODES", "Hold", "Holds"]
