"""Silences, as in Alertmanager: while one matches a decision, autofix does not act on it.

A silence is a set of matchers — ``name=value``, ``name!=value``, ``name=~regex``,
``name!~regex`` — on a decision's ``rule``, ``target`` and ``host`` and on its series'
or alert's labels, with a start, an end, a creator and a comment. Every matcher must hold
(a label the decision does not carry reads as ``""``, as in Alertmanager); a regex must
match the whole value. A silence whose matchers all match the empty string would silence
everything and is refused.

A silenced decision is recorded with mode ``silenced`` (once per silence, not on every
run) and neither executed nor escalated. The matching here is pure (``matches``,
``silencing``); the store functions below it keep the silences in the ``silences`` table.

>>> rule = parse_matchers(["target=web", "rule=~disk-.*"])
>>> matches(rule, {"target": "web", "rule": "disk-high", "host": "h1"})
True
>>> matches(rule, {"target": "db", "rule": "disk-high"})
False
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from autofix.errors import InputError
from autofix.pause import iso

Op = Literal["=", "!=", "=~", "!~"]
#: The decision facts a matcher may name besides labels.
FIELDS = ("rule", "target", "host")
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)
#: Limits on what an operator types (a regex is compiled once, on the service's threads).
VALUE_LIMIT = 256
MATCHERS_LIMIT = 16
COMMENT_LIMIT = 1000
State = Literal["pending", "active", "expired"]


@dataclass(frozen=True)
class Matcher:
    """One condition on one decision fact or label."""

    name: str
    op: Op
    value: str

    def test(self, actual: str) -> bool:
        if self.op in ("=", "!="):
            hit = actual == self.value
        else:
            hit = re.fullmatch(self.value, actual) is not None
        return hit if self.op in ("=", "=~") else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}


def parse_matcher(text: str) -> Matcher:
    """``name=value`` (or ``!=``, ``=~``, ``!~``) → Matcher; InputError names what is wrong.

    >>> parse_matcher('severity!~"info|debug"')
    Matcher(name='severity', op='!~', value='info|debug')
    """
    found = _MATCHER.match(text)
    if found is None:
        raise InputError(
            f"matcher {text!r}: use name=value, name!=value, name=~regex or name!~regex"
        )
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return make_matcher(name, op, value)


def make_matcher(name: str, op: str, value: str) -> Matcher:
    """A validated Matcher (the API's structured form goes through here too)."""
    if op not in ("=", "!=", "=~", "!~"):
        raise InputError(f"matcher {name}{op}{value}: unknown operator {op!r}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise InputError(f"matcher name {name!r}: use letters, digits and _ (a label name)")
    if len(value) > VALUE_LIMIT:
        raise InputError(f"matcher {name}{op}…: value longer than {VALUE_LIMIT} characters")
    if "\x00" in value:
        raise InputError(f"matcher {name}{op}…: NUL in the value")
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except (re.error, RecursionError, OverflowError) as exc:
            raise InputError(
                f"matcher {name}{op}{value}: invalid regular expression: {exc}"
            ) from None
    return Matcher(name, op, value)  # type: ignore[arg-type]


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    """Matchers of one silence: at least one, and not all matching the empty string."""
    matchers = tuple(parse_matcher(t) for t in texts)
    check_matchers(matchers)
    return matchers


def check_matchers(matchers: Sequence[Matcher]) -> None:
    if not matchers:
        raise InputError("a silence needs at least one matcher, e.g. target=web")
    if len(matchers) > MATCHERS_LIMIT:
        raise InputError(f"a silence takes at most {MATCHERS_LIMIT} matchers")
    if all(m.test("") for m in matchers):
        raise InputError(
            "these matchers also match decisions without those labels: the silence would "
            "silence everything; add a matcher that needs a value (e.g. target=web)"
        )


def matches(matchers: Sequence[Matcher], facts: Mapping[str, str]) -> bool:
    """Whether every matcher holds on ``facts`` (missing names read as ``""``)."""
    return all(m.test(facts.get(m.name, "")) for m in matchers)


@dataclass(frozen=True)
class Silence:
    """One silence as stored."""

    id: int
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    creator: str
    comment: str
    created_at: datetime
    expired_at: datetime | None = None
    expired_by: str | None = None

    @property
    def end(self) -> datetime:
        """When it stops silencing: its end, or when it was expired early."""
        return min(self.ends_at, self.expired_at) if self.expired_at else self.ends_at

    def state(self, now: datetime) -> State:
        if now >= self.end:
            return "expired"
        return "active" if now >= self.starts_at else "pending"

    def active(self, now: datetime) -> bool:
        return self.state(now) == "active"

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state(now),
            "matchers": [m.as_dict() for m in self.matchers],
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "created_at": iso(self.created_at),
            "creator": self.creator,
            "comment": self.comment,
            "expired_at": iso(self.expired_at),
            "expired_by": self.expired_by,
        }

    def describe(self) -> str:
        return f"silence {self.id} ({', '.join(str(m) for m in self.matchers)})"


def silencing(
    silences: Iterable[Silence], facts: Mapping[str, str], now: datetime
) -> Silence | None:
    """The first silence active at ``now`` whose matchers all hold on ``facts``, or None."""
    for silence in silences:
        if silence.active(now) and matches(silence.matchers, facts):
            return silence
    return None


def decision_facts(
    rule: str, target: str | None, host: str | None, labels: Mapping[str, Any] | None
) -> dict[str, str]:
    """What a matcher sees of a decision: its labels, then rule, target and host over them."""
    facts = {str(k): str(v) for k, v in (labels or {}).items() if v is not None}
    facts["rule"] = rule
    facts["target"] = target or facts.get("target", "")
    facts["host"] = host or facts.get("host", "")
    return facts


# -- the store -------------------------------------------------------------------------

_COLUMNS = (
    "silence_id, matchers, starts_at, ends_at, creator, comment, created_at, expired_at, expired_by"
)


def _silence(row: Sequence[Any]) -> Silence:
    sid, matchers, starts, ends, creator, comment, created, expired, by = row
    parsed = tuple(make_matcher(m["name"], m["op"], m["value"]) for m in json.loads(matchers))
    return Silence(int(sid), parsed, starts, ends, creator, comment, created, expired, by)


def add(
    store: Any,
    now: datetime,
    matchers: Sequence[Matcher],
    *,
    creator: str,
    comment: str,
    duration: timedelta | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
) -> Silence:
    """Record a silence from ``starts_at`` (default now) to ``ends_at`` (or for ``duration``)."""
    check_matchers(matchers)
    comment = " ".join(comment.split())
    if not comment:
        raise InputError("silence: give a --comment (why, and who to ask)")
    if len(comment) > COMMENT_LIMIT:
        raise InputError(f"silence: the comment is longer than {COMMENT_LIMIT} characters")
    start = starts_at or now
    if ends_at is None:
        if duration is None or duration <= timedelta(0):
            raise InputError("silence: give a positive duration (--for 2h) or an end")
        try:
            ends_at = start + duration
        except OverflowError:
            raise InputError(f"silence: --for {duration} would end after the year 9999") from None
    if ends_at <= start:
        raise InputError("silence: it must end after it starts")
    if ends_at <= now:
        raise InputError("silence: it would end in the past")
    body = json.dumps([m.as_dict() for m in matchers])
    with store._write_lock:
        rows = store.execute(
            f"""INSERT INTO silences ({_COLUMNS})
                VALUES (nextval('silence_id_seq'), ?, ?, ?, ?, ?, ?, NULL, NULL)
                RETURNING silence_id""",
            [body, start, ends_at, creator, comment, now],
        )
    return Silence(int(rows[0][0]), tuple(matchers), start, ends_at, creator, comment, now)


def get(store: Any, silence_id: int) -> Silence | None:
    rows = store._run(f"SELECT {_COLUMNS} FROM silences WHERE silence_id = ?", [silence_id])
    return _silence(rows[0]) if rows else None


def listing(
    store: Any, now: datetime, state: State | None = None, since: timedelta | None = None
) -> list[Silence]:
    """Silences, newest first: one state only, or ones that ended within ``since`` too."""
    rows = store._run(f"SELECT {_COLUMNS} FROM silences ORDER BY silence_id DESC")
    found = [_silence(r) for r in rows]
    if state is not None:
        return [s for s in found if s.state(now) == state]
    if since is not None:
        return [s for s in found if s.end > now - since]
    return found


def in_force(store: Any, now: datetime) -> list[Silence]:
    """The silences active at ``now`` (what the service consults before it acts)."""
    rows = store._run(
        f"""SELECT {_COLUMNS} FROM silences
            WHERE starts_at <= ? AND ends_at > ? AND (expired_at IS NULL OR expired_at > ?)
            ORDER BY silence_id""",
        [now, now, now],
    )
    return [_silence(r) for r in rows]


def expire(store: Any, silence_id: int, now: datetime, *, actor: str) -> Silence:
    """End a silence now; InputError for an unknown one, or one already expired."""
    with store._write_lock:
        found = get(store, silence_id)
        if found is None:
            raise InputError(f"no silence with id {silence_id}")
        if found.state(now) == "expired":
            raise InputError(f"silence {silence_id} has already expired")
        store.execute(
            "UPDATE silences SET expired_at = ?, expired_by = ? WHERE silence_id = ?",
            [now, actor, silence_id],
        )
    return Silence(
        found.id,
        found.matchers,
        found.starts_at,
        found.ends_at,
        found.creator,
        found.comment,
        found.created_at,
        now,
        actor,
    )


__all__ = [
    "FIELDS",
    "Matcher",
    "Silence",
    "add",
    "decision_facts",
    "expire",
    "get",
    "in_force",
    "listing",
    "make_matcher",
    "matches",
    "parse_matcher",
    "parse_matchers",
    "silencing",
]
