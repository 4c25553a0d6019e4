"""Offline API docs at ``GET /docs``: Swagger UI over ``/openapi.json``, shipped in the package.

The Swagger UI build (npm ``swagger-ui-dist``, Apache-2.0, licence beside it) is package
data in ``autofix/api/docs_assets/``; nothing is loaded from a CDN, and the page's
Content-Security-Policy keeps it that way. The page itself needs no token; "Try it out"
sends the bearer token given to "Authorize".
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

# The only files served: a fixed table, so a request path never reaches the filesystem.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "init.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain; charset=utf-8",
}
_HEADERS = {
    # Swagger UI sets inline styles; scripts, images and requests stay on this origin.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> bytes:
    return (resources.files("autofix.api") / "docs_assets" / name).read_bytes()


@router.get("/docs")
def docs_page() -> Response:
    """Swagger UI for this API."""
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> Response:
    """One of the vendored Swagger UI files (or its licence)."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no docs asset {name!r}")
    return Response(_read(name), media_type=media_type, headers=_HEADERS)
