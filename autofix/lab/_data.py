"""The store and the labelled histories, as notebooks read them."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from autofix.backtest.forecast import LabelledSeries, load_scenarios
from autofix.config import Settings, load_settings
from autofix.data.recorded import load_recorded
from autofix.data.scenarios import write_suite
from autofix.errors import InputError
from autofix.models.base import direction_for, to_fill_ratio
from autofix.store import MetricStore

log = logging.getLogger(__name__)

Size = Literal["small", "full"]

#: What each notebook size reads: ``small`` is generated in memory (every scenario, a
#: week, so the default forecaster has its three days of daily peaks after the warm-up);
#: ``full`` is the committed suite in ``data/samples`` (14 days), as `autofix backtest`.
SIZES: dict[str, dict[str, Any]] = {
    "small": {"days": 7.0, "seed": 0},
    "full": {"days": 14.0, "seed": 0, "directory": Path("data/samples")},
}

#: Columns of ``load_series``.
SERIES_COLUMNS = (
    "series_id",
    "host",
    "metric",
    "labels",
    "unit",
    "ts",
    "value",
    "capacity",
    "fill",
)


def settings() -> Settings:
    """The effective settings (``AUTOFIX_*`` variables, ``.env``, ``autofix.toml``)."""
    return load_settings()


def use_project_dir(start: Path | None = None) -> Path:
    """Make the autofix checkout the working directory; return it.

    Jupyter starts a kernel in the notebook's folder; the settings' relative paths
    (``data/``, ``models/``, ``pipelines/``) and ``.env`` mean the checkout root. The
    nearest directory at or above ``start`` (default: the working directory) holding
    ``pyproject.toml`` and ``pipelines/`` is used; without one nothing changes.
    """
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "pipelines").is_dir():
            os.chdir(candidate)
            return candidate
    return here


# -- the store -------------------------------------------------------------------------


def open_store(
    path: str | Path | None = None,
    snapshot: str | Path | None = None,
    *,
    fallback: Size | None = None,
) -> MetricStore:
    """Open the metric store read-only, never with a raw lock error.

    ``path`` and ``snapshot`` default to ``AUTOFIX_DB_PATH`` and ``AUTOFIX_SNAPSHOT_DIR``.
    The file is read when it is free; while another process (``autofix serve``) writes
    it, the Parquet snapshot is read instead; when neither can be read the error says
    what to do. With ``fallback``, a missing or empty store gives the scenario suite of
    that size in memory instead (logged), so a notebook has something to show.
    """
    if path is None or snapshot is None:
        cfg = settings()
        path = cfg.db_path if path is None else path
        snapshot = cfg.snapshot_dir if snapshot is None else snapshot
    path, snapshot = Path(path), Path(snapshot)
    has_snapshot = (snapshot / "manifest.json").is_file()
    if path.exists():
        store = MetricStore.open_reader(path, snapshot)
    elif has_snapshot:
        store = MetricStore.open_snapshot(snapshot)
    elif fallback is not None:
        log.warning("no metric store at %s: showing the %s scenario suite", path, fallback)
        return scenario_suite(fallback).to_store()
    else:
        store = MetricStore.open_reader(path, snapshot)  # the store's own clear error
    if fallback is not None and store.count_samples() == 0:
        log.warning("%s holds no samples: showing the %s scenario suite", path, fallback)
        store.close()
        return scenario_suite(fallback).to_store()
    return store


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _since(store: MetricStore, since: datetime | timedelta | str | None) -> datetime | None:
    if since is None:
        return None
    if isinstance(since, timedelta):
        newest = store.query("SELECT max(ts) AS ts FROM samples")["ts"].iloc[0]
        return None if pd.isna(newest) else pd.Timestamp(newest).to_pydatetime() - since
    stamp = pd.Timestamp(since)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_pydatetime()


def load_series(
    store: MetricStore,
    metric: str | Sequence[str] | None = None,
    host: str | Sequence[str] | None = None,
    match: Mapping[str, str] | None = None,
    since: datetime | timedelta | str | None = None,
    until: datetime | str | None = None,
) -> pd.DataFrame:
    """Raw samples as a long frame with each series' identity (``SERIES_COLUMNS``).

    ``capacity`` is the capacity in force at each sample (a grown disk counts from the
    moment it was grown) and ``fill`` the fill ratio the forecasters see (1.0 = full),
    where the series has a capacity. ``match`` keeps series whose labels include every
    pair; ``since`` is a time or a duration before the newest sample.

        >>> load_series(store, "node_filesystem_avail_bytes", match={"mountpoint": "/"})
        ... # doctest: +SKIP
    """
    clauses: list[str] = []
    params: list[Any] = []
    metrics, hosts = _as_list(metric), _as_list(host)
    if metrics is not None:
        clauses.append("list_contains(?, s.metric)")
        params.append(metrics)
    if hosts is not None:
        clauses.append("list_contains(?, s.host)")
        params.append(hosts)
    for key, value in (match or {}).items():
        clauses.append("json_extract_string(s.labels, ?) = ?")
        params += ["$." + json.dumps(str(key)), str(value)]
    start = _since(store, since)
    if start is not None:
        clauses.append("x.ts >= ?")
        params.append(start)
    if until is not None:
        clauses.append("x.ts <= ?")
        params.append(pd.Timestamp(until).to_pydatetime())
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    frame = store.query(
        f"""SELECT x.series_id, s.host, s.metric, s.labels, s.unit, x.ts, x.value,
                   coalesce(c.capacity, s.capacity) AS capacity
            FROM samples x JOIN series s USING (series_id)
            ASOF LEFT JOIN series_capacity c ON c.series_id = x.series_id AND x.ts >= c.ts
            {where} ORDER BY x.series_id, x.ts""",
        params,
    )
    return with_fill(frame)


def with_fill(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``fill`` (value as a fill ratio of ``capacity``; NaN without a capacity)."""
    out = frame.copy()
    fill = np.full(len(out), np.nan)
    if len(out):
        capacity = out["capacity"].to_numpy("float64")
        value = out["value"].to_numpy("float64")
        for metric in out["metric"].unique():
            rows = (out["metric"] == metric).to_numpy()
            fill[rows] = to_fill_ratio(value[rows], capacity[rows], direction_for(str(metric)))
    out["fill"] = fill
    return out


def find_gaps(history: pd.DataFrame, *, factor: float = 3.0) -> pd.DataFrame:
    """Holes in each series: two samples further apart than ``factor`` x its median step.

    Returns ``series_id, host, metric, labels, start`` (last sample before the hole),
    ``end`` (first sample after), ``duration`` and ``step`` (the median step).
    """
    rows: list[dict[str, Any]] = []
    for series_id, group in history.groupby("series_id", sort=True):
        ts = group["ts"].sort_values().to_numpy("datetime64[ns]")
        if len(ts) < 3:
            continue
        dt = np.diff(ts)
        step = np.median(dt)
        for i in np.flatnonzero(dt > step * factor):
            first = group.iloc[0]
            rows.append(
                {
                    "series_id": series_id,
                    "host": first["host"],
                    "metric": first["metric"],
                    "labels": first["labels"],
                    "start": pd.Timestamp(ts[i]),
                    "end": pd.Timestamp(ts[i + 1]),
                    "duration": pd.Timedelta(dt[i]),
                    "step": pd.Timedelta(step),
                }
            )
    columns = ["series_id", "host", "metric", "labels", "start", "end", "duration", "step"]
    return pd.DataFrame(rows, columns=columns)


def capacity_changes(store: MetricStore) -> pd.DataFrame:
    """Every capacity change of a series whose capacity changed (a disk grown, RAM added)."""
    return store.query(
        """SELECT c.series_id, s.host, s.metric, s.labels, c.ts, c.capacity,
                  lag(c.capacity) OVER (PARTITION BY c.series_id ORDER BY c.ts) AS previous
           FROM series_capacity c JOIN series s USING (series_id)
           WHERE c.series_id IN (SELECT series_id FROM series_capacity GROUP BY 1
                                 HAVING count(*) > 1)
           ORDER BY c.series_id, c.ts"""
    )


# -- labelled histories ----------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    """A labelled history: samples in import format and the ground truth of each series.

    ``truth`` has one row per series: ``scenario, host, metric, labels, direction,
    exhaustion_time`` (NaT when it never fills), ``slowdown_windows`` (a list of
    ``(start, end)``), ``capacity_changes``, ``gaps``, ``traps`` and ``description``.
    ``series`` are the forecastable series for ``run_backtest``.
    """

    name: str
    samples: pd.DataFrame
    truth: pd.DataFrame
    series: list[LabelledSeries] = field(default_factory=list)

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.samples["timestamp"].min())

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.samples["timestamp"].max())

    def to_store(self) -> MetricStore:
        """A new in-memory store holding the samples (what ``autofix import`` would write)."""
        store = MetricStore(":memory:")
        store.write(self.samples.rename(columns={"timestamp": "ts"}))
        return store


def _stamp(text: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _windows(spans: Any) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    return [(_stamp(a), _stamp(b)) for a, b in spans or []]


def truth_frame(labels_truth: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per series from ``labels_truth`` documents (the generator's layout)."""
    rows = []
    for doc in labels_truth:
        for spec in doc.get("series", []):
            when = spec.get("exhaustion_time")
            rows.append(
                {
                    "scenario": doc.get("scenario", ""),
                    "host": spec["host"],
                    "metric": spec["metric"],
                    "labels": spec["labels"],
                    "direction": spec.get("direction", "none"),
                    "exhaustion_time": _stamp(when) if when else pd.NaT,
                    "slowdown_windows": _windows(spec.get("slowdown_windows")),
                    "capacity_changes": [
                        (_stamp(t), float(c)) for t, c in spec.get("capacity_changes", [])
                    ],
                    "gaps": _windows(spec.get("gaps")),
                    "traps": list(spec.get("traps", [])),
                    "description": spec.get("description", ""),
                }
            )
    return pd.DataFrame(rows)


def _read_suite(name: str, directory: Path) -> Suite:
    docs = [json.loads(p.read_text()) for p in sorted(directory.glob("*.labels.json"))]
    frames = []
    for doc in docs:
        data = directory / f"{doc['scenario']}.parquet"
        frames.append(
            pd.read_parquet(data)
            if data.exists()
            else pd.read_csv(directory / f"{doc['scenario']}.csv", parse_dates=["timestamp"])
        )
    if not frames:
        raise InputError(f"{directory}: no scenarios (see `autofix scenarios generate`)")
    samples = pd.concat(frames, ignore_index=True)
    return Suite(name, samples, truth_frame(docs), load_scenarios(directory))


def scenario_suite(size: Size = "small", *, seed: int | None = None) -> Suite:
    """The labelled scenario suite (``autofix.data.scenarios``) at a notebook size.

    ``small``: every scenario over 7 days, generated in memory (about a second);
    ``full``: the committed 14-day suite in ``data/samples`` (generated when absent, or
    when another ``seed`` is asked for).
    """
    if size not in SIZES:
        raise InputError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    spec = SIZES[size]
    seed = spec["seed"] if seed is None else seed
    directory = spec.get("directory")
    if directory is not None and seed == spec["seed"] and (directory / "suite.json").is_file():
        return _read_suite(size, directory)
    with tempfile.TemporaryDirectory(prefix="autofix-suite-") as tmp:
        write_suite(Path(tmp), seed=seed, days=spec["days"])
        return _read_suite(size, Path(tmp))


def recorded_suite(name: str = "recorded_pg", directory: Path | None = None) -> Suite:
    """A real recording from ``data/real`` (latency of a real PostgreSQL) with its labels."""
    data = load_recorded(name, directory)
    return Suite(name, data.samples, truth_frame([data.labels_truth]))


__all__ = [
    "SERIES_COLUMNS",
    "SIZES",
    "Size",
    "Suite",
    "capacity_changes",
    "find_gaps",
    "load_series",
    "open_store",
    "recorded_suite",
    "scenario_suite",
    "settings",
    "truth_frame",
    "use_project_dir",
    "with_fill",
]
