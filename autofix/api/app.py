"""``create_app``: the FastAPI app over the store, executor and jobs of the owning process.

>>> from autofix.config import load_settings
>>> from autofix.pipeline import Pipeline
>>> from autofix.store import MetricStore
>>> app = create_app(load_settings(environ={}), MetricStore(":memory:"), pipeline=Pipeline())
>>> [p for p in app.openapi()["paths"] if p.startswith("/api/v1/fixes")][:2]
['/api/v1/fixes', '/api/v1/fixes/{fix_id}']
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from autofix import __version__
from autofix.config import Settings
from autofix.errors import AutofixError, StoreError
from autofix.heartbeat import Heartbeat
from autofix.jobs import Service, utcnow
from autofix.pipeline import Pipeline, load_pipeline
from autofix.store import MetricStore

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    store: MetricStore,
    *,
    service: Service | None = None,
    pipeline: Pipeline | None = None,
    scheduler: Any | None = None,
    heartbeat: Heartbeat | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The API over ``store``.

    ``service`` is the process's ``Service`` (its executor runs approved fixes, its
    alert rules take Alertmanager's alerts); without one, a Service is built over
    ``store`` and ``pipeline`` (default: the pipelines file in the settings).
    ``scheduler`` (APScheduler) is what ``/readyz`` reports on; ``heartbeat`` its
    heartbeat, exported on ``/metrics``. ``clock`` returns naive UTC (default: the
    service's clock).
    """
    from autofix.api import (
        alerts,
        control,
        dashboard,
        docs,
        fixes,
        metrics,
        operations,
        remote_write,
        routes,
    )
    from autofix.api.auth import Tokens
    from autofix.api.context import ApiContext
    from autofix.api.limits import BodyLimit

    if service is None:
        pipeline = pipeline if pipeline is not None else load_pipeline(settings.pipeline)
        service = Service(settings, pipeline, store, clock=clock or utcnow)
    ctx = ApiContext(
        settings=settings,
        store=store,
        service=service,
        pipeline=service.pipeline,
        tokens=Tokens(settings.api_tokens),
        clock=clock or service.clock,
        scheduler=scheduler,
        heartbeat=heartbeat,
    )
    app = FastAPI(
        title="autofix",
        version=__version__,
        summary="Predictive auto-remediation: forecasts, anomalies, fixes, KPIs.",
        docs_url=None,  # FastAPI's /docs loads Swagger UI from a CDN: autofix.api.docs
        redoc_url=None,  # serves the copy shipped in the package instead
    )
    app.state.autofix = ctx
    app.add_middleware(BodyLimit, max_body=settings.api_max_body)
    app.add_exception_handler(AutofixError, _autofix_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.include_router(routes.health)
    registry = metrics.build_registry(ctx)
    metrics.instrument(app, registry)
    app.include_router(metrics.router(ctx, registry))
    app.include_router(routes.router)
    app.include_router(fixes.router)
    app.include_router(operations.router)
    app.include_router(control.router)
    app.include_router(alerts.router)
    app.include_router(remote_write.router)
    app.include_router(dashboard.router)  # GET / and its assets
    app.include_router(docs.router)  # GET /docs: Swagger UI shipped in the package
    if not len(ctx.tokens):
        log.warning("API: AUTOFIX_API_TOKENS is empty; every /api/v1 request is refused")
    return app


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """422 with the validation errors; NaN/Infinity a body sent are shown as text.

    (FastAPI's own handler echoes them as numbers, which JSON cannot carry: a 500.)
    """
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": _finite(jsonable_encoder(errors))}, 422)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


async def _autofix_error(request: Request, exc: Exception) -> JSONResponse:
    # Routes turn bad input into 4xx themselves; what reaches here is the store or a bug.
    message = " ".join(str(exc).split())
    if isinstance(exc, StoreError):
        log.error("API %s %s: %s", request.method, request.url.path, message)
        return JSONResponse({"detail": f"store unavailable: {message}"}, 503)
    log.error("API %s %s failed: %s", request.method, request.url.path, message)
    return JSONResponse({"detail": message}, 500)


__all__ = ["create_app"]
