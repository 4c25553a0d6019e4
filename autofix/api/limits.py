"""Limits on requests: the body size, and query parameters the route does not know.

A ``Content-Length`` above the body limit is refused at once; a body without one
(chunked) is read up to the limit and refused as soon as it passes it. Either way the
answer is 413 and the route never runs, so nothing is written. A body within the limit
is buffered and handed on unchanged.

An unknown query parameter is a 422 like any invalid one: a misspelt filter
(``?stat=failed``) must not quietly list everything. So is a parameter given twice
(``?metric=a&metric=b``): every filter takes one value, and taking the last one would
quietly answer a question nobody asked.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class BodyLimit:
    """ASGI middleware: 413 for request bodies larger than ``max_body`` bytes."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await self._refuse(scope, receive, send, 400, "invalid Content-Length")
                    return
                if int(value) > self.max_body:
                    await self._too_large(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # later calls wait for a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refuse(
            scope, receive, send, 413, f"request body larger than {self.max_body} bytes"
        )

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        response = JSONResponse({"detail": detail}, status, headers={"Connection": "close"})
        await response(scope, receive, send)
