"""Bearer tokens with two roles: ``viewer`` reads, ``operator`` also acts.

Tokens come from ``AUTOFIX_API_TOKENS`` (``name:role:token`` entries). A request's token
is hashed and compared with every configured token's hash by ``hmac.compare_digest``,
all of them, so neither the time taken nor an early exit tells which token came close.
No token, or an unknown one: 401 with ``WWW-Authenticate: Bearer``; a viewer on an
operator route: 403. The token's name is the actor (``api:<name>``) that operator actions
are recorded under in the audit log.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from autofix.api.tokens import Principal, Role, Tokens, outranks

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
    if not outranks(principal, "operator"):
        raise HTTPException(403, f"{principal.name} is a viewer; this needs an operator token")
    return principal


Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]

__all__ = ["Operator", "Principal", "Role", "Tokens", "Viewer", "operator", "viewer"]
