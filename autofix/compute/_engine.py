"""Where partition tasks run: in process, a process pool, a LocalCluster or a Dask cluster.

``Compute.map`` runs one function over many partitions and returns their results in
order. A partition whose task raises is run again with its fallback arguments (a simpler
model), logged; one that fails that too is logged and left out (``None``): a batch never
dies. A Dask worker that dies mid-run costs nothing but time: the scheduler gives its
tasks to another worker (they only read Parquet). A pool whose process dies is rebuilt
and the lost tasks are run again once.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from autofix.errors import ComputeError

log = logging.getLogger(__name__)

Kind = Literal["inline", "pool", "local", "dask"]
#: ``(partitions done, partitions in total)``.
Progress = Callable[[int, int], None]
#: Partition index → arguments of its fallback task, or None for no fallback.
Fallback = Callable[[int], tuple[Any, ...] | None]


@dataclass(frozen=True)
class MapResult:
    """What ``Compute.map`` did: results in partition order (None: failed twice)."""

    results: list[Any]
    kind: Kind
    fallbacks: list[int]
    failed: list[int]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "partitions": len(self.results),
            "fallbacks": len(self.fallbacks),
            "failed": len(self.failed),
            "seconds": round(self.seconds, 3),
        }


class Compute:
    """Runs partition tasks where the settings say; one per process, closed at exit.

    - ``scheduler`` (``AUTOFIX_DASK_SCHEDULER``): every map goes to that Dask cluster.
    - else a job of at least ``local_series`` series starts a ``LocalCluster`` of
      ``workers`` processes (kept until ``close``);
    - else with ``offload`` (``autofix serve``) a process pool of ``workers`` processes,
      so the API's interpreter never runs a fit;
    - else in this process (``autofix predict`` on a small store).

    ``directory`` holds the partitioned Parquet exports of a run (``workdir``): every
    worker must be able to read it (a shared filesystem for a remote cluster).
    """

    def __init__(
        self,
        *,
        scheduler: str | None = None,
        directory: Path = Path("data/compute"),
        partition_series: int = 5000,
        local_series: int = 20_000,
        workers: int = 2,
        worker_memory: str = "2GB",
        offload: bool = False,
    ) -> None:
        self.scheduler = scheduler
        self.directory = directory
        self.partition_series = partition_series
        self.local_series = local_series
        self.workers = max(1, workers)
        self.worker_memory = worker_memory
        self.offload = offload
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._client: Any | None = None
        self._cluster: Any | None = None

    @classmethod
    def from_settings(cls, settings: Any, *, offload: bool = False) -> Compute:
        return cls(
            scheduler=settings.dask_scheduler,
            directory=settings.compute_dir,
            partition_series=settings.compute_partition_series,
            local_series=settings.compute_local_series,
            workers=settings.compute_workers,
            worker_memory=settings.compute_worker_memory,
            offload=offload,
        )

    # -- choosing ------------------------------------------------------------------------

    def kind_for(self, series: int) -> Kind:
        """Where a job over ``series`` series runs."""
        if self.scheduler:
            return "dask"
        if series >= self.local_series:
            return "local"
        return "pool" if self.offload else "inline"

    def partitions(self, series: int) -> int:
        """How many partitions a job over ``series`` series is cut into (at least one)."""
        return max(1, math.ceil(series / max(1, self.partition_series)))

    @contextmanager
    def workdir(self, name: str) -> Iterator[Path]:
        """A fresh directory for one run's exports, removed afterwards."""
        path = self.directory / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise ComputeError(
                f"{self.directory}: cannot make a work directory (AUTOFIX_COMPUTE_DIR): "
                f"{exc.strerror or exc}"
            ) from None
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    # -- running -------------------------------------------------------------------------

    def map(
        self,
        fn: Callable[..., Any],
        args: Sequence[tuple[Any, ...]],
        *,
        kind: Kind,
        fallback: Fallback | None = None,
        label: str = "task",
        progress: Progress | None = None,
    ) -> MapResult:
        """``fn(*a)`` for each ``a`` in ``args`` on the ``kind`` backend, in order."""
        started = time.monotonic()
        results: list[Any] = [None] * len(args)
        fallbacks: list[int] = []
        failed: list[int] = []
        done = 0
        if progress:
            progress(0, len(args))

        def settle(index: int, error: BaseException | None, value: Any) -> None:
            nonlocal done
            if error is None:
                results[index] = value
            else:
                retry = fallback(index) if fallback is not None and index not in fallbacks else None
                if retry is not None:
                    log.warning(
                        "%s partition %d failed (%s); running its fallback",
                        label,
                        index,
                        _why(error),
                    )
                    fallbacks.append(index)
                    try:
                        results[index] = self._one(fn, retry, kind)
                    except Exception as again:
                        log.error(
                            "%s partition %d: fallback failed too: %s", label, index, _why(again)
                        )
                        failed.append(index)
                else:
                    log.error("%s partition %d failed: %s", label, index, _why(error))
                    failed.append(index)
            done += 1
            if progress:
                progress(done, len(args))

        for index, error, value in self._run_all(fn, args, kind):
            settle(index, error, value)
        return MapResult(results, kind, fallbacks, failed, time.monotonic() - started)

    def call(self, fn: Callable[..., Any], *args: Any, kind: Kind | None = None) -> Any:
        """One call of ``fn`` off this interpreter when offloading (a pool process), else here.

        For work that is one indivisible job (a training run that logs to MLflow).
        """
        from autofix.compute.tasks import call

        chosen: Kind = kind or ("pool" if self.offload else "inline")
        if chosen in ("dask", "local"):
            chosen = "pool" if self.offload else "inline"
        return self._one(call, (fn, *args), chosen)

    def _one(self, fn: Callable[..., Any], args: tuple[Any, ...], kind: Kind) -> Any:
        for _index, error, value in self._run_all(fn, [args], kind):
            if error is not None:
                raise error
            return value
        raise AssertionError("unreachable")

    def _run_all(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], kind: Kind
    ) -> Iterator[tuple[int, BaseException | None, Any]]:
        if kind == "inline":
            for index, a in enumerate(args):
                try:
                    yield index, None, fn(*a)
                except Exception as exc:
                    yield index, exc, None
        elif kind == "pool":
            yield from self._run_pool(fn, args)
        else:
            yield from self._run_dask(fn, args, kind)

    # -- a process pool -----------------------------------------------------------------------

    def _get_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: forking a process that runs uvicorn, APScheduler and DuckDB
                # threads can copy a held lock into the child.
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    max_tasks_per_child=100,
                )
            return self._pool

    def _reset_pool(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def _run_pool(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, BaseException | None, Any]]:
        pending = list(range(len(args)))
        for attempt in range(2):
            pool = self._get_pool()
            futures: dict[Future[Any], int] = {pool.submit(fn, *args[i]): i for i in pending}
            lost: list[int] = []
            for future in as_completed(futures):
                index = futures[future]
                try:
                    value = future.result()
                except BrokenProcessPool as exc:
                    if attempt == 0:
                        lost.append(index)
                        continue
                    yield index, exc, None
                except Exception as exc:
                    yield index, exc, None
                else:
                    yield index, None, value
            if not lost:
                return
            log.warning("a compute process died; running its %d task(s) again", len(lost))
            self._reset_pool(pool)
            pending = sorted(lost)

    # -- Dask --------------------------------------------------------------------------------

    def client(self, kind: Kind = "dask") -> Any:
        """The Dask client: of ``scheduler``, or of a LocalCluster started on first use."""
        with self._lock:
            if self._client is not None:
                return self._client
            from distributed import Client, LocalCluster

            try:
                if kind == "dask" and self.scheduler:
                    self._client = Client(self.scheduler, timeout="10s")  # type: ignore[no-untyped-call]
                else:
                    self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                        n_workers=self.workers,
                        threads_per_worker=1,
                        processes=True,
                        memory_limit=self.worker_memory,
                        dashboard_address=None,
                        host="127.0.0.1",
                    )
                    self._client = Client(self._cluster)  # type: ignore[no-untyped-call]
            except (OSError, TimeoutError) as exc:
                where = self.scheduler or "a LocalCluster"
                raise ComputeError(
                    f"cannot reach the Dask scheduler at {where}: {_why(exc)} "
                    "(AUTOFIX_DASK_SCHEDULER)"
                ) from None
            return self._client

    def _run_dask(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], kind: Kind
    ) -> Iterator[tuple[int, BaseException | None, Any]]:
        from distributed import as_completed as dask_completed

        client = self.client(kind)
        futures = [client.submit(fn, *a, pure=False) for a in args]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future in dask_completed(futures):  # type: ignore[no-untyped-call]
                i = index[future.key]
                try:
                    value = future.result()
                except Exception as exc:
                    yield i, exc, None
                else:
                    yield i, None, value
                future.release()
        finally:
            for future in futures:
                future.release()

    def close(self) -> None:
        """Stop the pool, the client and the LocalCluster this Compute started."""
        with self._lock:
            pool, self._pool = self._pool, None
            client, self._client = self._client, None
            cluster, self._cluster = self._cluster, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def __enter__(self) -> Compute:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["Compute", "ComputeError", "Fallback", "Kind", "MapResult", "Progress"]
