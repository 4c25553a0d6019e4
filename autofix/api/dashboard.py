"""The dashboard page at ``GET /``: static HTML, CSS and JavaScript shipped in the package.

The page holds no data: it asks for an API token and reads the JSON API under
``/api/v1`` with it, so the same bearer-token roles apply: ``/api/v1/whoami`` tells the
page which buttons to show (a viewer gets none that act). Charts are drawn by uPlot,
vendored as its built file with its licence (``static/VENDORED.md``).
Assets are package data (``autofix/api/static/``) read with ``importlib.resources``; there
is no build step and nothing is fetched from elsewhere, which the Content-Security-Policy
enforces.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

# The only files served: a fixed table, so a request path never reaches the filesystem.
_ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    # uPlot (MIT, https://github.com/leeoniya/uPlot), vendored: see static/VENDORED.md.
    "uplot.iife.min.js": "text/javascript; charset=utf-8",
    "uplot.min.css": "text/css; charset=utf-8",
    "uplot.LICENSE": "text/plain; charset=utf-8",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with the installed version: revalidate rather than guess.
    "Cache-Control": "no-cache",
}


@functools.cache
def _read(name: str) -> bytes:
    return (resources.files("autofix.api") / "static" / name).read_bytes()


@router.get("/")
def dashboard_page() -> Response:
    """The dashboard: pause, KPIs, approvals, forecasts, jobs, decisions, escalations,
    silences and the fix timeline."""
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)


@router.get("/dashboard/{name}")
def dashboard_asset(name: str) -> Response:
    """One of the page's scripts or its stylesheet."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no dashboard asset {name!r}")
    return Response(_read(name), media_type=media_type, headers=_HEADERS)
