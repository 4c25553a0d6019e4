"""Labelled, deterministic metric histories for backtests and benchmarks.

Each scenario is one host whose series have an exactly known ground truth: when the
noiseless process behind a series reaches its threshold (``exhaustion_time``), which
traps it sets for a naive forecaster, and where query slowdowns are. Everything is drawn
from a seeded ``numpy.random.Generator``, so the same seed gives the same history.

Conventions (``direction`` in the truth):

- ``node_filesystem_avail_bytes`` and ``node_memory_available_bytes`` are avail-style,
  ``"down"``: exhausted when value <= 0; capacity is the filesystem size / the RAM.
- ``container_memory_working_set_bytes`` is used-style, ``"up"``: exhausted when value >=
  capacity, the cgroup limit at which the OOM killer fires.
- latencies and counters are ``"none"``: no capacity (NaN), ``exhaustion_time`` null.

Every scenario uses its own host, so a whole suite can be loaded into one store.

``labels_truth`` (schema_version 1): scenario, kind, description, host, seed, start, end
(exclusive), step, step_seconds, parameters, and ``series``: one entry per series with host,
metric, labels (canonical JSON), unit, type (gauge|counter), direction, threshold, capacity
(final, or null), capacity_changes [[time, bytes]], exhaustion_time (ISO UTC or null; may
lie after ``end`` when extrapolated), exhausts_in_window, counterfactual_exhaustion_time
(had nobody grown the disk), slowdown_windows [[start, end)], gaps [[start, end)],
counter_resets [first sample after], traps, description; some add bursts, deploys or
slowdown_factors. Times are ISO UTC with a ``Z``.

    >>> from autofix.data.scenarios import generate
    >>> data = generate("disk_fill_linear", days=2.0)
    >>> list(data.samples.columns)
    ['timestamp', 'host', 'metric', 'value', 'labels', 'capacity']
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

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


@dataclass(frozen=True, slots=True)
class ScenarioData:
    """A generated history: import-shaped samples, the ground truth, the noiseless values."""

    scenario: Scenario
    samples: pd.DataFrame
    labels_truth: dict[str, Any]
    clean: pd.Series  # noiseless value for each row of ``samples`` (same index)


SCENARIOS: dict[str, Scenario] = {}


def _scenario(
    name: str, kind: str, host: str, description: str, parameters: dict[str, float]
) -> Callable[[Builder], Builder]:
    def register(build: Builder) -> Builder:
        SCENARIOS[name] = Scenario(name, kind, description, parameters, host, build)
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


# -- scenarios -----------------------------------------------------------------------
# Parameters are fractions of capacity / of the window unless their name has a unit, so a
# scenario keeps its shape (and its truth stays inside the window) for any ``days``.


@_scenario(
    "disk_fill_linear",
    "disk",
    "web-1",
    "Logs fill /var/log steadily until it is full; a cache disk fills just after the end.",
    {"capacity_gib": 50, "start_avail": 0.55, "exhaust_at": 0.85, "cache_capacity_gib": 200,
     "cache_start_avail": 0.45, "cache_exhaust_after_end": 0.1, "noise": 0.002},
)  # fmt: skip
def _disk_fill_linear(ctx: _Ctx) -> list[_Series]:
    p, off = ctx.p, ctx.offset
    cap, ccap = p["capacity_gib"] * GIB, p["cache_capacity_gib"] * GIB
    a0, c0 = p["start_avail"] * cap, p["cache_start_avail"] * ccap
    rate = a0 / (p["exhaust_at"] * ctx.window)
    crate = c0 / ((1 + p["cache_exhaust_after_end"]) * ctx.window)

    def cache(t: Array) -> Array:
        return c0 - crate * (_diurnal_cum(t + off, 14, 0.5) - _diurnal_cum(off, 14, 0.5))

    log_desc = "Steady log growth exhausts /var/log inside the window."
    cache_desc = "Cache grows with daytime traffic and fills shortly after the history ends."
    return [
        _Series(DISK_AVAIL, _fs("/var/log", "/dev/sdb1"), "down", log_desc,
                lambda t: a0 - rate * t, cap, p["noise"]),
        _Series(DISK_AVAIL, _fs("/srv/news/cache", "/dev/sdc1", "xfs"), "down", cache_desc,
                cache, ccap, p["noise"], ("seasonality",)),
    ]  # fmt: skip


def _log_rotation(ctx: _Ctx, description: str) -> list[_Series]:
    p, off = ctx.p, ctx.offset
    cap = p["capacity_gib"] * GIB
    base, grow, rot = p["base_used"], p["daily_growth"], p["rotate_hour"] * HOUR
    full_at = p["trend_full_at"]
    trend = (1 - base - grow) / (full_at * ctx.window) if full_at > 0 else 0.0

    def avail(t: Array) -> Array:
        x = t + off
        last = x - np.mod(x - rot, DAY)  # the latest logrotate run
        # Logs are written with the traffic, so the ramp is steeper in the afternoon.
        ramp = (_diurnal_cum(x, 15, 0.6) - _diurnal_cum(last, 15, 0.6)) / DAY
        return cap * (1 - base - grow * ramp - trend * t)

    traps = ("sawtooth",) if trend == 0 else ("sawtooth", "trend")
    mount = _fs("/var/log", "/dev/sdb1")
    return [_Series(DISK_AVAIL, mount, "down", description, avail, cap, p["noise"], traps)]


@_scenario(
    "disk_log_rotation_sawtooth",
    "disk",
    "web-2",
    "Daily logrotate drops /var/log usage sharply; the long-run trend is flat.",
    {"capacity_gib": 20, "base_used": 0.35, "daily_growth": 0.50, "rotate_hour": 6.42,
     "trend_full_at": 0, "noise": 0.002},
)  # fmt: skip
def _disk_log_rotation_sawtooth(ctx: _Ctx) -> list[_Series]:
    return _log_rotation(ctx, "Rotation sawtooth up to 85 % used with a flat trend: never fills.")


@_scenario(
    "disk_log_rotation_sawtooth_trend",
    "disk",
    "web-3",
    "Daily logrotate sawtooth on top of a slow upward trend that does fill /var/log.",
    {"capacity_gib": 20, "base_used": 0.30, "daily_growth": 0.45, "rotate_hour": 6.42,
     "trend_full_at": 0.8, "noise": 0.002},
)  # fmt: skip
def _disk_log_rotation_sawtooth_trend(ctx: _Ctx) -> list[_Series]:
    return _log_rotation(ctx, "Rotation sawtooth whose floor creeps up until a peak fills.")


@_scenario(
    "disk_cleanup_burst",
    "disk",
    "db-1",
    "Nightly backups and one ad-hoc dump fill /var/backups fast, then are deleted.",
    {"capacity_gib": 100, "base_used": 0.30, "backup_min": 0.35, "backup_max": 0.55,
     "backup_hour": 1.0, "adhoc_peak_used": 0.93, "noise": 0.002},
)  # fmt: skip
def _disk_cleanup_burst(ctx: _Ctx) -> list[_Series]:
    p, rng, off, w = ctx.p, ctx.rng, ctx.offset, ctx.window
    cap, base, season = p["capacity_gib"] * GIB, p["base_used"], 0.02
    bursts: list[tuple[float, ...]] = []
    for day in range(math.ceil(w / DAY) + 1):
        start = day * DAY + p["backup_hour"] * HOUR - off + rng.uniform(0, 30 * MINUTE)
        fill_hold_clean = rng.uniform([30, 10, 3], [60, 30, 8]) * MINUTE
        size = rng.uniform(p["backup_min"], p["backup_max"])
        if 0 <= start < w - 3 * HOUR:
            bursts.append((start, *fill_hold_clean, size))
    # The ad-hoc dump runs in working hours so it never overlaps a nightly backup.
    start = math.floor(rng.uniform(0.3, 0.7) * w / DAY) * DAY - off + rng.uniform(6, 20) * HOUR
    fill_hold = rng.uniform([20, 30], [45, 90]) * MINUTE
    if 0 <= start < w - 3 * HOUR:
        bursts.append((start, *fill_hold, 5 * MINUTE, p["adhoc_peak_used"] - base - season))

    def avail(t: Array) -> Array:
        used = base + season * _diurnal(t + off, 15)
        for b in bursts:
            used = used + _burst(t, *b)
        return cap * (1 - used)

    desc = "Backup bursts reach up to 93 % used and clean themselves up: never fills."
    extra = {"bursts": [[ctx.iso(b[0]), ctx.iso(sum(b[:4]))] for b in bursts]}
    mount = _fs("/var/backups", "/dev/sdd1")
    return [_Series(DISK_AVAIL, mount, "down", desc, avail, cap, p["noise"], ("burst",), extra)]


@_scenario(
    "disk_step_grown",
    "disk",
    "db-2",
    "The data disk was on track to fill; it is grown mid-history and growth stops.",
    {"capacity_gib": 100, "grown_capacity_gib": 200, "start_used": 0.40, "grow_at": 0.6,
     "would_fill_at": 0.9, "noise": 0.002},
)  # fmt: skip
def _disk_step_grown(ctx: _Ctx) -> list[_Series]:
    p = ctx.p
    cap0, cap1 = p["capacity_gib"] * GIB, p["grown_capacity_gib"] * GIB
    u0 = p["start_used"] * cap0
    rate = (cap0 - u0) / (p["would_fill_at"] * ctx.window)
    t_grow = ctx.grid(p["grow_at"] * ctx.window)

    def capacity(t: Array) -> Array:
        return np.where(t < t_grow, cap0, cap1)

    desc = "Disk grown (and the bulk load finished) before it filled: no exhaustion."
    series = _Series(
        DISK_AVAIL, _fs("/var/lib/postgresql", "/dev/nvme1n1"), "down", desc,
        lambda t: capacity(t) - u0 - rate * np.minimum(t, t_grow), capacity, p["noise"],
        ("step",), {"capacity_changes": [[ctx.iso(t_grow), cap1]]},
        counterfactual=lambda t: cap0 - u0 - rate * t,
    )  # fmt: skip
    return [series]


def _gc_used(ctx: _Ctx, leak_full_at: float) -> Process:
    """Used fraction: base + GC sawtooth + a little daily load + an optional linear leak."""
    p, off, season = ctx.p, ctx.offset, 0.03
    base, amp, period = p["base_used"], p["gc_amplitude"], p["gc_period_min"] * MINUTE
    leak = (1 - base - amp - season) / (leak_full_at * ctx.window) if leak_full_at > 0 else 0.0

    def used(t: Array) -> Array:
        return base + leak * t + amp * np.mod(t, period) / period + season * _diurnal(t + off, 14)

    return used


@_scenario(
    "memory_leak_gc_sawtooth",
    "memory",
    "worker-1",
    "GC sawtooth on host memory over a leak that runs the host out of memory.",
    {"ram_gib": 16, "base_used": 0.30, "gc_amplitude": 0.15, "gc_period_min": 90,
     "leak_full_at": 0.85, "noise": 0.003},
)  # fmt: skip
def _memory_leak(ctx: _Ctx) -> list[_Series]:
    ram = ctx.p["ram_gib"] * GIB
    used = _gc_used(ctx, ctx.p["leak_full_at"])
    return [
        _Series(MEM_AVAIL, {}, "down", "A leak under the GC sawtooth exhausts RAM.",
                lambda t: ram * (1 - used(t)), ram, ctx.p["noise"], ("sawtooth",)),
    ]  # fmt: skip


@_scenario(
    "memory_gc_sawtooth_healthy",
    "memory",
    "worker-2",
    "A healthy worker's heap climbs 40 % of its limit between GCs; no leak.",
    {"limit_gib": 4, "base_used": 0.35, "gc_amplitude": 0.40, "gc_period_min": 45,
     "noise": 0.003},
)  # fmt: skip
def _memory_gc_healthy(ctx: _Ctx) -> list[_Series]:
    limit = ctx.p["limit_gib"] * GIB
    used = _gc_used(ctx, 0.0)
    labels = {"container": "news-worker", "namespace": "news"}
    return [
        _Series(CONTAINER_MEM, labels, "up", "Steep GC sawtooth below 78 % of the limit.",
                lambda t: limit * used(t), limit, ctx.p["noise"], ("sawtooth",)),
    ]  # fmt: skip


@_scenario(
    "daily_seasonality",
    "memory",
    "cache-1",
    "Host memory and a spool disk follow the daily traffic cycle; nothing fills.",
    {"ram_gib": 32, "mem_base": 0.45, "mem_amp": 0.20, "spool_gib": 10, "spool_base": 0.40,
     "spool_amp": 0.30, "noise": 0.002},
)  # fmt: skip
def _daily_seasonality(ctx: _Ctx) -> list[_Series]:
    p, off = ctx.p, ctx.offset
    ram, spool = p["ram_gib"] * GIB, p["spool_gib"] * GIB

    def mem(t: Array) -> Array:
        weekly = 0.03 * np.cos(2 * np.pi * (t + off) / (7 * DAY))
        return ram * (1 - p["mem_base"] - p["mem_amp"] * _diurnal(t + off, 20) - weekly)

    def spooled(t: Array) -> Array:
        return spool * (1 - p["spool_base"] - p["spool_amp"] * _diurnal(t + off, 13))

    trap = ("seasonality",)
    return [
        _Series(MEM_AVAIL, {}, "down", "Evening peak of page cache and workers.",
                mem, ram, p["noise"], trap),
        _Series(DISK_AVAIL, _fs("/var/spool/news", "/dev/sdb1"), "down",
                "The spool fills during the day and drains at night.",
                spooled, spool, p["noise"], trap),
    ]  # fmt: skip


@_scenario(
    "deploy_step",
    "memory",
    "api-1",
    "A deploy restarts the API; memory warms up to a higher level, then stays flat.",
    {"limit_gib": 2, "ram_gib": 8, "before": 0.40, "after": 0.62, "deploy_at": 0.55,
     "warmup_min": 5, "restart_floor": 0.08, "other_used": 0.30, "noise": 0.003},
)  # fmt: skip
def _deploy_step(ctx: _Ctx) -> list[_Series]:
    p, off = ctx.p, ctx.offset
    limit, ram = p["limit_gib"] * GIB, p["ram_gib"] * GIB
    t_dep, tau = ctx.grid(p["deploy_at"] * ctx.window), p["warmup_min"] * MINUTE
    before, after, floor = p["before"], p["after"], p["restart_floor"]

    def used(t: Array) -> Array:
        warm = after - (after - floor) * np.exp(-np.maximum(t - t_dep, 0.0) / tau)
        return limit * (np.where(t < t_dep, before, warm) + 0.03 * _diurnal(t + off, 14))

    def host_avail(t: Array) -> Array:
        return ram * (1 - p["other_used"]) - used(t)

    labels, trap = {"container": "news-api", "namespace": "news"}, ("step",)
    return [
        _Series(CONTAINER_MEM, labels, "up", "Step up at the deploy, then flat below the limit.",
                used, limit, p["noise"], trap, {"deploys": [ctx.iso(t_dep)]}),
        _Series(MEM_AVAIL, {}, "down", "Host memory mirrors the API's step, downwards.",
                host_avail, ram, p["noise"], trap, {"deploys": [ctx.iso(t_dep)]}),
    ]  # fmt: skip


@_scenario(
    "gaps",
    "collector",
    "edge-1",
    "The collector is down three times; the host reboots once and the app restarts once.",
    {"capacity_gib": 40, "start_used": 0.50, "exhaust_after_end": 0.5, "requests_per_s": 40,
     "noise": 0.002},
)  # fmt: skip
def _gaps(ctx: _Ctx) -> list[_Series]:
    p, rng, off, t, step = ctx.p, ctx.rng, ctx.offset, ctx.t, ctx.step
    cap = p["capacity_gib"] * GIB
    a0 = (1 - p["start_used"]) * cap
    rate = a0 / ((1 + p["exhaust_after_end"]) * ctx.window)
    drawn = rng.uniform([20 * MINUTE, 1.5 * HOUR, 4 * HOUR], [45 * MINUTE, 3 * HOUR, 8 * HOUR])
    dur = np.maximum(np.ceil(np.minimum(drawn, 0.17 * ctx.window) / step), 1) * step
    starts = _slots(ctx, 3, 0.10, 0.95, dur)
    keep = np.ones(t.size, dtype=bool)
    for s, d in zip(starts, dur, strict=True):
        keep &= (t < s) | (t >= s + d)
    gaps = [[ctx.iso(s), ctx.iso(s + d)] for s, d in zip(starts, dur, strict=True)]
    # The host reboots during the longest gap; the app restarts once on its own, earlier.
    reboot = round((starts[2] + dur[2]) / step)
    between = keep & (t > starts[0] + dur[0] + HOUR) & (t < starts[2] - HOUR)
    restart = [int(rng.choice(np.flatnonzero(between)))] if between.any() else []
    resets = np.array(sorted({*restart, reboot}))
    # A restart happens just after the sample before a reset; at the start of the history
    # the app had been up for 30 days.
    restarts = np.concatenate([[-30 * DAY], resets * step - step])
    rps = p["requests_per_s"]

    def disk(t: Array) -> Array:
        return a0 - rate * (_diurnal_cum(t + off, 14, 0.5) - _diurnal_cum(off, 14, 0.5))

    def expected(x: Array) -> Array:
        last = restarts[np.searchsorted(restarts, x, side="left") - 1]
        return rps * (_diurnal_cum(x + off, 19, 0.6) - _diurnal_cum(last + off, 19, 0.6))

    # Poisson increments summed per uptime segment: the noise a real counter has.
    served = rps * np.diff(_diurnal_cum(np.concatenate([[-30 * DAY], t]) + off, 19, 0.6))
    cum = np.cumsum(rng.poisson(served).astype(np.float64))
    segment = np.searchsorted(resets, np.arange(t.size), side="right")
    counter = cum - np.concatenate([[0.0], cum[resets - 1]])[segment]
    resets_iso = [ctx.iso(r * step) for r in resets]
    labels = {"code": "200", "handler": "/api/articles", "method": "GET"}
    return [
        _Series(DISK_AVAIL, _fs("/", "/dev/sda1"), "down",
                "Slow growth seen through collector gaps; fills after the history ends.",
                disk, cap, p["noise"], ("gap",), {"gaps": gaps}, keep=keep),
        _Series(HTTP_REQUESTS, labels, "none", "Request counter with gaps and two resets.",
                expected, None, 0.0, ("gap", "counter_reset"),
                {"gaps": gaps, "counter_resets": resets_iso, "type": "counter"},
                observed=counter, keep=keep),
    ]  # fmt: skip


def _latency(
    ctx: _Ctx, base: float, windows: int, bursts_per_day: float, burst_max: float
) -> tuple[Array, Array, list[list[str]], list[float]]:
    """Observed and noiseless latency with ``windows`` labelled slowdowns and noise bursts."""
    rng, t, step, off = ctx.rng, ctx.t, ctx.step, ctx.offset
    seasonal = base * (1 + 0.35 * _diurnal(t + off, 19))
    lo, hi = max(1, math.ceil(20 * MINUTE / step)), max(1, math.floor(120 * MINUTE / step))
    dur = rng.integers(lo, hi + 1, windows).astype(np.float64) * step
    starts = _slots(ctx, windows, 0.15, 0.98, dur) if windows else np.zeros(0)
    factors = rng.uniform(3, 10, windows)
    slow = np.ones(t.size)
    for s, d, f in zip(starts, dur, factors, strict=True):
        slow[(t >= s) & (t < s + d)] = f
    clean = seasonal * slow
    noise = np.exp(np.clip(rng.standard_normal(t.size), -3, 3) * 0.12)
    # Bursts last one or two samples (< 20 min), stay clear of the windows, and start on
    # every 4th sample so two of them never merge into a 20-minute run.
    quiet = np.convolve(slow == 1, np.ones(5), mode="same") == 5
    candidates = np.flatnonzero(quiet[:-1] & (np.arange(t.size - 1) % 4 == 0))
    n_bursts = min(round(bursts_per_day * ctx.window / DAY), candidates.size)
    at = np.sort(rng.choice(candidates, n_bursts, replace=False))
    spike = np.ones(t.size)
    spike[at] = rng.uniform(1.5, burst_max, n_bursts)
    spike[at + 1] = np.where(rng.random(n_bursts) < 0.5, spike[at], 1.0)
    windows_iso = [[ctx.iso(s), ctx.iso(s + d)] for s, d in zip(starts, dur, strict=True)]
    return np.round(clean * noise * spike, 6), clean, windows_iso, [round(f, 3) for f in factors]


@_scenario(
    "query_slowdown",
    "latency",
    "db-3",
    "A query slows down x3-x10 for 20-120 min several times; another query stays healthy.",
    {"slow_base_s": 0.040, "healthy_base_s": 0.004, "windows_per_day": 0.4},
)
def _query_slowdown(ctx: _Ctx) -> list[_Series]:
    n_windows = max(2, round(ctx.p["windows_per_day"] * ctx.window / DAY))
    obs, clean, windows, factors = _latency(ctx, ctx.p["slow_base_s"], n_windows, 1.0, 2.5)
    h_obs, h_clean, _, _ = _latency(ctx, ctx.p["healthy_base_s"], 0, 3.0, 3.0)
    traps = ("seasonality", "noise_burst")
    slow_truth = {"slowdown_windows": windows, "slowdown_factors": factors}
    return [
        _Series(PG_LATENCY, {"datname": "news", "query": "top_articles"}, "none",
                "Daily cycle with labelled slowdown windows.", _frozen(ctx.t, clean),
                traps=traps, extra=slow_truth, observed=obs),
        _Series(PG_LATENCY, {"datname": "news", "query": "article_by_id"}, "none",
                "Healthy: short noise bursts but no slowdown.", _frozen(ctx.t, h_clean),
                traps=traps, observed=h_obs),
    ]  # fmt: skip


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

    Returns every path written, the index last. Same arguments, same bytes (parquet from
    the same pyarrow version).
    """
    if fmt not in ("parquet", "csv"):
        raise InputError(f"fmt must be 'parquet' or 'csv', not {fmt!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index = []
    for name in list(names) if names is not None else sorted(SCENARIOS):
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
            "generator": __name__,
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


# -- fleet ---------------------------------------------------------------------------

FLEET_SHAPES = (
    "linear",
    "sawtooth",
    "sawtooth_trend",
    "burst",
    "seasonal",
    "gc_leak",
    "gc",
    "deploy_step",
    "latency",
)
_FLEET_METRIC = {
    "gc_leak": CONTAINER_MEM,
    "gc": CONTAINER_MEM,
    "deploy_step": CONTAINER_MEM,
    "latency": PG_LATENCY,
}
_FLEET_CHUNK = 512  # rows per vectorised block: keeps temporaries near 16 MB


def _fleet_block(
    shape: str, k: int, t: Array, window: float, rng: np.random.Generator
) -> tuple[Array, Array]:
    """Noisy values (k, m) and capacities (k,) of k series of one shape."""

    def u(lo: float, hi: float) -> Array:
        return rng.uniform(lo, hi, (k, 1))

    x = t[None, :]
    if shape == "latency":
        base = u(0.001, 0.1) * (1 + 0.35 * np.cos(2 * np.pi * (x / DAY - u(0, 1))))
        start, dur = u(0.1, 0.9) * window, u(20, 120) * MINUTE
        slow = np.where((x >= start) & (x < start + dur) & (u(0, 1) < 0.5), u(3, 10), 1.0)
        noise = np.exp(np.clip(rng.standard_normal(base.shape), -3, 3) * 0.12)
        return np.round(base * slow * noise, 6), np.full(k, np.nan)
    cap = np.exp(rng.uniform(np.log(GIB), np.log(512 * GIB), k))
    if shape == "linear":
        a0 = u(0.2, 0.9)
        used = 1 - a0 * (1 - x / (u(0.3, 3.0) * window))
    elif shape in ("sawtooth", "sawtooth_trend"):
        base, grow = u(0.2, 0.4), u(0.2, 0.5)
        used = base + grow * np.mod(x - u(0, DAY), DAY) / DAY
        if shape == "sawtooth_trend":
            used = used + (1 - base - grow) * x / (u(0.5, 2.0) * window)
    elif shape == "burst":
        base, start = u(0.2, 0.5), u(0.1, 0.9) * window
        size = u(0.2, 0.45)
        used = base + _burst(x, start, u(15, 60) * MINUTE, u(10, 60) * MINUTE, 5 * MINUTE, size)
    elif shape == "seasonal":
        used = u(0.3, 0.5) + u(0.1, 0.3) * np.cos(2 * np.pi * (x / DAY - u(0, 1)))
    elif shape in ("gc", "gc_leak"):
        base, amp, period = u(0.2, 0.4), u(0.1, 0.3), u(20, 120) * MINUTE
        used = base + amp * np.mod(x + u(0, 1) * period, period) / period
        if shape == "gc_leak":
            used = used + (1 - base - amp) * x / (u(0.5, 3.0) * window)
    else:  # deploy_step
        before = u(0.2, 0.5)
        used = np.where(x < u(0.2, 0.8) * window, before, before + u(0.05, 0.3))
    used = np.clip(used, 0.0, 1.0)
    clean = used if shape in _FLEET_METRIC else 1 - used  # disks are avail-style
    room = np.minimum(clean, 1 - clean) / 2
    noise = np.clip(rng.standard_normal(clean.shape), -3, 3) / 3 * np.minimum(0.002, room)
    return np.rint((clean + noise) * cap[:, None]), cap


def generate_fleet(
    n_series: int,
    *,
    days: float = 14.0,
    step: str = "5min",
    seed: int = 0,
    start: str | pd.Timestamp = DEFAULT_START,
) -> pd.DataFrame:
    """Many series of the scenario shapes, fast, for benchmarks (no ground truth).

    Same columns as ``generate``; ``host``, ``metric`` and ``labels`` are categoricals to
    keep 40M rows in memory (``.astype(str)`` gives plain strings). Four series per host.
    """
    if n_series < 1:
        raise InputError(f"n_series must be positive, not {n_series}")
    step_s = _step_seconds(step)
    m = _n_samples(days, step_s)
    t0 = _start(start)
    rng = np.random.default_rng([seed, zlib.crc32(b"fleet")])
    t = np.arange(m, dtype=np.float64) * step_s
    shape_ids = rng.integers(0, len(FLEET_SHAPES), n_series)
    values = np.empty((n_series, m))
    caps = np.empty(n_series)
    for sid, shape in enumerate(FLEET_SHAPES):
        rows = np.flatnonzero(shape_ids == sid)
        for lo in range(0, rows.size, _FLEET_CHUNK):
            block = rows[lo : lo + _FLEET_CHUNK]
            values[block], caps[block] = _fleet_block(shape, block.size, t, m * step_s, rng)
    slot = np.arange(n_series) % 4
    metrics = [_FLEET_METRIC.get(FLEET_SHAPES[s], DISK_AVAIL) for s in shape_ids]
    labels = [
        format_labels(
            {"datname": "app", "query": f"q{j}"}
            if metric == PG_LATENCY
            else {"container": f"svc-{j}", "namespace": "fleet"}
            if metric == CONTAINER_MEM
            else _fs(f"/data{j}", f"/dev/sd{'bcde'[j]}1")
        )
        for metric, j in zip(metrics, slot, strict=True)
    ]
    step_ns = round(step_s * 1e9)
    stamps = t0.value + np.arange(m, dtype=np.int64) * step_ns

    def categorical(per_series: list[str]) -> pd.Categorical:
        codes, uniques = pd.factorize(np.asarray(per_series, dtype=object))
        # The stubs want a Sequence; an int array is what pandas documents and is 40M long.
        repeated = cast("Sequence[int]", np.repeat(codes, m))
        return pd.Categorical.from_codes(repeated, categories=pd.Index(uniques))

    hosts = [f"node-{i // 4:05d}" for i in range(n_series)]
    return pd.DataFrame(
        {
            "timestamp": np.tile(stamps, n_series).view("datetime64[ns]"),
            "host": categorical(hosts),
            "metric": categorical(metrics),
            "value": values.ravel(),
            "labels": categorical(labels),
            "capacity": np.repeat(caps, m),
        }
    )
