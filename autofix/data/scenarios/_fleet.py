"""Many series of the scenario shapes, fast, for fleet-scale benchmarks (no ground truth)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import cast

import numpy as np
import pandas as pd

from autofix.collect.base import format_labels
from autofix.data.scenarios._core import (
    CONTAINER_MEM,
    DAY,
    DEFAULT_START,
    DISK_AVAIL,
    GIB,
    MINUTE,
    PG_LATENCY,
    Array,
    _burst,
    _fs,
    _n_samples,
    _start,
    _step_seconds,
)
from autofix.errors import InputError

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
