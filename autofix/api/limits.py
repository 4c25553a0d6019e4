"""Limits on requests: the body size, and query parameters the route does not know.

The body limit is ``autofix.api.bodylimit.BodyLimit`` (re-exported here).

An unknown query parameter is a 422 like any invalid one: a misspelt filter
(``?stat=failed``) must not quietly list everything. So is a parameter given twice
(``?metric=a&metric=b``): every filter takes one value, and taking the last one would
quietly answer a question nobody asked.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from autofix.api.bodylimit import BodyLimit

_KNOWN: dict[int, frozenset[str]] = {}


def _query_names(dependant: Any) -> frozenset[str]:
    names: set[str] = set()
    stack = [dependant]
    while stack:
        current = stack.pop()
        names.update(param.alias for param in current.query_params)
        stack.extend(current.dependencies)
    return frozenset(names)


async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not declare (a router dependency)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None or not request.query_params:
        return
    known = _KNOWN.get(id(dependant))
    if known is None:
        known = _KNOWN[id(dependant)] = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    names = [name for name, _ in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1} - set(unknown))
    if unknown or repeated:
        raise RequestValidationError(
            [
                {"type": "extra_forbidden", "loc": ("query", name), "msg": "Unknown parameter"}
                for name in unknown
            ]
            + [
                {"type": "too_long", "loc": ("query", name), "msg": "Given more than once"}
                for name in repeated
            ]
        )


__all__ = ["BodyLimit", "known_query"]
