"""Fix routes: list and show (viewer); approve, reject, roll back, label (operator).

An operator action runs through the executor exactly as ``autofix fix …`` does, recorded
in the audit log under ``api:<token name>``. An unknown fix is 404; an action the fix's
state does not allow (approving a fix that is not pending, rolling back one with nothing
to undo, labelling one that never ran) is 409 and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from autofix.api.auth import Operator, Viewer
from autofix.api.context import ApiContext, context, utc
from autofix.api.limits import known_query
from autofix.api.models import ErrorOut, Fix, FixDetail, FixState, LabelIn, Page, UtcNaive
from autofix.audit import FixRecord
from autofix.errors import InputError, PausedError

log = logging.getLogger(__name__)

Ctx = Annotated[ApiContext, Depends(context)]
FixId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The fix's id.")]
Name = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]
Action = Annotated[str | None, Query(pattern=r"^[a-z]+\.[a-z_]+$", max_length=64)]

router = APIRouter(
    prefix="/api/v1/fixes",
    tags=["fixes"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    dependencies=[Depends(known_query)],
)
_ACT: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}, 409: {"model": ErrorOut}}


def fix_body(record: FixRecord) -> dict[str, Any]:
    """A FixRecord as the ``Fix`` response (times in UTC)."""
    out = record.as_dict()
    out["requested_at"] = utc(record.requested_at)
    out["updated_at"] = utc(record.updated_at)
    return out


def _detail(ctx: ApiContext, record: FixRecord) -> dict[str, Any]:
    audit = ctx.executor.audit
    out = fix_body(record)
    out["events"] = [{**e, "ts": utc(e["ts"])} for e in record.events]
    out["labels"] = [{**x, "ts": utc(x["ts"])} for x in audit.labels(record.id)]
    out["escalations"] = [{**x, "ts": utc(x["ts"])} for x in audit.escalations(record.id)]
    return out


def _existing(ctx: ApiContext, fix_id: int) -> FixRecord:
    record = ctx.executor.audit.get(fix_id)
    if record is None:
        raise HTTPException(404, f"no fix with id {fix_id}")
    return record


@router.get("", response_model=Page[Fix])
def list_fixes(
    ctx: Ctx,
    _: Viewer,
    state: FixState | None = None,
    target: Name = None,
    action: Action = None,
    since: Annotated[UtcNaive | None, Query(description="Requested at or after.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Fixes, newest first, filtered by current state, target, action and request time."""
    rows = ctx.store._run(
        """WITH cur AS (SELECT fix_id, arg_max(state, seq) AS state FROM fix_events
                        GROUP BY fix_id)
           SELECT f.fix_id, count(*) OVER () FROM fixes f LEFT JOIN cur USING (fix_id)
           WHERE ($1::VARCHAR IS NULL OR coalesce(cur.state, 'planned') = $1)
             AND ($2::VARCHAR IS NULL OR f.target = $2)
             AND ($3::VARCHAR IS NULL OR f.action = $3)
             AND ($4::TIMESTAMP IS NULL OR f.requested_at >= $4)
           ORDER BY f.fix_id DESC LIMIT $5 OFFSET $6""",
        [state, target, action, since, limit, offset],
    )
    total = int(rows[0][1]) if rows else _count(ctx, state, target, action, since)
    items = [ctx.executor.audit.get(int(fix_id)) for fix_id, _ in rows]
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "items": [fix_body(r) for r in items if r is not None],
    }


def _count(ctx: ApiContext, *filters: Any) -> int:
    # An offset past the end returns no rows, so no window count either.
    rows = ctx.store._run(
        """WITH cur AS (SELECT fix_id, arg_max(state, seq) AS state FROM fix_events
                        GROUP BY fix_id)
           SELECT count(*) FROM fixes f LEFT JOIN cur USING (fix_id)
           WHERE ($1::VARCHAR IS NULL OR coalesce(cur.state, 'planned') = $1)
             AND ($2::VARCHAR IS NULL OR f.target = $2)
             AND ($3::VARCHAR IS NULL OR f.action = $3)
             AND ($4::TIMESTAMP IS NULL OR f.requested_at >= $4)""",
        list(filters),
    )
    return int(rows[0][0])


@router.get("/{fix_id}", response_model=FixDetail, responses={404: {"model": ErrorOut}})
def get_fix(ctx: Ctx, _: Viewer, fix_id: FixId) -> dict[str, Any]:
    """One fix with every transition, its operator labels and escalations."""
    return _detail(ctx, _existing(ctx, fix_id))


def _act(
    ctx: ApiContext, who: Any, fix_id: int, verb: str, run: Callable[[], FixRecord]
) -> dict[str, Any]:
    with ctx.operator_lock:
        _existing(ctx, fix_id)
        try:
            record = run()
        except (InputError, PausedError) as exc:  # paused: an approval waits for resume
            raise HTTPException(409, str(exc)) from None
    log.info("%s: %s fix %d → %s", who.actor, verb, fix_id, record.state)
    return _detail(ctx, record)


@router.post("/{fix_id}/approve", response_model=FixDetail, responses=_ACT)
def approve(ctx: Ctx, who: Operator, fix_id: FixId) -> dict[str, Any]:
    """Approve a fix waiting for approval and run it now (gates and pre-check again)."""
    return _act(ctx, who, fix_id, "approve", lambda: ctx.executor.approve(fix_id, who.actor))


@router.post("/{fix_id}/reject", response_model=FixDetail, responses=_ACT)
def reject(ctx: Ctx, who: Operator, fix_id: FixId) -> dict[str, Any]:
    """Reject a fix waiting for approval: it is refused and never runs."""
    return _act(ctx, who, fix_id, "reject", lambda: ctx.executor.reject(fix_id, who.actor))


@router.post("/{fix_id}/rollback", response_model=FixDetail, responses=_ACT)
def rollback(ctx: Ctx, who: Operator, fix_id: FixId) -> dict[str, Any]:
    """Undo a fix that applied (restores quarantined files, previous values, keys …)."""
    return _act(ctx, who, fix_id, "rollback", lambda: ctx.executor.rollback(fix_id, who.actor))


@router.post(
    "/{fix_id}/label",
    response_model=FixDetail,
    responses={**_ACT, 400: {"model": ErrorOut, "description": "The body is not JSON text."}},
)
def label(ctx: Ctx, who: Operator, fix_id: FixId, body: LabelIn) -> dict[str, Any]:
    """Record whether a fix was false (the problem was not real); the latest label counts."""

    def run() -> FixRecord:
        ctx.executor.audit.label(fix_id, body.false_fix, who.actor, body.comment)
        return ctx.executor.get(fix_id)

    return _act(ctx, who, fix_id, "label", run)
