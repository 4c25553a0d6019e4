"""The built-in scenarios: the shapes the project was built and tuned on."""

from __future__ import annotations

import math

import numpy as np

from autofix.data.scenarios._core import (
    CONTAINER_MEM,
    DAY,
    DISK_AVAIL,
    GIB,
    HOUR,
    HTTP_REQUESTS,
    MEM_AVAIL,
    MINUTE,
    PG_LATENCY,
    Array,
    Process,
    _burst,
    _Ctx,
    _diurnal,
    _diurnal_cum,
    _frozen,
    _fs,
    _scenario,
    _Series,
    _slots,
)

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
