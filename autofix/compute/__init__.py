"""Model work fanned out over series partitions: in process, a pool, or Dask distributed.

The store's one writer cuts a job (forecasting the fleet, scoring its latency series,
a backtest) into partitions of at most ``AUTOFIX_COMPUTE_PARTITION_SERIES`` series,
exports each partition as Parquet (``MetricStore.export_partitions``), and maps a task
over them (``autofix.compute.tasks``); the results come back to the writer, which stores
them. Workers read Parquet, never the DuckDB file, and a task's memory grows with its
partition, not with the fleet.

Where the tasks run (``Compute.kind_for``):

- ``AUTOFIX_DASK_SCHEDULER=tcp://host:8786``: a Dask cluster you run (``dask scheduler``
  and ``dask worker`` processes on any machines that can read ``AUTOFIX_COMPUTE_DIR``);
- unset, a job of at least ``AUTOFIX_COMPUTE_LOCAL_SERIES`` series: a ``LocalCluster`` of
  ``AUTOFIX_COMPUTE_WORKERS`` processes on this machine;
- unset and smaller: in process for a one-shot command (``autofix predict``), a process
  pool in ``autofix serve`` (its API's interpreter never runs a fit).

>>> compute = Compute(partition_series=5000, local_series=20_000)
>>> compute.kind_for(10_000), compute.partitions(10_000), compute.kind_for(100_000)
('inline', 2, 'local')
"""

from __future__ import annotations

from autofix.compute._engine import Compute, ComputeError, Fallback, Kind, MapResult, Progress

__all__ = ["Compute", "ComputeError", "Fallback", "Kind", "MapResult", "Progress"]
