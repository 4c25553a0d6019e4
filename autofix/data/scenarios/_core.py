"""Shared machinery of the scenario generator: the context, series, registry and writers."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from autofix.collect.base import format_labels
from autofix.errors import InputError

Array = npt.NDArray[np.float64]
Process = Callable[[Array], Array]
Num = Array | float
Direction = Literal["down", "up", "none"]

COLUMNS = ("timestamp", "host", "metric", "value", "labels", "capacity")
DEFAULT_START = "2024-03-04T00:00:00"  # a Monday at midnight UTC
SCHEMA_VERSION = 1
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
GIB = float(1 << 30)
# A process that has not reached its threshold a year after the history ends is "never".
SEARCH_HORIZON = 365 * DAY

DISK_AVAIL = "node_filesystem_avail_bytes"
MEM_AVAIL = "node_memory_available_bytes"
CONTAINER_MEM = "container_memory_working_set_bytes"
PG_LATENCY = "pg_query_latency_seconds"
HTTP_REQUESTS = "http_requests_total"
_UNITS = {DISK_AVAIL: "bytes", MEM_AVAIL: "bytes", CONTAINER_MEM: "bytes",
          PG_LATENCY: "seconds", HTTP_REQUESTS: "requests"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What a builder needs: randomness, the sample grid and the scenario parameters."""

    rng: np.random.Generator
    t: Array  # seconds since start, one per sample
    step: float
    window: float  # seconds covered by the samples (n * step)
    offset: float  # seconds since midnight UTC at start, so daily cycles keep wall-clock phase
    p: Mapping[str, float]
    start: pd.Timestamp

    def iso(self, seconds: float) -> str:
        """ISO UTC text of a time given in seconds since start."""
        return _iso(self.start + pd.Timedelta(seconds=round(seconds)))

    def grid(self, seconds: float) -> float:
        """Snap a time to the sample grid (events that the truth names land on a sample)."""
        return float(round(seconds / self.step) * self.step)


@dataclass(slots=True)
class _Series:
    metric: str
    labels: dict[str, str]
    direction: Direction
    description: str
    process: Process  # noiseless value at t; defined beyond the window for extrapolation
    capacity: Process | float | None = None
    noise: float = 0.0  # largest noise of a bytes gauge, as a fraction of capacity
    traps: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # truth keys only some series have
    observed: Array | None = None  # set when the noise is not additive (latency, counters)
    keep: npt.NDArray[np.bool_] | None = None  # False where the collector was down
    counterfactual: Process | None = None  # margin had nobody intervened (disk grown)


Builder = Callable[[_Ctx], list[_Series]]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One labelled scenario: a host and the builder of its series."""

    name: str
    kind: str  # "disk" | "memory" | "latency" | "collector"
    description: str
    parameters: Mapping[str, float]
    host: str
    build: Builder = field(repr=False, compare=False)
    held_out: bool = False  # kept out of default suites (see _unseen.py)


@dataclass(frozen=True, slots=True)
class ScenarioData:
    """A generated history: import-shaped samples, the ground truth, the noiseless values."""

    scenario: Scenario
    samples: pd.DataFrame
    labels_truth: dict[str, Any]
    clean: pd.Series  # noiseless value for each row of ``samples`` (same index)


SCENARIOS: dict[str, Scenario] = {}


def _scenario(
    name: str,
    kind: str,
    host: str,
    description: str,
    parameters: dict[str, float],
    *,
    held_out: bool = False,
) -> Callable[[Builder], Builder]:
    def register(build: Builder) -> Builder:
        SCENARIOS[name] = Scenario(name, kind, description, parameters, host, build, held_out)
        return build

    return register


# -- shapes --------------------------------------------------------------------------


def _diurnal(x: Array, peak_hour: float) -> Array:
    """A daily cycle in [-1, 1] peaking at ``peak_hour`` UTC; x is seconds since midnight."""
    return np.cos(2 * np.pi * (x / DAY - peak_hour / 24))


def _diurnal_cum(x: Array | float, peak_hour: float, amp: float) -> Array:
    """Integral of ``1 + amp * diurnal`` from 0 to x: a daily-modulated rate, mean slope 1."""
    w, ph = 2 * np.pi / DAY, 2 * np.pi * peak_hour / 24
    return np.asarray(x + amp / w * (np.sin(w * np.asarray(x) - ph) + math.sin(ph)))


def _burst(t: Array, start: Num, fill: Num, hold: Num, clean: Num, size: Num) -> Array:
    """A file that grows linearly, sits, then is deleted: 0 → size → 0."""
    up = np.clip((t - start) / fill, 0.0, 1.0)
    down = np.clip((t - start - fill - hold) / clean, 0.0, 1.0)
    return size * up * (1.0 - down)


def _fs(mountpoint: str, device: str, fstype: str = "ext4") -> dict[str, str]:
    return {"device": device, "fstype": fstype, "mountpoint": mountpoint}


def _slots(ctx: _Ctx, n: int, lo: float, hi: float, dur: Array) -> Array:
    """Start times of n non-overlapping events, one per equal slot of [lo, hi) x window."""
    width = (hi - lo) * ctx.window / n
    starts = lo * ctx.window + width * np.arange(n) + ctx.rng.uniform(0, 1, n) * (width - dur)
    return np.ceil(starts / ctx.step) * ctx.step


def _frozen(t: Array, values: Array) -> Process:
    """A process known only on the sample grid (random events, nothing to extrapolate)."""
    return lambda x: np.interp(x, t, values)


# -- generation ----------------------------------------------------------------------


def _iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _step_seconds(step: str) -> float:
    try:
        seconds = pd.Timedelta(step).total_seconds()
    except ValueError as exc:
        raise InputError(f"step {step!r} is not a duration like '5min'") from exc
    if seconds <= 0:
        raise InputError(f"step {step!r} must be positive")
    return seconds


def _n_samples(days: float, step: float) -> int:
    n = round(days * DAY / step)
    if n < 12:
        raise InputError(f"days={days} at step {step:g}s gives {n} samples; need at least 12")
    return n


def _start(start: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(start)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def _capacity_at(s: _Series, t: Array) -> Array:
    if s.capacity is None:
        return np.full(t.size, np.nan)
    if callable(s.capacity):
        return np.asarray(s.capacity(t), dtype=np.float64)
    return np.full(t.size, float(s.capacity))


def _margin(s: _Series) -> Process | None:
    """Distance to exhaustion as a function of time (<= 0 means exhausted)."""
    if s.direction == "down":
        return s.process
    if s.direction == "up":
        return lambda t: _capacity_at(s, t) - s.process(t)
    return None


def _first_crossing(margin: Process, horizon: float) -> float | None:
    """First second at which ``margin`` <= 0: a 1-minute scan refined to the second."""
    coarse = np.arange(0.0, horizon + MINUTE, MINUTE)
    hit = np.flatnonzero(margin(coarse) <= 0)
    if hit.size == 0:
        return None
    if hit[0] == 0:
        return 0.0
    fine = np.arange(coarse[hit[0] - 1], coarse[hit[0]] + 1.0, 1.0)
    return float(fine[np.flatnonzero(margin(fine) <= 0)[0]])


def _observe(s: _Series, clean: Array, cap: Array, rng: np.random.Generator) -> Array:
    """Add bounded noise to a bytes gauge without letting noise alone cross 0 or capacity."""
    if s.observed is not None:
        return s.observed
    room = np.minimum(clean, cap - clean) / 2
    amplitude = np.minimum(s.noise * cap, room)
    noise = np.clip(rng.standard_normal(clean.size), -3, 3) / 3 * amplitude
    return np.clip(np.rint(clean + noise), 0.0, cap)


def generate(
    name: str,
    *,
    seed: int = 0,
    days: float = 14.0,
    step: str = "5min",
    host: str | None = None,
    start: str | pd.Timestamp = DEFAULT_START,
) -> ScenarioData:
    """Generate one scenario's samples and ground truth (``host`` overrides its default)."""
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise InputError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    step_s = _step_seconds(step)
    n = _n_samples(days, step_s)
    t0 = _start(start)
    host = host or scenario.host
    # crc32, not hash(): stable across processes, and each scenario gets its own stream.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    step_ns = round(step_s * 1e9)
    t = np.arange(n, dtype=np.float64) * step_s
    offset = (t0 - t0.normalize()).total_seconds()
    ctx = _Ctx(rng, t, step_s, n * step_s, offset, scenario.parameters, t0)
    stamps = (t0.value + np.arange(n, dtype=np.int64) * step_ns).view("datetime64[ns]")
    end = t0 + pd.Timedelta(seconds=n * step_s)

    frames, cleans, truths = [], [], []
    for s in scenario.build(ctx):
        cap = _capacity_at(s, t)
        clean = np.asarray(s.process(t), dtype=np.float64)
        if s.direction != "none":
            clean = np.clip(clean, 0.0, cap)
        value = _observe(s, clean, cap, rng)
        keep = s.keep if s.keep is not None else np.ones(n, dtype=bool)
        labels = format_labels(s.labels)
        frames.append(
            pd.DataFrame(
                {
                    "timestamp": stamps[keep],
                    "host": host,
                    "metric": s.metric,
                    "value": value[keep],
                    "labels": labels,
                    "capacity": cap[keep],
                }
            )
        )
        cleans.append(clean[keep])
        truths.append(_series_truth(s, ctx, host, labels, cap))
    samples = pd.concat(frames, ignore_index=True)
    truth = {
        "schema_version": SCHEMA_VERSION,
        "scenario": name,
        "kind": scenario.kind,
        "description": scenario.description,
        "host": host,
        "seed": seed,
        "start": _iso(t0),
        "end": _iso(end),
        "step": step,
        "step_seconds": step_s,
        "parameters": dict(scenario.parameters),
        "series": truths,
    }
    return ScenarioData(scenario, samples, truth, pd.Series(np.concatenate(cleans), name="clean"))


def _series_truth(s: _Series, ctx: _Ctx, host: str, labels: str, cap: Array) -> dict[str, Any]:
    margin = _margin(s)
    horizon = ctx.window + SEARCH_HORIZON
    crossing = _first_crossing(margin, horizon) if margin is not None else None
    counterfactual = _first_crossing(s.counterfactual, horizon) if s.counterfactual else None
    cf_time = None if counterfactual is None else ctx.iso(counterfactual)
    final_cap = float(cap[-1])
    truth: dict[str, Any] = {
        "host": host,
        "metric": s.metric,
        "labels": labels,
        "unit": _UNITS[s.metric],
        "type": "gauge",
        "direction": s.direction,
        "threshold": {"down": "value <= 0", "up": "value >= capacity"}.get(s.direction),
        "capacity": None if math.isnan(final_cap) else final_cap,
        "capacity_changes": [],
        "exhaustion_time": None if crossing is None else ctx.iso(crossing),
        "exhausts_in_window": crossing is not None and crossing < ctx.window,
        "counterfactual_exhaustion_time": cf_time,
        "slowdown_windows": [],
        "gaps": [],
        "counter_resets": [],
        "traps": list(s.traps),
        "description": s.description,
    }
    truth.update(s.extra)
    return truth


# -- files ---------------------------------------------------------------------------


def _dump_json(obj: object, path: Path) -> None:
    path.write_text(json.dumps(obj, sort_keys=True, indent=2) + "\n", encoding="utf-8")


def write_suite(
    out_dir: Path,
    *,
    names: Iterable[str] | None = None,
    seed: int = 0,
    days: float = 14.0,
    step: str = "5min",
    fmt: Literal["parquet", "csv"] = "parquet",
) -> list[Path]:
    """Write ``<name>.<fmt>`` and ``<name>.labels.json`` per scenario plus ``suite.json``.

    ``names`` defaults to every scenario except the held-out shapes (``HELD_OUT``).

    Returns every path written, the index last. Same arguments, same bytes (parquet from
    the same pyarrow version).
    """
    if fmt not in ("parquet", "csv"):
        raise InputError(f"fmt must be 'parquet' or 'csv', not {fmt!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index = []
    default = sorted(n for n, sc in SCENARIOS.items() if not sc.held_out)
    for name in list(names) if names is not None else default:
        data = generate(name, seed=seed, days=days, step=step)
        data_path, labels_path = out_dir / f"{name}.{fmt}", out_dir / f"{name}.labels.json"
        if fmt == "parquet":
            table = pa.Table.from_pandas(data.samples, preserve_index=False)
            pq.write_table(table, data_path, compression="zstd")
        else:
            data.samples.to_csv(data_path, index=False, lineterminator="\n")
        _dump_json(data.labels_truth, labels_path)
        written += [data_path, labels_path]
        index.append(
            {
                "name": name,
                "kind": data.scenario.kind,
                "host": data.labels_truth["host"],
                "description": data.scenario.description,
                "data": data_path.name,
                "labels": labels_path.name,
                "rows": len(data.samples),
                "series": len(data.labels_truth["series"]),
            }
        )
    suite = out_dir / "suite.json"
    _dump_json(
        {
            "schema_version": SCHEMA_VERSION,
            "generator": "autofix.data.scenarios",
            "seed": seed,
            "days": days,
            "step": step,
            "format": fmt,
            "columns": list(COLUMNS),
            "scenarios": index,
        },
        suite,
    )
    return [*written, suite]
