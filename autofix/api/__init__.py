"""The HTTP API: FastAPI over the store and executor of the process that runs the jobs.

``create_app(settings, store)`` builds the app; ``autofix serve`` runs it with uvicorn
on a thread beside the scheduler (``autofix.api.server``), sharing the one writable
store. OpenAPI is at ``/openapi.json``.

    GET  /healthz, /readyz, /metrics                  open (/metrics: AUTOFIX_API_METRICS_AUTH)
    GET  /docs                                        open (Swagger UI, shipped offline)
    GET  /api/v1/forecasts, /series/{id}/forecast,
         /anomalies, /fixes, /fixes/{id}, /kpis,
         /maintenance, /decisions, /escalations,
         /jobs, /pause, /silences, /whoami            viewer or operator token
    POST /api/v1/fixes, /fixes/{id}/approve|reject|rollback|label,
         /jobs/{job}/run, /pause, /resume, /silences,
         /silences/{id}/expire, /alerts/alertmanager  operator token
    POST /api/v1/cli                                  the CLI on another host (not in OpenAPI)

Errors are JSON ``{"detail": ...}``: 401/403 (token, role), 404 (unknown id), 409 (the
fix's state does not allow it), 413 (body over AUTOFIX_API_MAX_BODY), 422 (validation),
503 (the store failed). Nothing an API caller sends reaches a shell or a path.

The app itself is built in ``autofix.api.app``; importing this package costs nothing
(the API front process, ``autofix.api.front``, imports only what it serves with).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autofix.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # The app pulls in pandas, DuckDB and the jobs: imported on first use, so the API
    # front process (which imports autofix.api.front) starts in a fraction of a second.
    if name == "create_app":
        from autofix.api.app import create_app

        return create_app
    raise AttributeError(f"module 'autofix.api' has no attribute {name!r}")
