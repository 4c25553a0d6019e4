"""API tokens (``name:role:token`` entries of ``AUTOFIX_API_TOKENS``), checked in constant time.

A token is hashed and compared with every configured token's hash by
``hmac.compare_digest``, all of them, so neither the time taken nor an early exit tells
which token came close. Kept free of FastAPI: the API front process checks tokens too.

>>> tokens = Tokens("ana:operator:s3cret-token-000000000000")
>>> tokens.check("s3cret-token-000000000000").actor, tokens.check("guess")
('api:ana', None)
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal, Protocol, cast


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


Role = Literal["viewer", "operator"]
_RANK: dict[str, int] = {"viewer": 0, "operator": 1}


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to."""

    name: str
    role: Role

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"api:{self.name}"


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    digest: bytes


def _digest(token: str) -> bytes:
    # Fixed-length digests: compare_digest then never sees lengths that differ.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Tokens:
    """The configured tokens (validated by Settings), checked in constant time."""

    def __init__(self, secret: _Secret | str) -> None:
        text = secret if isinstance(secret, str) else secret.get_secret_value()
        entries = []
        for entry in text.split(","):
            if entry.strip():
                name, role, token = entry.strip().split(":", 2)
                assert role in _RANK  # Settings validated the format
                entries.append(_Entry(Principal(name, cast(Role, role)), _digest(token)))
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, token: str) -> Principal | None:
        """The principal holding ``token``, or None."""
        given = _digest(token)
        found = None
        for entry in self._entries:  # no early exit
            if hmac.compare_digest(given, entry.digest):
                found = entry.principal
        return found


def outranks(principal: Principal, role: Role) -> bool:
    """Whether ``principal`` may do what ``role`` may do (an operator may view)."""
    return _RANK[principal.role] >= _RANK[role]


__all__ = ["Principal", "Role", "Tokens", "outranks"]
