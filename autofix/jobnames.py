"""The names of the service's jobs (``autofix.pipeline`` validates them; the CLI lists
them in ``--help`` without importing the pipeline models)."""

JOB_NAMES = (
    "collect",
    "remediate",
    "health",
    "train",
    "maintenance",
    "report",
    "retention",
    "kpi",
    "snapshot",
)

__all__ = ["JOB_NAMES"]
