"""``POST /api/v1/write``: Prometheus remote_write 1.0 into the store, no agent per host.

Point a Prometheus (or Thanos receive, vmagent, Grafana Agent) at it::

    remote_write:
      - url: http://autofix:8080/api/v1/write
        authorization: {credentials: <operator token>}

The body is decoded by ``autofix.collect.remote_write`` and written in one batch through
the service's store (duplicates of a (series, ts) keep the first value, so a resend after
a failure is harmless). Status codes follow the remote_write contract: 204 written; 400
for a body that cannot be decoded (the sender drops it: retrying cannot help); 415 for a
content type other than remote_write 1.0 protobuf with snappy; 503 while the store cannot
write (the sender keeps the samples in its WAL and retries with backoff).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from autofix.api.auth import Operator
from autofix.api.context import ApiContext, context
from autofix.api.limits import known_query
from autofix.api.models import ErrorOut
from autofix.collect.remote_write import CONTENT_ENCODING, CONTENT_TYPE, decode
from autofix.errors import InputError
from autofix.store import WriteResult

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["metrics"], dependencies=[Depends(known_query)])

#: A compressed body may inflate to this many times the body limit (snappy rarely gets
#: past 5x on metric labels); more is refused before inflating.
INFLATE_RATIO = 16


@router.post(
    "/write",
    status_code=204,
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses={
        400: {"model": ErrorOut, "description": "Not a snappy-compressed WriteRequest."},
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        413: {"model": ErrorOut, "description": "Body over AUTOFIX_API_MAX_BODY."},
        415: {"model": ErrorOut, "description": "Not remote_write 1.0 (protobuf + snappy)."},
        503: {"model": ErrorOut, "description": "The store cannot write now: retry."},
    },
)
async def write(
    request: Request, ctx: Annotated[ApiContext, Depends(context)], who: Operator
) -> Response:
    """Receive a Prometheus remote_write 1.0 request (protobuf ``WriteRequest``, snappy).

    Series need ``__name__`` and ``instance`` (the host, without its port); other labels
    are kept. NaN, ±Inf and staleness markers are dropped.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    proto = request.headers.get("content-type", "").lower()
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if kind != CONTENT_TYPE or "io.prometheus.write.v2" in proto or encoding != CONTENT_ENCODING:
        return JSONResponse(
            {
                "detail": "remote_write 1.0 only: Content-Type application/x-protobuf, "
                "Content-Encoding snappy"
            },
            415,
        )
    body = await request.body()
    limit = ctx.settings.api_max_body * INFLATE_RATIO
    try:
        frame, stats = await run_in_threadpool(decode, body, limit)
    except InputError as exc:
        log.warning("%s: remote_write refused: %s", who.actor, exc)
        return JSONResponse({"detail": str(exc)}, 400)
    written = await run_in_threadpool(ctx.store.write, frame) if len(frame) else WriteResult()
    log.debug(
        "remote_write from %s: %d series, %d samples, %d non-finite, %d without name/instance; %s",
        who.actor,
        stats.series,
        stats.samples,
        stats.non_finite,
        stats.unnamed,
        written,
    )
    return Response(status_code=204)
