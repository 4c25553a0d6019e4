"""Rolling-origin backtest of exhaustion forecasters on labelled scenarios.

At every origin (hourly by default, after a warm-up) a model sees only the samples up to
that origin and forecasts. Ground truth comes from the scenario labels: a series
"exhausts within H" at an origin when its exhaustion time lies in ``(origin, origin+H]``.
Origins after the exhaustion are skipped (the disk is already full).

Reported per model: per-horizon precision / recall / F1, Brier score and expected
calibration error of P(exhaust within H), false alerts per series-week,
alert flaps per day, lead time (median, share >= 30 min), ETA relative error, 80 %
interval coverage, and the **false-fix rate**: among the fixes the default policy would
have triggered (see DEFAULT_POLICY), the share where the problem did not happen within
the horizon.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autofix.errors import ComputeError, InputError
from autofix.models.base import HORIZONS, to_fill_ratio

#: The default policy the false-fix rate is measured under: a preventive fix whenever the
#: probability of exhaustion within ``horizon`` reaches ``p_threshold`` and the last fix
#: of that series is at least ``cooldown`` ago.
DEFAULT_POLICY = {"horizon": "24h", "p_threshold": 0.8, "cooldown": timedelta(hours=6)}
ALERT_THRESHOLD = 0.5


@dataclass
class LabelledSeries:
    """One forecastable series of a scenario with its ground truth."""

    key: str
    scenario: str
    frame: pd.DataFrame  # ts, value (fill ratio)
    exhaustion: pd.Timestamp | None
    traps: list[str] = field(default_factory=list)


def load_scenarios(directory: Path) -> list[LabelledSeries]:
    """Read every ``<name>.labels.json`` with its samples file from ``directory``."""
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory of scenarios")
    labels_files = sorted(directory.glob("*.labels.json"))
    if not labels_files:
        raise InputError(f"{directory}: no *.labels.json files (see `autofix scenarios generate`)")
    out: list[LabelledSeries] = []
    for labels_file in labels_files:
        name = labels_file.name.removesuffix(".labels.json")
        samples_file = next(
            (p for p in (directory / f"{name}.parquet", directory / f"{name}.csv") if p.exists()),
            None,
        )
        if samples_file is None:
            raise InputError(f"{labels_file}: no {name}.parquet or {name}.csv beside it")
        try:
            truth = json.loads(labels_file.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{labels_file}: invalid JSON: {exc.msg} (line {exc.lineno})"
            ) from None
        samples = (
            pd.read_parquet(samples_file)
            if samples_file.suffix == ".parquet"
            else pd.read_csv(samples_file, parse_dates=["timestamp"])
        )
        for spec in truth.get("series", []):
            if spec.get("direction") not in {"up", "down"}:
                continue
            rows = samples[
                (samples["host"] == spec["host"])
                & (samples["metric"] == spec["metric"])
                & (samples["labels"] == spec["labels"])
            ]
            if rows.empty:
                continue
            fill = to_fill_ratio(rows["value"], rows["capacity"], spec["direction"])
            # cache=False: the column is datetime64 already (Parquet, parse_dates), and
            # deciding whether to cache reads every value as a Timestamp.
            ts = pd.to_datetime(rows["timestamp"], cache=False).to_numpy()
            frame = pd.DataFrame({"ts": ts, "value": fill}).sort_values("ts")
            when = spec.get("exhaustion_time")
            out.append(
                LabelledSeries(
                    key=f"{name}/{spec['host']}/{spec['metric']}{spec['labels']}",
                    scenario=name,
                    frame=frame.reset_index(drop=True),
                    exhaustion=pd.Timestamp(when).tz_localize(None) if when else None,
                    traps=list(spec.get("traps", [])),
                )
            )
    return out


def origin_grid(series: LabelledSeries, step: timedelta, warmup: timedelta) -> pd.DatetimeIndex:
    """Origins from ``warmup`` after the first sample to the last, before any exhaustion."""
    first, last = series.frame["ts"].iloc[0], series.frame["ts"].iloc[-1]
    grid = pd.date_range(first + warmup, last, freq=step)
    if series.exhaustion is not None:
        grid = grid[grid < series.exhaustion]
    return grid


ModelFactory = Callable[[], Any]


def rolling_forecasts(
    factory: ModelFactory,
    series: Sequence[LabelledSeries],
    *,
    step: timedelta = timedelta(hours=1),
    warmup: timedelta = timedelta(days=2),
    lookback: timedelta = timedelta(days=7),
    chunk_series: int = 2000,
) -> pd.DataFrame:
    """Forecasts at every origin of every series, each made from past samples only."""
    model = factory()
    parts: list[pd.DataFrame] = []
    if hasattr(model, "evaluate_all"):
        # Rolling-window models give the forecast at every sample time in one pass; take
        # the last sample at or before each origin.
        frame = pd.concat([s.frame.assign(series_id=s.key) for s in series], ignore_index=True)
        every = model.fit(frame).evaluate_all()
        every = every.sort_values(["series_id", "origin"])
        for s in series:
            grid = origin_grid(s, step, warmup)
            mine = every[every["series_id"] == s.key]
            pos = np.searchsorted(mine["origin"].to_numpy(), grid.to_numpy(), side="right") - 1
            picked = mine.iloc[pos[pos >= 0]].copy()
            picked["origin"] = grid[pos >= 0]
            parts.append(picked)
    else:
        # One pseudo-series per (series, origin): the samples in (origin - lookback,
        # origin]. Built as index ranges into one concatenated frame (thousands of small
        # DataFrames cost more than the fits).
        all_ts = pd.concat([s.frame["ts"] for s in series], ignore_index=True).to_numpy(
            "datetime64[ns]"
        )
        all_values = np.concatenate([s.frame["value"].to_numpy("float64") for s in series])
        offsets = np.cumsum([0] + [len(s.frame) for s in series])
        ranges: list[tuple[str, pd.Timestamp, int, int]] = []
        for s, base in zip(series, offsets[:-1], strict=True):
            ts = all_ts[base : base + len(s.frame)]
            grid = origin_grid(s, step, warmup)
            lo = np.searchsorted(ts, (grid - lookback).to_numpy(), side="right") + base
            hi = np.searchsorted(ts, grid.to_numpy(), side="right") + base
            ranges += [(s.key, o, int(a), int(b)) for o, a, b in zip(grid, lo, hi, strict=True)]
        for start in range(0, len(ranges), chunk_series):
            chunk = ranges[start : start + chunk_series]
            lengths = np.array([b - a for _, _, a, b in chunk])
            index = np.concatenate([np.arange(a, b) for _, _, a, b in chunk])
            # Integer ids: the models sort and group by them, strings would cost more.
            batch = pd.DataFrame(
                {
                    "series_id": np.repeat(np.arange(len(chunk)), lengths),
                    "ts": all_ts[index],
                    "value": all_values[index],
                }
            )
            result = factory().fit(batch).predict()
            pos = result["series_id"].to_numpy("int64")
            result["series_id"] = [chunk[i][0] for i in pos]
            result["origin"] = pd.to_datetime([chunk[i][1] for i in pos])
            parts.append(result)
    if not parts:
        raise InputError("backtest: no origins to evaluate (histories shorter than the warm-up?)")
    out = pd.concat(parts, ignore_index=True)
    return out.rename(columns={"series_id": "key"}).sort_values(["key", "origin"])


def _fanned_out(
    compute: Any,
    name: str,
    factory: ModelFactory,
    series: Sequence[LabelledSeries],
    step: timedelta,
    warmup: timedelta,
) -> pd.DataFrame:
    """``rolling_forecasts`` over partitions of ``series`` on ``compute``'s backend."""
    from autofix.compute.tasks import backtest_partition

    kind = compute.kind_for(len(series))
    # A backtest series costs hundreds of fits: spread even a small suite over the workers.
    count = compute.partitions(len(series))
    if kind != "inline":
        count = min(len(series), max(count, 4 * compute.workers))
    parts = [list(series[i::count]) for i in range(count)]
    done = compute.map(
        backtest_partition,
        [(factory, part, step, warmup) for part in parts if part],
        kind=kind,
        label=f"backtest of {name}",
    )
    if done.failed:  # metrics over part of the suite would be wrong, not partial
        raise ComputeError(
            f"backtest of {name}: {len(done.failed)} partition(s) failed (see the log)"
        )
    out = pd.concat([r for r in done.results if r is not None], ignore_index=True)
    ordered: pd.DataFrame = out.sort_values(["key", "origin"])
    return ordered


def calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: bin-weighted |mean p - observed frequency|, equal bins."""
    if p.size == 0:
        return 0.0
    which = np.clip(np.digitize(p, np.linspace(0, 1, n_bins + 1)[1:-1]), 0, n_bins - 1)
    sum_p = np.bincount(which, p, minlength=n_bins)
    sum_y = np.bincount(which, y, minlength=n_bins)
    return float(np.sum(np.abs(sum_p - sum_y)) / p.size)


def within(start: np.ndarray, horizon: timedelta, t: np.datetime64 | None) -> np.ndarray:
    """Whether the exhaustion time ``t`` falls in ``(start, start + horizon]``."""
    if t is None:
        return np.zeros(len(start), bool)
    hit: np.ndarray = (t > start) & (t <= start + np.timedelta64(horizon))
    return hit


def _episodes(flags: np.ndarray) -> np.ndarray:
    """Indices where an alert episode starts (False → True)."""
    prev = np.r_[False, flags[:-1]]
    starts: np.ndarray = np.flatnonzero(flags & ~prev)
    return starts


def evaluate(
    forecasts: pd.DataFrame,
    series: Sequence[LabelledSeries],
    *,
    step: timedelta = timedelta(hours=1),
    policy: dict[str, Any] | None = None,
) -> dict[str, float]:
    """All backtest metrics for one model's rolling forecasts."""
    policy = {**DEFAULT_POLICY, **(policy or {})}
    truth = {s.key: s for s in series}
    metrics: dict[str, float] = {}
    probs: dict[str, list[np.ndarray]] = {h: [] for h in HORIZONS}
    labels: dict[str, list[np.ndarray]] = {h: [] for h in HORIZONS}
    tp = dict.fromkeys(HORIZONS, 0)
    fp = dict.fromkeys(HORIZONS, 0)
    fn = dict.fromkeys(HORIZONS, 0)
    false_alerts = flaps = 0
    decisions = false_decisions = 0
    series_days = 0.0
    leads: list[float] = []
    missed = 0
    rel_errors: list[float] = []
    covered = coverable = 0
    trap_false: dict[str, int] = {}
    trap_flaps: dict[str, int] = {}
    fix_h = HORIZONS[str(policy["horizon"])]
    cooldown = pd.Timedelta(policy["cooldown"])
    day = np.timedelta64(1, "D")
    for key, rows in forecasts.groupby("key", sort=False):
        s = truth[str(key)]
        origin = rows["origin"].to_numpy("datetime64[ns]")
        t_ex = None if s.exhaustion is None else np.datetime64(s.exhaustion, "ns")
        series_days += len(rows) * (np.timedelta64(step) / day)

        for h, horizon in HORIZONS.items():
            label = within(origin, horizon, t_ex)
            probs[h].append(rows[f"p_{h}"].to_numpy("float64"))
            labels[h].append(label)
            pred = rows[f"p_{h}"].to_numpy() >= ALERT_THRESHOLD
            tp[h] += int(np.sum(pred & label))
            fp[h] += int(np.sum(pred & ~label))
            fn[h] += int(np.sum(~pred & label))
        alert = rows["p_24h"].to_numpy() >= ALERT_THRESHOLD
        starts = _episodes(alert)
        ends = np.flatnonzero(~alert & np.r_[False, alert[:-1]])
        flaps += len(ends)
        for trap in s.traps:
            trap_flaps[trap] = trap_flaps.get(trap, 0) + len(ends)
        real_start = within(origin[starts], HORIZONS["24h"], t_ex)
        false_alerts += int(np.sum(~real_start))
        for trap in s.traps:
            trap_false[trap] = trap_false.get(trap, 0) + int(np.sum(~real_start))
        # Fix decisions under the default policy: one per episode, at most one per cooldown.
        fire = rows[f"p_{policy['horizon']}"].to_numpy() >= float(policy["p_threshold"])
        last_fix: np.datetime64 | None = None
        fixes: list[np.datetime64] = []
        for i in np.flatnonzero(fire):
            if last_fix is not None and origin[i] - last_fix < np.timedelta64(cooldown):
                continue
            last_fix = origin[i]
            fixes.append(origin[i])
        decisions += len(fixes)
        false_decisions += int(np.sum(~within(np.asarray(fixes, "datetime64[ns]"), fix_h, t_ex)))
        # Lead time: the final continuous alert before the exhaustion.
        if t_ex is not None and len(rows) and origin[-1] >= t_ex - np.timedelta64(2, "h"):
            if alert[-1]:
                first = len(alert) - 1
                while first > 0 and alert[first - 1]:
                    first -= 1
                leads.append(float((t_ex - origin[first]) / np.timedelta64(1, "m")))
            else:
                missed += 1
        # ETA accuracy where the truth is within 4 days.
        if t_ex is not None:
            near = within(origin, HORIZONS["4d"], t_ex)
            eta = rows["eta"].to_numpy("datetime64[ns]")[near]
            lo = rows["eta_lo"].to_numpy("datetime64[ns]")[near]
            hi = rows["eta_hi"].to_numpy("datetime64[ns]")[near]
            dist = (t_ex - origin[near]) / np.timedelta64(1, "s")
            ok = ~np.isnat(eta)
            err = np.abs((eta[ok] - t_ex) / np.timedelta64(1, "s")) / dist[ok]
            rel_errors.extend(err.tolist())
            coverable += int(near.sum())
            covered += int(np.sum((lo <= t_ex) & (hi >= t_ex)))
    for h in HORIZONS:
        p = tp[h] / (tp[h] + fp[h]) if tp[h] + fp[h] else 1.0
        r = tp[h] / (tp[h] + fn[h]) if tp[h] + fn[h] else 1.0
        metrics[f"precision_{h}"] = p
        metrics[f"recall_{h}"] = r
        metrics[f"f1_{h}"] = 2 * p * r / (p + r) if p + r else 0.0
        p_all = np.concatenate(probs[h]) if probs[h] else np.zeros(0)
        y_all = np.concatenate(labels[h]).astype(float) if labels[h] else np.zeros(0)
        metrics[f"brier_{h}"] = float(np.mean((p_all - y_all) ** 2)) if p_all.size else 0.0
        metrics[f"ece_{h}"] = calibration_error(p_all, y_all)
    weeks = series_days / 7
    metrics["false_alerts_per_series_week"] = false_alerts / weeks if weeks else 0.0
    metrics["flaps_per_series_day"] = flaps / series_days if series_days else 0.0
    metrics["false_alerts"] = float(false_alerts)
    metrics["flaps"] = float(flaps)
    for trap in ("sawtooth", "burst", "step"):
        metrics[f"false_alerts_{trap}"] = float(trap_false.get(trap, 0))
        metrics[f"flaps_{trap}"] = float(trap_flaps.get(trap, 0))
    metrics["lead_time_median_min"] = float(np.median(leads)) if leads else 0.0
    events = len(leads) + missed
    metrics["lead_time_share_ge_30min"] = (
        sum(1 for x in leads if x >= 30) / events if events else 1.0
    )
    metrics["events"] = float(events)
    metrics["events_missed"] = float(missed)
    metrics["eta_rel_error_median"] = float(np.median(rel_errors)) if rel_errors else float("nan")
    metrics["interval_coverage_80"] = covered / coverable if coverable else float("nan")
    metrics["decisions"] = float(decisions)
    metrics["false_decisions"] = float(false_decisions)
    metrics["false_fix_rate"] = false_decisions / decisions if decisions else 0.0
    return metrics


def backtest(
    factories: Mapping[str, ModelFactory],
    series: Sequence[LabelledSeries],
    *,
    step: timedelta = timedelta(hours=1),
    warmup: timedelta = timedelta(days=2),
    progress: Callable[[str], None] | None = None,
    compute: Any = None,
) -> tuple[dict[str, dict[str, float]], dict[str, pd.DataFrame]]:
    """Run every model over every series; return metrics and the raw forecasts per model.

    ``compute`` (an ``autofix.compute.Compute``) fans the rolling forecasts out over
    partitions of the series; the metrics are computed here from all of them.
    """
    results: dict[str, dict[str, float]] = {}
    forecasts: dict[str, pd.DataFrame] = {}
    for name, factory in factories.items():
        if progress:
            progress(name)
        if compute is None:
            fc = rolling_forecasts(factory, series, step=step, warmup=warmup)
        else:
            fc = _fanned_out(compute, name, factory, series, step, warmup)
        forecasts[name] = fc
        results[name] = evaluate(fc, series, step=step)
    return results, forecasts
