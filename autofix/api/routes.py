"""Read-only routes: health, readiness, forecasts, a series' chart, anomalies, KPIs, maintenance."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from autofix.api.auth import Viewer
from autofix.api.context import ApiContext, ForecastTable, context, number, utc
from autofix.api.limits import known_query
from autofix.api.models import (
    Anomaly,
    CapacityPoint,
    ErrorOut,
    Forecast,
    ForecastPoint,
    Health,
    HistoryPoint,
    Horizon,
    JobAge,
    Kpis,
    MaintenanceTask,
    Page,
    Readiness,
    SeriesForecast,
    TaskState,
    UtcNaive,
)
from autofix.api.snapshot import page_json
from autofix.collect.base import parse_labels
from autofix.config import parse_duration
from autofix.errors import AutofixError
from autofix.models.base import direction_for, to_fill_ratio

Ctx = Annotated[ApiContext, Depends(context)]
BIGINT = 2**63 - 1
#: Query-string durations (positive, with a unit): 90s, 30m, 24h, 7d, 2w.
DURATION = r"^[1-9][0-9]{0,5}(s|m|h|d|w)$"
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip.")]
Text = Annotated[str | None, Query(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]

health = APIRouter(tags=["status"], dependencies=[Depends(known_query)])
router = APIRouter(
    prefix="/api/v1",
    tags=["read"],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    dependencies=[Depends(known_query)],
)


def duration(text: str, longest: timedelta) -> timedelta:
    """A duration query parameter (``DURATION``), cut to ``longest``."""
    return min(parse_duration(text), longest)


# -- health and readiness -----------------------------------------------------------------


@health.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers HTTP."""
    return Health()


@health.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(ctx: Ctx) -> Any:
    """Readiness: the store answers, the scheduler runs, and how old each job's last run is."""
    jobs: list[JobAge] = []
    try:
        frame = ctx.store.query(
            """SELECT job, max(started_at) AS last_run, arg_max(ok, started_at) AS ok,
                      arg_max(duration_ms, started_at) AS duration_ms, count(*) AS runs,
                      count(*) FILTER (WHERE NOT ok) AS failures
               FROM job_runs GROUP BY job ORDER BY job"""
        )
        store = "ok"
    except AutofixError as exc:
        frame, store = pd.DataFrame(), " ".join(str(exc).split())
    now = utc(ctx.clock())
    assert now is not None
    for row in frame.to_dict("records"):
        last = utc(row["last_run"])
        assert last is not None
        jobs.append(
            JobAge(
                job=str(row["job"]),
                last_run=last,
                age_seconds=round((now - last).total_seconds(), 3),
                ok=bool(row["ok"]),
                duration_ms=float(row["duration_ms"]),
                runs=int(row["runs"]),
                failures=int(row["failures"]),
            )
        )
    if ctx.scheduler is None:
        scheduler = "absent"
    else:
        scheduler = "running" if getattr(ctx.scheduler, "running", False) else "stopped"
    ready = store == "ok" and scheduler != "stopped"
    body = Readiness(ready=ready, store=store, scheduler=scheduler, jobs=jobs)
    return body if ready else JSONResponse(body.model_dump(mode="json"), 503)


# -- forecasts -------------------------------------------------------------------------


@router.get("/forecasts", response_model=Page[Forecast])
async def forecasts(
    ctx: Ctx,
    _: Viewer,
    host: Text = None,
    metric: Text = None,
    within: Annotated[Horizon, Query(description="Horizon of `p_within` and the order.")] = "24h",
    min_probability: Annotated[float, Query(ge=0, le=1)] = 0.0,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    """The newest forecast per series, riskiest first (P(exhaustion within `within`))."""
    # On the event loop: the cached table is filtered in memory and its rows serialized
    # once per prediction run; the store is asked (in a thread) at most once a second
    # whether a new run has landed.
    table = ctx.predictions.fresh()
    if table is None:
        table = await run_in_threadpool(ctx.predictions.get)
    picked = table.select(within, host, metric, min_probability)
    now = ctx.clock()
    items = [table.row_json(int(i), within, now) for i in picked[offset : offset + limit]]
    return Response(page_json(len(picked), limit, offset, items), media_type="application/json")


def _history(
    ctx: ApiContext, series_id: int, span: timedelta, points: int, worst: str
) -> pd.DataFrame:
    step = max(int(span.total_seconds() // points), 1)
    return ctx.store.query(
        f"""WITH raw AS (SELECT ts, value FROM samples WHERE series_id = $1),
                old AS (SELECT bucket AS ts, {worst} AS value FROM samples_5m
                        WHERE series_id = $1
                          AND bucket < coalesce((SELECT min(ts) FROM raw), TIMESTAMP '9999-12-31')),
                every AS (SELECT * FROM raw UNION ALL SELECT * FROM old),
                last AS (SELECT max(ts) AS last FROM every)
            SELECT time_bucket(INTERVAL '{step} seconds', e.ts) AS ts, {worst}(e.value) AS value
            FROM every e, last WHERE e.ts > last.last - $2::INTERVAL
            GROUP BY 1 ORDER BY 1""",
        [series_id, span],
    )


def _path(
    prediction: dict[str, Any], fill0: float, capacity: float | None, direction: str
) -> list[ForecastPoint]:
    """Straight lines from the last fill to the threshold at eta, eta_lo and eta_hi."""
    origin, eta = prediction["origin"], prediction["eta"]
    if eta is None:
        return []
    threshold = prediction["threshold"]
    fast = prediction["eta_lo"] or eta
    slow = prediction["eta_hi"] or eta
    end = max(eta, slow)
    if end <= origin:
        end = origin
    n = 40 if end > origin else 1
    times = [origin + (end - origin) * (i / max(n - 1, 1)) for i in range(n)]

    def line(reach: Any) -> np.ndarray:
        span = (reach - origin).total_seconds()
        elapsed = np.array([(t - origin).total_seconds() for t in times])
        if span <= 0:
            return np.full(len(times), threshold)
        out: np.ndarray = np.minimum(fill0 + (threshold - fill0) * elapsed / span, threshold)
        return out

    mid, lo_fill, hi_fill = line(eta), line(slow), line(fast)

    def raw(fill: float) -> float | None:
        if capacity is None:
            return None
        return number(capacity * (1 - fill) if direction == "down" else capacity * fill)

    out = []
    for t, f, a, b in zip(times, mid, lo_fill, hi_fill, strict=True):
        bounds = [v for v in (raw(a), raw(b)) if v is not None]
        out.append(
            ForecastPoint(
                ts=t,
                value=raw(f),
                lo=min(bounds) if bounds else None,
                hi=max(bounds) if bounds else None,
                fill=float(f),
                fill_lo=float(min(a, b)),
                fill_hi=float(max(a, b)),
            )
        )
    return out


@router.get(
    "/series/{series_id}/forecast",
    response_model=SeriesForecast,
    responses={404: {"model": ErrorOut}},
)
def series_forecast(
    ctx: Ctx,
    _: Viewer,
    series_id: Annotated[int, Path(ge=1, le=BIGINT)],
    history: Annotated[
        str, Query(pattern=DURATION, description="History before the last sample (≤ 400d).")
    ] = "24h",
    points: Annotated[int, Query(ge=10, le=2000, description="Most history points.")] = 300,
) -> SeriesForecast:
    """One series for a chart: recent history, the newest forecast, its path and 80 % band."""
    span = duration(history, timedelta(days=400))
    rows = ctx.store.query(
        "SELECT host, metric, labels, unit, capacity FROM series WHERE series_id = ?", [series_id]
    ).to_dict("records")
    if not rows:
        raise HTTPException(404, f"no series with id {series_id}")
    series = rows[0]
    metric = str(series["metric"])
    direction = direction_for(metric)
    capacity = number(series["capacity"])
    frame = _history(ctx, series_id, span, points, "min" if direction == "down" else "max")
    values = frame["value"].to_numpy("float64")
    fills = to_fill_ratio(values, capacity, direction) if capacity else np.full(len(values), np.nan)
    table: ForecastTable = ctx.predictions.get()
    index = table.series_index.get(series_id)
    # Only a series that still reports has a current forecast (the table holds no other).
    prediction = table.row(index, "24h", ctx.clock()) if index is not None else None
    fill0 = next((float(f) for f in fills[::-1] if np.isfinite(f)), None)
    path = (
        _path(prediction, fill0, capacity, direction)
        if prediction is not None and fill0 is not None
        else []
    )
    capacities = ctx.store.capacity_history(series_id)
    return SeriesForecast(
        series_id=series_id,
        host=str(series["host"]),
        metric=metric,
        labels=parse_labels(series["labels"]),
        unit=str(series["unit"]),
        capacity=capacity,
        direction=direction,
        eta=prediction["eta"] if prediction else None,
        eta_lo=prediction["eta_lo"] if prediction else None,
        eta_hi=prediction["eta_hi"] if prediction else None,
        prediction=Forecast(**prediction) if prediction else None,
        history=[
            HistoryPoint(ts=utc(t), value=number(v), fill=number(f))
            for t, v, f in zip(frame["ts"], values, fills, strict=True)
        ],
        forecast=path,
        capacity_history=[
            CapacityPoint(ts=utc(t), capacity=number(c))
            for t, c in zip(capacities["ts"], capacities["capacity"], strict=True)
        ],
    )


# -- anomalies ---------------------------------------------------------------------------


@router.get("/anomalies", response_model=Page[Anomaly])
def anomalies(
    ctx: Ctx,
    _: Viewer,
    series_id: Annotated[int | None, Query(ge=1, le=BIGINT)] = None,
    host: Text = None,
    metric: Text = None,
    min_score: Annotated[float, Query(ge=0, le=1)] = 0.5,
    since: Annotated[UtcNaive | None, Query(description="Only points at or after.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Scored points at or above ``min_score``, newest first."""
    where = """WHERE a.score >= $1 AND ($2::BIGINT IS NULL OR a.series_id = $2)
               AND ($3::VARCHAR IS NULL OR s.host = $3) AND ($4::VARCHAR IS NULL OR s.metric = $4)
               AND ($5::TIMESTAMP IS NULL OR a.ts >= $5)"""
    params: list[Any] = [min_score, series_id, host, metric, since]
    total = int(
        ctx.store._run(
            f"SELECT count(*) FROM anomaly_scores a JOIN series s USING (series_id) {where}",
            params,
        )[0][0]
    )
    frame = ctx.store.query(
        f"""SELECT a.made_at, a.series_id, s.host, s.metric, s.labels, a.ts, a.value, a.score,
                   a.model
            FROM anomaly_scores a JOIN series s USING (series_id) {where}
            ORDER BY a.ts DESC, a.series_id LIMIT $6 OFFSET $7""",
        [*params, limit, offset],
    )
    items = [
        {
            "series_id": int(r["series_id"]),
            "host": str(r["host"]),
            "metric": str(r["metric"]),
            "labels": parse_labels(r["labels"]),
            "ts": utc(r["ts"]),
            "value": number(r["value"]),
            "score": number(r["score"]),
            "model": str(r["model"]),
            "made_at": utc(r["made_at"]),
        }
        for r in frame.to_dict("records")
    ]
    return {"total": total, "limit": limit, "offset": offset, "items": items}


# -- KPIs and maintenance -------------------------------------------------------------------


@router.get("/kpis", response_model=Kpis)
def kpis(
    ctx: Ctx,
    _: Viewer,
    window: Annotated[
        str, Query(pattern=DURATION, description="KPI window before now (≤ 3650d).")
    ] = "30d",
) -> dict[str, Any]:
    """The KPIs from the audit log over ``window`` (see `autofix kpi`)."""
    from autofix.kpi import compute_kpis

    span = duration(window, timedelta(days=3650))
    out = compute_kpis(
        ctx.store, ctx.clock(), span, manual_mttr=ctx.settings.kpi_manual_mttr
    ).as_dict()
    out["now"] = utc(out["now"])
    return {k: number(v) if isinstance(v, float) else v for k, v in out.items()}


@router.get("/maintenance", response_model=Page[MaintenanceTask])
def maintenance(
    ctx: Ctx,
    _: Viewer,
    state: TaskState | None = None,
    target: Text = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Preventive maintenance tasks with their state, oldest first."""
    tasks = [t for t in ctx.maintenance.tasks(state) if target is None or t["target"] == target]
    page = tasks[offset : offset + limit]
    for task in page:
        for key in ("due_by", "window_start", "window_end", "created_at", "updated_at"):
            task[key] = utc(task[key])
    return {"total": len(tasks), "limit": limit, "offset": offset, "items": page}
