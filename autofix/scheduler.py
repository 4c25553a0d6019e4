"""The scheduler behind ``autofix serve``: APScheduler with every enabled job of a pipeline."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from autofix.heartbeat import JOB_ID as HEARTBEAT
from autofix.heartbeat import Heartbeat
from autofix.pipeline import JOB_NAMES, Pipeline

log = logging.getLogger(__name__)


class JobHost(Protocol):
    """What the scheduler drives: ``autofix.jobs.Service`` is one."""

    @property
    def pipeline(self) -> Pipeline: ...

    def run_job(self, name: str) -> object: ...

    def job_skipped(self, name: str) -> None: ...


def build_scheduler(
    service: JobHost, only: set[str] | None = None, heartbeat: Heartbeat | None = None
) -> Any:
    """An APScheduler BackgroundScheduler with every enabled job of the pipeline.

    One instance of a job at a time; a run missed while the previous one was still going
    is coalesced into a single late run; failures are recorded by ``run_job``. With a
    ``heartbeat``, its ``beat`` is a job too, on an executor of its own (a long job cannot
    delay it; a wedged scheduler stops it: see ``autofix.heartbeat``).
    """
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=4)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        timezone="UTC",
    )
    for name in JOB_NAMES:
        spec = service.pipeline.job(name)
        if not spec.enabled or (only is not None and name not in only):
            continue
        trigger: Any
        if spec.every is not None:
            trigger = IntervalTrigger(seconds=spec.every.total_seconds(), timezone="UTC")
            first = datetime.now(UTC)  # interval jobs start at once
        else:
            assert spec.cron is not None
            trigger = CronTrigger.from_crontab(spec.cron, timezone="UTC")
            first = None
        scheduler.add_job(
            service.run_job, trigger, args=[name], id=name, name=name, next_run_time=first
        )
    if heartbeat is not None:
        scheduler.add_executor(ThreadPoolExecutor(max_workers=1), HEARTBEAT)
        scheduler.add_job(
            heartbeat.beat,
            IntervalTrigger(seconds=heartbeat.interval, timezone="UTC"),
            id=HEARTBEAT,
            name=HEARTBEAT,
            executor=HEARTBEAT,
            next_run_time=datetime.now(UTC),
        )

    def skipped(event: JobEvent) -> None:
        log.debug("job %s skipped: the previous run is still going", event.job_id)
        service.job_skipped(event.job_id)

    scheduler.add_listener(skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
    return scheduler


__all__ = ["JobHost", "build_scheduler"]
