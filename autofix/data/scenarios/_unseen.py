"""Shapes the forecaster was not built on, for a held-out suite (issue 15).

- ``disk_growth_stopped``: a backfill or migration filled the data disk fast for days,
  then finished; usage has been flat (high) since. Never exhausts.
- ``disk_accelerating``: growth that keeps accelerating (a feed that doubles its output);
  exhausts inside the window and must be caught early.
- ``memory_busy_stable``: a cache-heavy host that lives at 88-94 % used with a daily
  ripple; busy, not filling.
- ``disk_weekly_cleanup``: a spool that fills through the week and is emptied by a
  weekly job on Sunday night; its Saturday peak is close to full every week.
- ``memory_leak_gc_near_top``: a leak under a GC sawtooth whose teeth approach the limit
  long before the leak does; exhausts near the end of the window.
- ``disk_retention_full``: a metrics or log store with size-based retention (Prometheus
  ``--storage.tsdb.retention.size``, Kafka ``retention.bytes``) fills to its limit, then
  deletes its oldest block whenever it passes it: held at 95-98 % used for good, a
  sawtooth just under the limit. Never exhausts; the near-full case a calibration must
  see before it may say "near full means exhaustion".

Each draws its own parameters from the seed (within the ranges given), so a suite from
other seeds is a held-out test of the same shapes, never the same series.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from autofix.data.scenarios._core import (
    CONTAINER_MEM,
    DAY,
    DISK_AVAIL,
    GIB,
    HOUR,
    MEM_AVAIL,
    MINUTE,
    Array,
    _Ctx,
    _diurnal,
    _diurnal_cum,
    _fs,
    _scenario,
    _Series,
    write_suite,
)

HELD_OUT = (
    "disk_growth_stopped",
    "disk_accelerating",
    "memory_busy_stable",
    "disk_weekly_cleanup",
    "memory_leak_gc_near_top",
    "disk_retention_full",
)

#: Seeds the forecaster's calibration and defaults were chosen on; the held-out suite in
#: benchmarks/forecast.py uses others.
TUNING_SEEDS = range(100, 120)
HELD_OUT_SEEDS = range(200, 205)


def held_out_suite(out_dir: Path, seeds: Iterable[int] = HELD_OUT_SEEDS) -> list[Path]:
    """Write the unseen shapes for each seed under ``out_dir/seed<N>``; returns the dirs."""
    dirs = []
    for seed in seeds:
        target = out_dir / f"seed{seed}"
        write_suite(target, names=HELD_OUT, seed=seed)
        dirs.append(target)
    return dirs


@_scenario(
    "disk_growth_stopped",
    "disk",
    "db-5",
    "A backfill fills the data disk for days, then finishes; flat (and high) since.",
    {"capacity_gib": 500, "start_used": 0.35, "peak_used_min": 0.84, "peak_used_max": 0.93,
     "stop_min": 0.35, "stop_max": 0.65, "noise": 0.002},
    held_out=True,
)  # fmt: skip
def _disk_growth_stopped(ctx: _Ctx) -> list[_Series]:
    p, rng, off = ctx.p, ctx.rng, ctx.offset
    cap = p["capacity_gib"] * GIB
    stop = ctx.grid(rng.uniform(p["stop_min"], p["stop_max"]) * ctx.window)
    start = ctx.grid(rng.uniform(0.05, 0.2) * ctx.window)
    peak = rng.uniform(p["peak_used_min"], p["peak_used_max"])
    u0 = p["start_used"]

    def avail(t: Array) -> Array:
        done = np.clip((t - start) / (stop - start), 0.0, 1.0)
        used = u0 + (peak - u0) * done + 0.01 * _diurnal(t + off, 15)
        return cap * (1 - used)

    desc = "Growth that stopped: flat since the backfill finished; never fills."
    extra = {"growth_stopped": ctx.iso(stop)}
    mount = _fs("/var/lib/postgresql", "/dev/nvme2n1")
    return [_Series(DISK_AVAIL, mount, "down", desc, avail, cap, p["noise"], ("stopped",), extra)]


@_scenario(
    "disk_accelerating",
    "disk",
    "feed-1",
    "A feed's output keeps growing: disk usage accelerates until the disk fills.",
    {"capacity_gib": 200, "start_used": 0.30, "full_min": 0.75, "full_max": 0.95,
     "power_min": 2.0, "power_max": 3.0, "noise": 0.002},
    held_out=True,
)  # fmt: skip
def _disk_accelerating(ctx: _Ctx) -> list[_Series]:
    p, rng = ctx.p, ctx.rng
    cap = p["capacity_gib"] * GIB
    full_at = rng.uniform(p["full_min"], p["full_max"]) * ctx.window
    power = rng.uniform(p["power_min"], p["power_max"])
    u0 = p["start_used"]

    def avail(t: Array) -> Array:
        used = u0 + (1 - u0) * (np.maximum(t, 0.0) / full_at) ** power
        return cap * (1 - used)

    desc = "Accelerating growth (a power law) fills the disk inside the window."
    mount = _fs("/srv/feed", "/dev/sdf1")
    return [_Series(DISK_AVAIL, mount, "down", desc, avail, cap, p["noise"], ("accelerating",))]


@_scenario(
    "memory_busy_stable",
    "memory",
    "cache-3",
    "A cache-heavy host lives at ~90 % used with a daily ripple: busy, not filling.",
    {"ram_gib": 64, "used_min": 0.88, "used_max": 0.93, "ripple": 0.015, "noise": 0.004},
    held_out=True,
)  # fmt: skip
def _memory_busy_stable(ctx: _Ctx) -> list[_Series]:
    p, rng, off = ctx.p, ctx.rng, ctx.offset
    ram = p["ram_gib"] * GIB
    used = rng.uniform(p["used_min"], p["used_max"])
    peak_hour = rng.uniform(0, 24)

    def avail(t: Array) -> Array:
        return ram * (1 - used - p["ripple"] * _diurnal(t + off, peak_hour))

    desc = "Stable high usage with noise: never fills."
    return [_Series(MEM_AVAIL, {}, "down", desc, avail, ram, p["noise"], ("busy",))]


@_scenario(
    "disk_weekly_cleanup",
    "disk",
    "spool-1",
    "A spool fills through the week and a Sunday-night job empties it; never fills.",
    {"capacity_gib": 100, "floor_used": 0.35, "peak_min": 0.90, "peak_max": 0.96,
     "cleanup_hour": 3.0, "noise": 0.002},
    held_out=True,
)  # fmt: skip
def _disk_weekly_cleanup(ctx: _Ctx) -> list[_Series]:
    p, rng, off = ctx.p, ctx.rng, ctx.offset
    cap = p["capacity_gib"] * GIB
    floor, peak = p["floor_used"], rng.uniform(p["peak_min"], p["peak_max"])
    week = 7 * DAY
    # The history starts on a Monday at midnight (DEFAULT_START): the job runs Sunday night.
    phase = 6 * DAY + p["cleanup_hour"] * HOUR - ctx.start.dayofweek * DAY

    def avail(t: Array) -> Array:
        since = np.mod(t - phase, week)  # seconds since the last cleanup
        used = floor + (peak - floor) * since / week + 0.01 * _diurnal(t + off, 14)
        return cap * (1 - used)

    desc = "Weekly cleanup sawtooth whose peak comes close to full: never fills."
    mount = _fs("/var/spool/news", "/dev/sdg1")
    return [_Series(DISK_AVAIL, mount, "down", desc, avail, cap, p["noise"], ("weekly",))]


@_scenario(
    "memory_leak_gc_near_top",
    "memory",
    "worker-5",
    "A leak under a tall GC sawtooth: the teeth touch 90 % long before the heap is full.",
    {"limit_gib": 8, "base_used": 0.55, "amp_min": 0.12, "amp_max": 0.2, "period_min": 60,
     "period_max": 120, "full_min": 0.8, "full_max": 0.95, "noise": 0.003},
    held_out=True,
)  # fmt: skip
def _memory_leak_gc_near_top(ctx: _Ctx) -> list[_Series]:
    p, rng = ctx.p, ctx.rng
    limit = p["limit_gib"] * GIB
    amp = rng.uniform(p["amp_min"], p["amp_max"])
    period = max(ctx.grid(rng.uniform(p["period_min"], p["period_max"]) * MINUTE), ctx.step)
    full_at = rng.uniform(p["full_min"], p["full_max"]) * ctx.window
    base = p["base_used"]
    leak = (1 - base - amp) / full_at

    def used(t: Array) -> Array:
        # The tooth moves in sample steps, so its top is a sample (the truth a collector sees).
        tooth = np.floor(np.mod(t, period) / ctx.step) * ctx.step / period
        return limit * (base + leak * t + amp * tooth)

    labels = {"container": "news-renderer", "namespace": "news"}
    desc = "A slow leak under a tall GC sawtooth exhausts the limit near the end."
    return [_Series(CONTAINER_MEM, labels, "up", desc, used, limit, p["noise"], ("sawtooth",))]


@_scenario(
    "disk_retention_full",
    "disk",
    "tsdb-1",
    "Size-based retention holds a metrics store just under its limit, 95-98 % used.",
    {"capacity_gib": 250, "limit_min": 0.95, "limit_max": 0.98, "block_min": 0.005,
     "block_max": 0.015, "every_min_h": 3.0, "every_max_h": 12.0, "noise": 0.002},
    held_out=True,
)  # fmt: skip
def _disk_retention_full(ctx: _Ctx) -> list[_Series]:
    p, rng, off = ctx.p, ctx.rng, ctx.offset
    cap = p["capacity_gib"] * GIB
    limit = rng.uniform(p["limit_min"], p["limit_max"])
    block = rng.uniform(p["block_min"], p["block_max"])
    # Ingest with a daily rhythm; every pass over the limit deletes the oldest block, one
    # deletion every 3-12 hours on average. It has been at the limit since before the window.
    rate = block / (rng.uniform(p["every_min_h"], p["every_max_h"]) * HOUR)
    floor, phase = limit - block, rng.uniform(0, block)

    def avail(t: Array) -> Array:
        ingested = phase + rate * (_diurnal_cum(t + off, 13, 0.3) - _diurnal_cum(off, 13, 0.3))
        return cap * (1 - floor - np.mod(ingested, block))

    desc = "Size-based retention: a sawtooth just under the limit, held there; never fills."
    extra = {"retention_limit_used": round(float(limit), 4)}
    mount = _fs("/var/lib/prometheus", "/dev/nvme3n1")
    return [_Series(DISK_AVAIL, mount, "down", desc, avail, cap, p["noise"], ("retention",), extra)]
