"""Run-time control over HTTP: who am I, the global pause, silences, and the CLI's transport.

``GET /api/v1/whoami`` tells a client (the dashboard) what its token may do. The pause
(``autofix.pause``) and silences (``autofix.silences``) are read by viewers and changed by
operators only; each change is recorded with the token's actor (``api:<name>``) and takes
effect at the service's next decision.

``POST /api/v1/cli`` is how ``autofix`` on another host (``AUTOFIX_URL``, ``AUTOFIX_TOKEN``)
carries out a command here: the same request the control socket takes, answered with the
same frames as NDJSON (``autofix.control.server``). A viewer token runs the reading
commands only; paths on the command line are refused (they would name this host's files);
commands that need no store (``serve``, ``train`` …) run where they are typed, never here.
It is the CLI's transport, not an API to program against, so it is not in the OpenAPI.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse

from autofix import pause as pausing
from autofix import silences as silencing
from autofix.api.auth import Operator, Viewer
from autofix.api.context import ApiContext, context
from autofix.api.limits import known_query
from autofix.api.models import ErrorOut, Page
from autofix.api.schemas import PauseIn, PauseState, Silence, SilenceIn, Whoami
from autofix.errors import InputError

log = logging.getLogger(__name__)

Ctx = Annotated[ApiContext, Depends(context)]
#: How long a silence lasts when the request gives neither `for` nor `ends_at`.
DEFAULT_SILENCE = timedelta(hours=1)
SilenceId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The silence's id.")]

router = APIRouter(
    prefix="/api/v1",
    tags=["control"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    dependencies=[Depends(known_query)],
)
_BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not JSON text."},
    422: {"model": ErrorOut, "description": "Invalid body."},
}


def _now(ctx: ApiContext) -> datetime:
    return ctx.clock()


@router.get("/whoami", response_model=Whoami)
async def whoami(who: Viewer) -> dict[str, Any]:
    """The token's name and role, and what it may do (the dashboard shows buttons by it)."""
    operator = who.role == "operator"
    verbs = ("approve", "reject", "rollback", "label", "request_fix", "run_jobs", "pause")
    return {
        "name": who.name,
        "role": who.role,
        "actor": who.actor,
        "can": {**dict.fromkeys(verbs, operator), "silence": operator},
    }


def _pause_state(found: pausing.Pause | None) -> dict[str, Any]:
    return found.as_dict() if found is not None else {"paused": False}


@router.get("/pause", response_model=PauseState)
def get_pause(ctx: Ctx, _: Viewer) -> dict[str, Any]:
    """Whether autofix is paused: since when, until when, why and by whom."""
    return _pause_state(pausing.current(ctx.store, _now(ctx)))


@router.post("/pause", response_model=PauseState, responses=_BAD_BODY)
def pause(ctx: Ctx, who: Operator, body: PauseIn) -> dict[str, Any]:
    """Pause autofix: no fix is applied (rules still decide, in shadow) until resumed or
    until `for` has passed. A new pause replaces the one in force."""
    from autofix.config import parse_duration

    span = parse_duration(body.duration) if body.duration is not None else None
    with ctx.operator_lock:
        try:
            held = pausing.pause(ctx.store, _now(ctx), reason=body.reason, actor=who.actor,
                                 duration=span)  # fmt: skip
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
    log.warning("%s: %s", who.actor, held.describe())
    return held.as_dict()


@router.post("/resume", response_model=PauseState)
def resume(ctx: Ctx, who: Operator) -> dict[str, Any]:
    """End the pause (a no-op when autofix is not paused)."""
    with ctx.operator_lock:
        ended = pausing.resume(ctx.store, _now(ctx), actor=who.actor)
    if ended is not None:
        log.warning("%s: resumed (the pause by %s ended)", who.actor, ended.actor)
    return {"paused": False}


@router.get("/silences", response_model=Page[Silence])
def list_silences(
    ctx: Ctx,
    _: Viewer,
    state: Annotated[str | None, Query(pattern=r"^(pending|active|expired)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Silences, newest first (every state unless `state` is given)."""
    now = _now(ctx)
    found = silencing.listing(ctx.store, now, state=state)  # type: ignore[arg-type]
    page = found[offset : offset + limit]
    return {
        "total": len(found),
        "limit": limit,
        "offset": offset,
        "items": [s.as_dict(now) for s in page],
    }


@router.post("/silences", response_model=Silence, status_code=201, responses=_BAD_BODY)
def add_silence(ctx: Ctx, who: Operator, body: SilenceIn) -> dict[str, Any]:
    """Silence the decisions the matchers select (rule, target, host or any label): they
    are recorded as silenced and never acted on until the silence ends."""
    from autofix.config import parse_duration

    now = _now(ctx)
    try:
        matchers = [silencing.make_matcher(m.name, m.op, m.value) for m in body.matchers]
        span = parse_duration(body.duration) if body.duration is not None else None
        if span is None and body.ends_at is None:
            span = DEFAULT_SILENCE  # as `autofix silence add`
        with ctx.operator_lock:
            made = silencing.add(
                ctx.store,
                now,
                matchers,
                creator=who.actor,
                comment=body.comment,
                duration=span,
                starts_at=body.starts_at,
                ends_at=body.ends_at,
            )
    except InputError as exc:
        raise HTTPException(422, str(exc)) from None
    log.warning("%s: added %s", who.actor, made.describe())
    return made.as_dict(now)


@router.post(
    "/silences/{silence_id}/expire",
    response_model=Silence,
    responses={404: {"model": ErrorOut}, 409: {"model": ErrorOut}},
)
def expire_silence(ctx: Ctx, who: Operator, silence_id: SilenceId) -> dict[str, Any]:
    """End a silence now (409 when it has already ended)."""
    now = _now(ctx)
    with ctx.operator_lock:
        if silencing.get(ctx.store, silence_id) is None:
            raise HTTPException(404, f"no silence with id {silence_id}")
        try:
            ended = silencing.expire(ctx.store, silence_id, now, actor=who.actor)
        except InputError as exc:
            raise HTTPException(409, str(exc)) from None
    log.warning("%s: expired %s", who.actor, ended.describe())
    return ended.as_dict(now)


# -- the CLI's transport ----------------------------------------------------------------


@router.post("/cli", include_in_schema=False)
async def cli(request: Request, ctx: Ctx, who: Viewer) -> StreamingResponse:
    """Carry out an `autofix` command line for a client on another host (NDJSON frames)."""
    import json

    from autofix.cli import _command
    from autofix.control.client import LOCAL, READS, command_path
    from autofix.control.server import run_request

    try:
        body = json.loads(await request.body())
    except ValueError:
        raise HTTPException(400, "the body is not JSON text") from None
    argv = body.get("argv") if isinstance(body, dict) else None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or len(argv) > 256:
        raise HTTPException(422, "argv must be a list of at most 256 strings")
    path = command_path(_command(), argv)
    if path is not None and (path[0] in LOCAL or not path[0]):
        raise HTTPException(422, f"`autofix {' '.join(path[0])}` runs where it is typed")
    if who.role != "operator" and (path is None or path[0] not in READS):
        raise HTTPException(403, f"{who.name} is a viewer; this command needs an operator token")
    frames: queue.Queue[dict[str, Any] | None] = queue.Queue()
    cancelled = threading.Event()

    def work() -> None:
        try:
            code = run_request(
                body, ctx.service, frames.put, actor=who.actor, remote=True, cancelled=cancelled
            )
            frames.put({"x": code})
        finally:
            frames.put(None)

    threading.Thread(target=work, name="autofix-cli-http", daemon=True).start()

    def stream() -> Iterator[bytes]:
        try:
            while (frame := frames.get()) is not None:
                yield (json.dumps(frame) + "\n").encode()
        finally:
            cancelled.set()  # the client went away: long commands stop

    log.info("%s: runs `autofix %s` over HTTP", who.actor, " ".join(argv[:2]))
    return StreamingResponse(stream(), media_type="application/x-ndjson")
