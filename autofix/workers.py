"""Model work off the service's interpreter: fits, scoring, rules and training in workers.

``autofix serve`` answers the API on a thread of the process that owns the store. Python
runs one thread at a time per interpreter, so a forecaster fitting 10,000 series on a job
thread (or the rules evaluated over them: pure, but pandas-heavy) would make every API
request wait for the GIL. ``ModelWorkers`` sends that work to a process pool instead
(spawned, not forked: the service has threads and a DuckDB connection a fork must not
copy); the job thread only waits on a pipe. The store stays in the owner process: a
worker gets the frames it needs and returns results, and never opens the DuckDB file.

``InlineModelWork`` does the same work on the calling thread: for ``autofix run JOB``,
the notebooks and tests, where no API shares the interpreter and a process start would
be wasted.

>>> work = InlineModelWork()
>>> import pandas as pd
>>> frame = pd.DataFrame({"series_id": [1] * 3, "ts": pd.date_range("2026-01-01", periods=3,
...                       freq="min"), "value": [1.0, 1.0, 9.0]})
>>> len(work.score(frame))
3
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from autofix.errors import AutofixError

if TYPE_CHECKING:
    from datetime import datetime

    from autofix.pipeline import Pipeline
    from autofix.policy import Observations, RuleDecision
    from autofix.training import TrainResult

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Niceness a worker adds to its own: model work yields the CPU to the API's requests.
WORKER_NICE = 5


class ModelWork(Protocol):
    """Where the service's model work runs (a process pool, or the calling thread)."""

    def forecast(self, model: Any, frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
        """``model.fit(frame).predict(threshold)``."""

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Causal anomaly scores of ``series_id, ts, value`` rows, one per row."""

    def train(self, models_dir: Path, scenarios: Path) -> TrainResult:
        """Backtest, log to MLflow and maybe promote (``autofix.training``)."""

    def champion(self, models_dir: Path) -> tuple[Any, str, str]:
        """(estimator, name, version) predictions are made with."""

    def decide(
        self, pipeline: Pipeline, obs: Observations, now: datetime, recent: dict[str, datetime],
        default_mode: str,
    ) -> tuple[list[RuleDecision], set[str]]:  # fmt: skip
        """``autofix.policy.decide`` over the pipeline's rules: (decisions, holding keys)."""

    def close(self) -> None:
        """Stop the workers (a no-op inline)."""


# -- the work itself (module-level functions: a worker process imports them by name) -----


def _forecast(model: Any, frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    result: pd.DataFrame = model.fit(frame).predict(threshold)
    return result


def _score(frame: pd.DataFrame) -> np.ndarray:
    from autofix.models.anomaly import RobustScorer

    return np.asarray(RobustScorer().fit_score(frame), dtype="float64")


def _train(models_dir: Path, scenarios: Path) -> TrainResult:
    from autofix.training import train_and_register

    return train_and_register(models_dir, scenarios)


def _champion(models_dir: Path) -> tuple[Any, str, str]:
    from autofix.training import champion_or_default

    return champion_or_default(models_dir)


def _decide(
    pipeline: Pipeline, obs: Observations, now: datetime, recent: dict[str, datetime],
    default_mode: str,
) -> tuple[list[RuleDecision], set[str]]:  # fmt: skip
    from autofix.policy import decide

    holding: set[str] = set()
    made = decide(pipeline.rules, pipeline, obs, now, recent, default_mode, holding=holding)
    return made, holding


def _pid() -> int:
    return os.getpid()


def _start_worker(level: str, fmt: str) -> None:
    """In each worker: lower priority, log like the service (its stderr is the service's).

    A Ctrl-C in the terminal reaches the whole process group: the service shuts its
    workers down itself, so a worker ignores it (no KeyboardInterrupt traceback each).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Not permitted: work at the same priority rather than not at all.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)
    from autofix.logs import configure

    configure(level, fmt)  # type: ignore[arg-type]


class InlineModelWork:
    """The model work on the calling thread."""

    def forecast(self, model: Any, frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
        return _forecast(model, frame, threshold)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return _score(frame)

    def train(self, models_dir: Path, scenarios: Path) -> TrainResult:
        return _train(models_dir, scenarios)

    def champion(self, models_dir: Path) -> tuple[Any, str, str]:
        return _champion(models_dir)

    def decide(
        self, pipeline: Pipeline, obs: Observations, now: datetime, recent: dict[str, datetime],
        default_mode: str,
    ) -> tuple[list[RuleDecision], set[str]]:  # fmt: skip
        return _decide(pipeline, obs, now, recent, default_mode)

    def close(self) -> None:
        return None


class ModelWorkers:
    """The model work in ``processes`` spawned worker processes, started on first use.

    A worker that dies (killed, out of memory) fails the call in progress with an
    ``AutofixError`` naming it, and the next call starts a new pool: one lost run, not a
    service without models.
    """

    def __init__(self, processes: int = 1, *, log_level: str = "INFO", log_format: str = "json"):
        if processes < 1:
            raise ValueError(f"processes must be at least 1, not {processes}")
        self.processes = processes
        self._initargs = (log_level, log_format)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        #: Calls sent to a worker (what the functional tests and /metrics can check).
        self.calls = 0

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=self._initargs,
                )
            return self._pool

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        pool = self._executor()
        try:
            future: Future[T] = pool.submit(fn, *args)
            self.calls += 1
            return future.result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise AutofixError(
                f"model worker: the process running {what} died; the next run starts a new one"
            ) from None

    def pid(self) -> int:
        """The id of the worker process that answers (starting the pool if need be)."""
        return self._call("a ping", _pid)

    def forecast(self, model: Any, frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
        return self._call("a forecast", _forecast, model, frame, threshold)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return self._call("anomaly scoring", _score, frame)

    def train(self, models_dir: Path, scenarios: Path) -> TrainResult:
        return self._call("training", _train, models_dir, scenarios)

    def champion(self, models_dir: Path) -> tuple[Any, str, str]:
        return self._call("loading the champion model", _champion, models_dir)

    def decide(
        self, pipeline: Pipeline, obs: Observations, now: datetime, recent: dict[str, datetime],
        default_mode: str,
    ) -> tuple[list[RuleDecision], set[str]]:  # fmt: skip
        return self._call("the rules", _decide, pipeline, obs, now, recent, default_mode)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["InlineModelWork", "ModelWork", "ModelWorkers"]
