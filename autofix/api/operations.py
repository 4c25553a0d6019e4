"""What an operator does besides approving: request a fix, read decisions and escalations,
see and run jobs.

``POST /api/v1/fixes`` goes through the service's executor and every gate, exactly as
``autofix fix run``: a gate's refusal is recorded and returned (``state: refused``,
``gate``), an unknown action is 422 and records nothing, and while autofix is paused the
fix is planned, not applied. ``POST /api/v1/jobs/{job}/run`` runs the job now on the
service (after a scheduled run of it that is still going) and answers when it is done.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool

from autofix.api.auth import Operator, Viewer
from autofix.api.context import ApiContext, context, number, utc
from autofix.api.fixes import fix_body
from autofix.api.limits import known_query
from autofix.api.models import ErrorOut, Page, UtcNaive
from autofix.api.schemas import Decision, EscalationItem, FixRequest, FixRequested, Job, JobRun
from autofix.errors import InputError
from autofix.jobnames import JOB_NAMES
from autofix.pipeline import JobName

log = logging.getLogger(__name__)

Ctx = Annotated[ApiContext, Depends(context)]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip.")]
Name = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]

router = APIRouter(
    prefix="/api/v1",
    tags=["operate"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    dependencies=[Depends(known_query)],
)


@router.post(
    "/fixes",
    response_model=FixRequested,
    responses={
        400: {"model": ErrorOut, "description": "The body is not JSON text."},
        422: {"model": ErrorOut, "description": "Invalid body, or an unknown action."},
    },
)
def request_fix(ctx: Ctx, who: Operator, body: FixRequest) -> dict[str, Any]:
    """Request a fix on a declared target; it goes through every gate (as `autofix fix run`).

    A refusal by a gate is recorded and returned with `state: refused` and the `gate`; an
    approval-mode fix waits (`pending_approval`) unless `approve` is true.
    """
    with ctx.operator_lock:
        try:
            record = ctx.executor.run(
                body.action,
                body.target,
                dict(body.params),
                dry_run=body.dry_run,
                approved_by=who.actor if body.approve else None,
                requested_by=who.actor,
            )
        except InputError as exc:  # an unknown action: nothing recorded
            raise HTTPException(422, str(exc)) from None
    log.info("%s: requested %s on %s → fix %d %s", who.actor, body.action, body.target,
             record.id, record.state)  # fmt: skip
    return fix_body(record)


@router.get("/decisions", response_model=Page[Decision])
def decisions(
    ctx: Ctx,
    _: Viewer,
    rule: Name = None,
    target: Name = None,
    mode: Annotated[str | None, Query(pattern=r"^[a-z_]{1,16}$")] = None,
    source: Annotated[str | None, Query(pattern=r"^(policy|alert|health)$")] = None,
    since: Annotated[UtcNaive | None, Query(description="Decided at or after.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Decisions, newest first: what each rule, alert or health check decided, its mode
    (shadow, silenced, inhibited …) and the fixes it led to."""
    where = """WHERE ($1::VARCHAR IS NULL OR d.rule = $1)
                 AND ($2::VARCHAR IS NULL OR d.target = $2)
                 AND ($3::VARCHAR IS NULL OR d.mode = $3)
                 AND ($4::VARCHAR IS NULL OR d.source = $4)
                 AND ($5::TIMESTAMP IS NULL OR d.ts >= $5)"""
    params: list[Any] = [rule, target, mode, source, since]
    total = int(ctx.store._run(f"SELECT count(*) FROM decisions d {where}", params)[0][0])
    rows = ctx.store._run(
        f"""WITH cur AS (SELECT fix_id, arg_max(state, seq) AS state FROM fix_events
                         GROUP BY fix_id),
                 by_decision AS (
                    SELECT f.decision_id, list(f.fix_id ORDER BY f.fix_id) AS fixes,
                           arg_max(cur.state, f.fix_id) AS fix_state
                    FROM fixes f LEFT JOIN cur USING (fix_id)
                    WHERE f.decision_id IS NOT NULL GROUP BY f.decision_id)
            SELECT d.decision_id, d.ts, d.detected_at, d.rule, d.kind, d.source, d.subject,
                   d.series_id, d.target, d.mode, d.reason, b.fixes, b.fix_state
            FROM decisions d LEFT JOIN by_decision b USING (decision_id) {where}
            ORDER BY d.ts DESC, d.decision_id DESC LIMIT $6 OFFSET $7""",
        [*params, limit, offset],
    )
    items = [
        {
            "id": r[0],
            "ts": utc(r[1]),
            "detected_at": utc(r[2]),
            "rule": r[3],
            "kind": r[4],
            "source": r[5],
            "subject": r[6],
            "series_id": None if r[7] is None else int(r[7]),
            "target": r[8],
            "mode": r[9],
            "reason": r[10],
            "fixes": [int(x) for x in (r[11] or [])],
            "fix_state": r[12],
        }
        for r in rows
    ]
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/escalations", response_model=Page[EscalationItem])
def escalations(
    ctx: Ctx,
    _: Viewer,
    target: Name = None,
    since: Annotated[UtcNaive | None, Query(description="Escalated at or after.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Escalations to a human, newest first: failed, rolled-back or held fixes, decisions
    with nothing left to try, targets without a recovery."""
    where = """WHERE ($1::VARCHAR IS NULL OR target = $1)
                 AND ($2::TIMESTAMP IS NULL OR ts >= $2)"""
    total = int(ctx.store._run(f"SELECT count(*) FROM escalations {where}", [target, since])[0][0])
    rows = ctx.store._run(
        f"""SELECT fix_id, ts, action, target, gate, reason FROM escalations {where}
            ORDER BY ts DESC, rowid DESC LIMIT $3 OFFSET $4""",
        [target, since, limit, offset],
    )
    items = [
        {
            "fix_id": None if r[0] is None else int(r[0]),
            "ts": utc(r[1]),
            "action": r[2],
            "target": r[3],
            "gate": r[4],
            "reason": r[5],
        }
        for r in rows
    ]
    return {"total": total, "limit": limit, "offset": offset, "items": items}


def _schedule(spec: Any) -> str:
    from autofix.config import format_duration

    if spec.every is not None:
        return f"every {format_duration(spec.every)}"
    return str(spec.cron)


@router.get("/jobs", response_model=list[Job])
def jobs(ctx: Ctx, _: Viewer) -> list[dict[str, Any]]:
    """Every job: its schedule, whether this process runs it, and its recorded runs."""
    rows = {
        r[0]: r
        for r in ctx.store._run(
            """SELECT job, count(*), count(*) FILTER (WHERE NOT ok), max(started_at),
                      arg_max(ok, started_at), arg_max(error, started_at),
                      quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.95)
               FROM job_runs GROUP BY job"""
        )
    }
    out = []
    for name in JOB_NAMES:
        spec = ctx.pipeline.job(name)
        scheduled = ctx.scheduler.get_job(name) if ctx.scheduler is not None else None
        row = rows.get(name)
        next_run = getattr(scheduled, "next_run_time", None)
        out.append(
            {
                "job": name,
                "schedule": _schedule(spec),
                "enabled": spec.enabled,
                "scheduled": scheduled is not None,
                "next_run": utc(next_run) if next_run is not None else None,
                "last_run": utc(row[3]) if row else None,
                "last_ok": bool(row[4]) if row else None,
                "last_error": row[5] if row else None,
                "runs": int(row[1]) if row else 0,
                "failures": int(row[2]) if row else 0,
                "p50_ms": number(row[6]) if row else None,
                "p95_ms": number(row[7]) if row else None,
            }
        )
    return out


@router.post("/jobs/{job}/run", response_model=JobRun)
async def run_job(
    ctx: Ctx, who: Operator, job: Annotated[JobName, Path(description="The job to run now.")]
) -> dict[str, Any]:
    """Run one job now on the service (as `autofix run JOB`); answers when it has finished.

    A scheduled run of the same job that is still going finishes first. A failing job is
    `ok: false` with its error (200: the run happened and is recorded)."""
    log.info("%s: runs job %s", who.actor, job)
    run = await run_in_threadpool(ctx.service.run_job, job)
    body = run.as_dict()
    body["started_at"] = utc(run.started_at)
    body["summary"] = _finite(json.loads(json.dumps(body["summary"], default=str)))
    return body


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite numbers in a job's summary become null."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float):
        return number(value)
    return value
