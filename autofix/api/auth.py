"""Bearer tokens with two roles: ``viewer`` reads, ``operator`` also acts.

Tokens come from ``AUTOFIX_API_TOKENS`` (``name:role:token`` entries). A request's token
is hashed and compared with every configured token's hash by ``hmac.compare_digest``,
all of them, so neither the time taken nor an early exit tells which token came close.
No token, or an unknown one: 401 with ``WWW-Authenticate: Bearer``; a viewer on an
operator route: 403. The token's name is the actor (``api:<name>``) that operator actions
are recorded under in the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Literal, cast

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

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

    def __init__(self, secret: SecretStr) -> None:
        entries = []
        for entry in secret.get_secret_value().split(","):
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


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from AUTOFIX_API_TOKENS; operator for POST routes.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    tokens: Tokens = request.app.state.autofix.tokens
    if credentials is None:
        raise HTTPException(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
    principal = tokens.check(credentials.credentials)
    if principal is None:
        raise HTTPException(401, "invalid bearer token", {"WWW-Authenticate": "Bearer"})
    return principal


async def viewer(request: Request, credentials: Credentials) -> Principal:
    """Any valid token (a FastAPI dependency)."""
    return _authenticate(request, credentials)


async def operator(request: Request, credentials: Credentials) -> Principal:
    """A valid operator token (a FastAPI dependency); 403 for a viewer."""
    principal = _authenticate(request, credentials)
    if _RANK[principal.role] < _RANK["operator"]:
        raise HTTPException(403, f"{principal.name} is a viewer; this needs an operator token")
    return principal


Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]

__all__ = ["Operator", "Principal", "Role", "Tokens", "Viewer", "operator", "viewer"]
