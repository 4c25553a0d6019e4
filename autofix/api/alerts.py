"""The Alertmanager webhook receiver: alerts → ``type: alert`` rules → decisions → fixes.

Alert labels are untrusted. They select a rule (``alertname`` and the rule's ``match``)
and, through the ``target`` label, only a target the pipelines file declares; they never
reach a shell, a path or an action parameter (those come from the rule). An alert whose
``target`` label names anything else is refused and nothing is recorded. A body over
``AUTOFIX_API_MAX_BODY`` is 413 and a malformed one 422, before anything runs.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from autofix.api.auth import Operator
from autofix.api.context import ApiContext, context, utc
from autofix.api.limits import known_query
from autofix.api.models import AlertmanagerWebhook, AlertsResult, ErrorOut
from autofix.policy import Alert

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], dependencies=[Depends(known_query)])


@router.post(
    "/alertmanager",
    response_model=AlertsResult,
    responses={
        400: {"model": ErrorOut, "description": "The body is not JSON text."},
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        413: {"model": ErrorOut, "description": "Body over AUTOFIX_API_MAX_BODY."},
    },
)
def alertmanager(
    ctx: Annotated[ApiContext, Depends(context)], who: Operator, body: AlertmanagerWebhook
) -> dict[str, Any]:
    """Receive an Alertmanager webhook (version 4); firing alerts go through the alert rules.

    Every alert gets a result per matching rule: ``decided`` (recorded, fixes run through
    the gates as for any rule), ``repeat``, ``ignored`` or ``refused``, with the reason.
    """
    alerts = [Alert(a.status, dict(a.labels), a.starts_at, a.fingerprint) for a in body.alerts]
    with ctx.operator_lock:
        results = ctx.service.handle_alerts(alerts, actor=who.actor)
    for result in results:
        result["fixes"] = [
            {**fix, "requested_at": utc(fix["requested_at"]), "updated_at": utc(fix["updated_at"])}
            for fix in result["fixes"]
        ]
        if result["outcome"] == "refused":
            log.warning("%s: alert refused: %s", who.actor, result["reason"])
    return {
        "received": len(alerts),
        "firing": sum(a.status == "firing" for a in alerts),
        "decided": sum(r["outcome"] == "decided" for r in results),
        "results": results,
    }
