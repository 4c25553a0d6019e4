"""The default exhaustion forecaster: the trend of daily peaks, plus a runaway guard.

Why peaks: a disk or a heap fills up at its *peaks*. Log rotation, cleanup jobs, GC and
daily traffic make a sawtooth whose slope inside one tooth says nothing about exhaustion
(that is what makes ``predict_linear`` flap). Taking the maximum of each 24-hour block
before the forecast origin removes the tooth; the median of the block-to-block changes is
the long-run growth of the peaks, and a median shrugs off one-off events: a burst that
cleaned itself up, a deploy step, a disk that was grown.

Two complements keep it honest:

- *recent growth*: when the last two block changes agree (a fill that started two days
  ago), their smaller value is used if it is larger than the median;
- *runaway guard*: a fill already above ``runaway_fill`` and climbing fast over the last
  ``runaway_window`` (minutes-to-hours fills the daily view cannot see yet) contributes to
  the short horizons only, and only above every peak seen before;
- *sustained climb*: a series younger than one block (a process started today: no daily
  peaks to read yet) that climbs below ``runaway_fill`` — a worker leaking megabytes a
  second crosses 90 % to its limit in seconds, too late for the guard — counts as a
  runaway once its climb (from its lowest point since the last step down: a cleanup or
  a restart starts a new one) has risen by at least ``climb_rise`` of the capacity,
  steadily (its second half rose at least ``climb_steady`` times as much as its first,
  and so did the second half of its upper half: a warm-up levels off, a backup written in
  a second then held is a step and a plateau, a leak is neither), the upper half of the
  rise over at least ``climb_samples`` samples,
  without falling, above every earlier peak — and only when what is left to the
  capacity, at the pace of the upper half of the rise, would take at most
  ``climb_reach`` times as long as that pace has been shown for: a forecast never
  reaches further ahead than the climb it extrapolates. Older series keep the guard
  alone: on the backtest a backup burst (a third of a disk in 30 minutes, stopping at
  83 %) has exactly a leak's shape, and the days behind it are what tell them apart.

Everything is vectorised over series: 10,000 series × 14 days at 5 minutes fit and
predict in seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple, Self

import numpy as np
import pandas as pd
from scipy.special import ndtr
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from autofix.models.base import (
    HORIZONS,
    Forecaster,
    check_long_frame,
    eta_from_line,
    probabilities_frame,
)

_Z80 = 1.2815515655446004
_NS = 1_000_000_000
_DAY = 86400.0
_NOW_WINDOW = 900.0  # seconds: "the usage now" is the peak of the last 15 minutes
_RUNAWAY_FLOOR = 0.9  # P within 1 h / 4 h of a runaway fill due inside the horizon


class EnvelopeTrendForecaster(BaseEstimator, Forecaster):
    """Peak-envelope trend forecaster (autofix's default). See the module docstring."""

    name = "default"

    def __init__(
        self,
        lookback: timedelta = timedelta(days=7),
        block: timedelta = timedelta(hours=24),
        min_blocks: int = 3,
        runaway_window: timedelta = timedelta(hours=2),
        runaway_fill: float = 0.9,
        level_noise: float = 0.01,
        slope_noise: float = 0.002,
        max_eta: timedelta = timedelta(days=30),
        slowdown: float = 0.5,
        cleanup_drop: float = 0.15,
        runaway_drawdown: float = 0.03,
        climb_rise: float = 0.25,
        climb_steady: float = 0.6,
        climb_samples: int = 4,
        climb_reach: float = 1.0,
        confirm_window: timedelta = timedelta(hours=12),
        stall: float = 0.25,
        interval_log_range: tuple[float, float] | None = None,
        interval_bins: Sequence[tuple[float | None, float, float]] | None = None,
        calibration: dict[str, tuple[list[float], list[float]]] | None = None,
        level_bands: Sequence[tuple[float, dict[str, tuple[list[float], list[float]]]]]
        | None = None,
    ) -> None:
        self.lookback = lookback
        self.block = block
        self.min_blocks = min_blocks
        self.runaway_window = runaway_window
        self.runaway_fill = runaway_fill
        self.level_noise = level_noise
        self.slope_noise = slope_noise
        self.max_eta = max_eta
        self.slowdown = slowdown
        self.cleanup_drop = cleanup_drop
        self.runaway_drawdown = runaway_drawdown
        self.climb_rise = climb_rise
        self.climb_steady = climb_steady
        self.climb_samples = climb_samples
        self.climb_reach = climb_reach
        self.confirm_window = confirm_window
        self.stall = stall
        self.interval_log_range = interval_log_range
        self.interval_bins = interval_bins
        self.calibration = calibration
        self.level_bands = level_bands

    def fit(self, frame: pd.DataFrame) -> Self:
        data = check_long_frame(frame)
        # The frame is sorted by series: codes come from where the id changes.
        raw_ids = data["series_id"].to_numpy()
        starts = (
            np.flatnonzero(np.r_[True, raw_ids[1:] != raw_ids[:-1]])
            if len(raw_ids)
            else (np.zeros(0, "int64"))
        )
        ids = raw_ids[starts]
        codes = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(raw_ids)]))
        ts = data["ts"].to_numpy("datetime64[ns]")
        value = data["value"].to_numpy("float64")
        n = len(ids)
        last_idx = np.r_[np.flatnonzero(codes[1:] != codes[:-1]), len(codes) - 1] if n else []
        origin = ts[last_idx]
        age = (origin[codes] - ts).astype("int64") / _NS  # seconds before the origin
        keep = age <= self.lookback.total_seconds()
        codes, age, value = codes[keep], age[keep], value[keep]
        n_blocks = max(2, round(self.lookback / self.block))
        block = np.minimum((age // self.block.total_seconds()).astype("int64"), n_blocks - 1)

        # Peak of each block, newest first: peaks[:, 0] is the last 24 h. A series' rows
        # run from its oldest block to its newest, so each (series, block) is one run.
        peaks = np.full((n, n_blocks), -np.inf)
        _group_reduce(np.maximum, peaks.reshape(-1), codes * n_blocks + block, value)
        peaks[~np.isfinite(peaks)] = np.nan
        changes = peaks[:, :-1] - peaks[:, 1:]  # growth from one block to the next, per block
        counts = np.sum(np.isfinite(changes), axis=1)
        # A series with one block of history has no change at all: its spread is NaN
        # (handled below), which numpy reports as a RuntimeWarning, not an error.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(np.where(counts[:, None] > 0, changes, 0.0), axis=1)
            recent = np.fmin(changes[:, 0], changes[:, 1])
            spread = 1.4826 * np.nanmedian(np.abs(changes - median[:, None]), axis=1)
        enough = counts >= self.min_blocks - 1
        growth = np.where(enough, median, np.nan)
        both_recent_up = np.isfinite(recent) & (recent > 0)
        growth = np.where(both_recent_up & ~(growth >= recent), recent, growth)
        # Growth that stopped (a backfill finished): when both recent block changes fell
        # below half the median, the old growth is history, not forecast.
        with np.errstate(invalid="ignore"):
            latest = np.fmax(changes[:, 0], changes[:, 1])
            slowed = np.isfinite(latest) & (median > 0) & (latest < self.slowdown * median)
        growth = np.where(slowed, np.maximum(latest, 0.0), growth)
        per_second = growth / self.block.total_seconds()
        # Growth that stopped hours ago: the daily peaks still rise for a day or two after
        # a backfill ends, but the last ``confirm_window`` is flat. Where that window is
        # smooth (no cleanup or GC drop in it: a sawtooth's slope there means nothing) and
        # rises at less than ``stall`` of the trend, the recent slope is the forecast.
        confirm_rows = age <= self.confirm_window.total_seconds()
        lately = _group_slope(codes[confirm_rows], -age[confirm_rows], value[confirm_rows], n)
        smooth = _group_drawdown(codes[confirm_rows], value[confirm_rows], n)
        with np.errstate(invalid="ignore"):
            stalled = (
                (smooth <= self.runaway_drawdown)
                & (per_second > 0)
                & np.isfinite(lately)
                & (lately < self.stall * per_second)
            )
        per_second = np.where(stalled, np.maximum(lately, 0.0), per_second)
        spread = np.where(np.isfinite(spread), spread, 0.0)
        slope_se = (
            np.hypot(spread / np.sqrt(np.maximum(counts, 1)), self.slope_noise)
            / self.block.total_seconds()
        )

        # Where the peaks stand now: the newest block's peak (or the last value, if higher).
        last_value = (
            value[np.r_[np.flatnonzero(codes[1:] != codes[:-1]), len(codes) - 1]]
            if (len(codes))
            else np.zeros(0)
        )
        level = np.fmax(peaks[:, 0], last_value)
        earlier_peak = np.nanmax(np.where(np.isfinite(peaks[:, 1:]), peaks[:, 1:], -np.inf), axis=1)

        # A cleanup cycle (a weekly job, a purge): a block peak that dropped by more than
        # ``cleanup_drop`` says the usage came down from a peak it never ran out at. Until
        # the usage passes that peak, the forecast does not go above it.
        with np.errstate(invalid="ignore"):
            drop_at = np.where(changes < -self.cleanup_drop, 1, 0)
        dropped = drop_at.any(axis=1)
        # The peak before the newest drop: blocks older than it (columns after it).
        first_drop = np.argmax(drop_at, axis=1)
        older = np.arange(n_blocks)[None, :] > first_drop[:, None]
        before_peak = np.nanmax(np.where(older & np.isfinite(peaks), peaks, -np.inf), axis=1)
        cap = np.where(dropped & (level < before_peak), before_peak, np.inf)
        # A cleanup inside the newest block: the usage fell well below the block's peak,
        # and the older blocks show no such fall (a daily rotation falls every day and
        # its peak is the right level). The level is then the usage since the fall.
        fall = _group_drawdown(codes * n_blocks + block, value, n * n_blocks).reshape(n, n_blocks)
        routine = np.any(fall[:, 1:] > self.cleanup_drop, axis=1)
        # "Now" is the last 15 minutes, or less when a cleanup fell inside them (a cache
        # dropped a minute ago is not full now).
        since_fall = _newest_fall(codes, age, value, n, self.cleanup_drop)
        latest_rows = age <= np.minimum(_NOW_WINDOW, since_fall[codes])
        now_peak = np.full(n, -np.inf)
        _group_reduce(np.maximum, now_peak, codes[latest_rows], value[latest_rows])
        just_cleaned = (level - now_peak > self.cleanup_drop) & ~routine
        cap = np.where(just_cleaned, np.fmin(cap, level), cap)
        level = np.where(just_cleaned, now_peak, level)

        # Runaway guard: least squares over the recent window, per series, for fills with
        # no drawdown in that window (a GC or cleanup sawtooth's rise is not a runaway).
        recent_rows = age <= self.runaway_window.total_seconds()
        fast = _group_slope(codes[recent_rows], -age[recent_rows], value[recent_rows], n)
        drawdown = _group_drawdown(codes[recent_rows], value[recent_rows], n)
        fast = np.where(drawdown <= self.runaway_drawdown, fast, np.nan)
        climb = _climb(
            codes[recent_rows], age[recent_rows], value[recent_rows], n, self.runaway_drawdown
        )
        span = np.zeros(n)
        _group_reduce(np.maximum, span, codes, age)  # how far back each series' history goes
        self.young_ = span < self.block.total_seconds()

        self.series_ids_ = ids
        self.origin_ = origin
        self.level_ = level
        self.slope_ = per_second
        self.slope_se_ = slope_se
        self.fast_slope_ = fast
        self.last_value_ = last_value
        self.earlier_peak_ = earlier_peak
        self.cap_ = cap
        self.climb_ = climb
        return self

    def predict(self, threshold: float = 1.0) -> pd.DataFrame:
        check_is_fitted(self, "slope_")
        origin = self.origin_
        start = origin.astype("datetime64[ns]")
        level, slope, se = self.level_, self.slope_, self.slope_se_
        cap = getattr(self, "cap_", np.full(len(level), np.inf))
        slope = np.where(cap < threshold, 0.0, slope)
        trend_eta = eta_from_line(origin, level, slope, threshold, self.max_eta)
        runaway = (
            (self.last_value_ >= self.runaway_fill)
            & (self.last_value_ > self.earlier_peak_)
            & (self.fast_slope_ > 0)
        )
        fast_eta = eta_from_line(
            origin, self.last_value_, self.fast_slope_, threshold, self.max_eta
        )
        climbing, climb_eta = self._sustained_climb(threshold)
        runaway |= climbing
        fast_eta = np.where(
            climbing & (np.isnat(fast_eta) | (climb_eta < fast_eta)), climb_eta, fast_eta
        )
        # A runaway fill shows its own ETA when it comes sooner than the peak trend's.
        use_fast = runaway & ~np.isnat(fast_eta) & (np.isnat(trend_eta) | (fast_eta < trend_eta))
        eta = np.where(use_fast, fast_eta, trend_eta)
        # P(exhaust within H) reads the trend's ETA: a runaway's own ETA is often early
        # (its last two hours overstate the fill) and speaks for the short horizons only,
        # through the floor below; on the tuning backtest, letting it drive 24 h and 4 d
        # too tripled the false alerts.
        remaining = _seconds_left(trend_eta, start)

        if self.interval_bins or self.interval_log_range is not None:
            # Split-conformal interval around the ETA the forecast shows (the runaway's when
            # it is sooner): the remaining time scaled by exp(q_lo) .. exp(q_hi), the
            # conformal 10th and 90th percentiles of log(true / predicted remaining time)
            # on a backtest, per band of predicted remaining time when ``interval_bins``
            # gives them (autofix.backtest.calibration).
            shown = _seconds_left(eta, start)
            q_lo, q_hi = self._interval_quantiles(shown)
            far = self.max_eta.total_seconds()  # an open bound stops at the look-ahead
            with np.errstate(invalid="ignore", over="ignore"):
                lo_s = np.where(shown > 0, np.minimum(shown * np.exp(q_lo), far), 0.0)
                hi_s = np.where(shown > 0, np.minimum(shown * np.exp(q_hi), far), 0.0)
            lo = (lo_s * 1e9).astype("int64").astype("timedelta64[ns]")
            hi = (hi_s * 1e9).astype("int64").astype("timedelta64[ns]")
            eta_lo = np.where(np.isnat(eta), eta, start + lo)
            eta_hi = np.where(np.isnat(eta), eta, start + hi)
        else:
            eta_lo = eta_from_line(origin, level, slope + _Z80 * se, threshold, self.max_eta)
            eta_hi = eta_from_line(
                origin,
                level,
                np.where(slope - _Z80 * se > 0, slope - _Z80 * se, 0),
                threshold,
                self.max_eta,
            )
            eta_lo = np.where(use_fast & (np.isnat(eta_lo) | (fast_eta < eta_lo)), fast_eta, eta_lo)
            eta_hi = np.where(use_fast & np.isnat(eta_hi), fast_eta, eta_hi)

        p: dict[str, np.ndarray] = {}
        guard: dict[str, np.ndarray] = {}
        for key, horizon in HORIZONS.items():
            h = horizon.total_seconds()
            mean = level + np.where(np.isfinite(slope), slope, 0.0) * h
            mean = np.minimum(mean, cap + self.level_noise)
            sd = np.hypot(self.level_noise, se * h)
            with np.errstate(invalid="ignore"):
                prob = ndtr((mean - threshold) / sd)
            prob = np.where(np.isfinite(slope), prob, 0.0)
            if self.interval_log_range is not None:
                # Where there is an ETA, P(T <= H) with log T spread as the backtest's
                # residuals are (normal with their 10th/90th percentiles): it rises
                # smoothly as the ETA approaches instead of jumping to 1 a day early.
                g_lo, g_hi = (float(x) for x in self.interval_log_range)
                sigma = max((g_hi - g_lo) / (2 * _Z80), 1e-3)
                shift = (g_hi + g_lo) / 2
                with np.errstate(divide="ignore"):
                    gap = np.log(h) - np.log(np.maximum(remaining, 1.0)) - shift
                prob = np.where(np.isnat(trend_eta), prob, ndtr(gap / sigma))
            prob = np.where(level >= threshold, 1.0, prob)  # already there
            if h <= timedelta(hours=4).total_seconds():
                within = (
                    runaway & ~np.isnat(fast_eta) & (fast_eta <= origin + np.timedelta64(horizon))
                )
                prob = np.where(within, np.maximum(prob, _RUNAWAY_FLOOR), prob)
                guard[key] = within
            p[key] = prob
        if self.calibration:
            # The raw scores are calibrated as they are, then made coherent across
            # horizons; the runaway guard is then applied again to the short horizons. A
            # guard, not a frequency: in the tuning backtest the only runaways at 90-95 %
            # are backup bursts that stop at 93 %, so calibrated they read 0.2 within 4 h,
            # and a worker leaking megabytes a second was restarted after its limit. It
            # is not carried to 24 h (that tripled the false alerts a day early).
            p = _cumulative(self._calibrated(p, threshold))
            for key, within in guard.items():
                p[key] = np.where(within, np.maximum(p[key], _RUNAWAY_FLOOR), p[key])
        return probabilities_frame(self.series_ids_, origin, eta, eta_lo, eta_hi, p, self.name)

    def _sustained_climb(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Which series climb as a runaway below ``runaway_fill``, and their ETAs at the
        climb's pace (see the module docstring)."""
        n = len(self.last_value_)
        climb = getattr(self, "climb_", None)
        if climb is None:  # fitted before the sustained climb existed (a pickled model)
            return np.zeros(n, bool), np.full(n, np.datetime64("NaT"), "datetime64[ns]")
        last = self.last_value_
        with np.errstate(invalid="ignore", divide="ignore"):
            # Its pace now: that of the upper half of its rise; the time it has shown
            # that pace for, twice what that half took.
            rate = (climb.rise / 2) / climb.upper_seconds
            left = (threshold - last) / rate
            # Steady over the whole climb (a warm-up levels off) and over its upper half
            # (a backup written in a second, then held, is a step and a plateau).
            steady = (climb.second_half >= self.climb_steady * (climb.rise - climb.second_half)) & (
                climb.upper_second_half
                >= self.climb_steady * (climb.rise / 2 - climb.upper_second_half)
            )
            climbing = (
                getattr(self, "young_", np.zeros(n, bool))
                & (climb.rise >= self.climb_rise)
                & (climb.upper_samples >= self.climb_samples)
                & steady
                & (climb.drawdown <= self.runaway_drawdown)
                & (last > self.earlier_peak_)
                & (last < threshold)
                & (left <= self.climb_reach * 2 * climb.upper_seconds)
            )
        eta = eta_from_line(
            self.origin_, last, np.where(climbing, rate, 0.0), threshold, self.max_eta
        )
        return climbing & ~np.isnat(eta), eta

    def _calibrated(self, raw: dict[str, np.ndarray], threshold: float) -> dict[str, np.ndarray]:
        """Isotonic maps from raw P to the frequency observed in a backtest, per horizon:
        ``calibration`` for every series, and above each ``level_bands`` edge (usage now,
        as a fill ratio) the map fitted on the origins that were that full. Mondrian, as
        the interval: a disk at 99 % whose trend says "full in 20 minutes" is right far
        more often than a backup burst at 92 % saying the same, and one map for both
        capped the first at the second's frequency. Each origin is read by its own band's
        map only: the bands are different populations (a flat disk at 97 % under a
        retention limit is safer than a flat one at 90 % whose GC teeth may break out)."""
        assert self.calibration is not None
        out = dict(raw)
        for key, (xs, ys) in self.calibration.items():
            if key in raw:
                out[key] = np.interp(raw[key], np.asarray(xs), np.asarray(ys))
        for edge, maps in self.level_bands or ():
            above = self.last_value_ >= float(edge) * threshold
            for key, (xs, ys) in maps.items():
                if key in raw:
                    band = np.interp(raw[key], np.asarray(xs), np.asarray(ys))
                    out[key] = np.where(above, band, out[key])
        return out

    def _interval_quantiles(self, remaining: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(q_lo, q_hi) per series: from the band its predicted remaining time falls in."""
        if not self.interval_bins:
            assert self.interval_log_range is not None
            g_lo, g_hi = (float(x) for x in self.interval_log_range)
            return np.full(len(remaining), g_lo), np.full(len(remaining), g_hi)
        uppers = np.array(
            [np.inf if up is None else float(up) * 3600.0 for up, _, _ in self.interval_bins]
        )
        which = np.minimum(np.searchsorted(uppers, remaining, side="left"), len(uppers) - 1)
        q_lo = np.array([float(lo) for _, lo, _ in self.interval_bins])[which]
        q_hi = np.array([float(hi) for _, _, hi in self.interval_bins])[which]
        return q_lo, q_hi


def _cumulative(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """P(exhaust within H) never falls as H grows (a disk full within 1 h is full within
    4 days): the running maximum over the horizons, shortest first. Without it a runaway
    fill at 99 % could read 0.9 within 4 h and 0.16 within 24 h."""
    out: dict[str, np.ndarray] = {}
    running: np.ndarray | None = None
    for key in HORIZONS:
        if key in p:
            running = p[key] if running is None else np.maximum(running, p[key])
            out[key] = running
    return out


def _seconds_left(eta: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Seconds from each origin to its ETA (0 where there is none)."""
    left: np.ndarray = np.where(np.isnat(eta), 0, (eta - start).astype("int64")) / 1e9
    return left


def _group_slope(codes: np.ndarray, x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """Least-squares slope of y on x per group (NaN with fewer than 3 points)."""
    count = np.bincount(codes, minlength=n).astype("float64")
    sx = np.bincount(codes, x, minlength=n)
    sy = np.bincount(codes, y, minlength=n)
    with np.errstate(all="ignore"):
        mx, my = sx / count, sy / count
        sxx = np.bincount(codes, (x - mx[codes]) ** 2, minlength=n)
        sxy = np.bincount(codes, (x - mx[codes]) * (y - my[codes]), minlength=n)
        slope = sxy / sxx
    return np.where((count >= 3) & (sxx > 0), slope, np.nan)


def _newest_fall(
    codes: np.ndarray, age: np.ndarray, y: np.ndarray, n: int, step: float
) -> np.ndarray:
    """Per group (rows sorted by group, then time): the age of the newest sample that fell
    more than ``step`` below the one before it (inf where none did)."""
    since = np.full(n, np.inf)
    if len(codes) > 1:
        same = codes[1:] == codes[:-1]
        fell = np.r_[False, same & (y[1:] < y[:-1] - step)]
        np.minimum.at(since, codes[fell], age[fell])
    return since


class _Climb(NamedTuple):
    """The current climb of each series (see ``_climb``)."""

    rise: np.ndarray  # from its lowest value to its last
    seconds: np.ndarray  # since that lowest value
    upper_samples: np.ndarray  # samples in the upper half of the rise
    second_half: np.ndarray  # the rise over the second half of that time
    drawdown: np.ndarray  # the largest fall after the lowest value
    upper_seconds: np.ndarray  # how long the upper half of the rise took
    upper_second_half: np.ndarray  # the rise over the second half of that time


def _climb(codes: np.ndarray, age: np.ndarray, y: np.ndarray, n: int, step: float) -> _Climb:
    """Per group (rows sorted by group, then time; ``age`` in seconds before the origin),
    the climb since the last step down larger than ``step`` (a cleanup or a restart starts
    a new climb) from its lowest value on."""
    if len(codes) > 1:
        keep = age <= _newest_fall(codes, age, y, n, step)[codes]
        codes, age, y = codes[keep], age[keep], y[keep]
    low = np.full(n, np.inf)
    _group_reduce(np.minimum, low, codes, y)
    at_low = y <= low[codes]
    low_age = np.full(n, np.inf)
    _group_reduce(np.minimum, low_age, codes[at_low], age[at_low])  # the latest time at the low
    after = age < low_age[codes]
    last = np.full(n, np.nan)
    if len(codes):
        ends = np.r_[np.flatnonzero(codes[1:] != codes[:-1]), len(codes) - 1]
        last[codes[ends]] = y[ends]
    # The value at the climb's midpoint in time: the lowest one in its second half.
    mid = np.full(n, np.inf)
    second = after & (age <= low_age[codes] / 2)
    _group_reduce(np.minimum, mid, codes[second], y[second])
    # When the climb was last at half its rise: the upper half's pace is the pace now
    # (a leak that began after a quiet start climbs faster than the average since).
    with np.errstate(invalid="ignore"):
        halfway = (low + last) / 2
    below = after & (y <= halfway[codes])
    upper = np.where(np.isfinite(low_age), low_age, 0.0)
    _group_reduce(np.minimum, upper, codes[below], age[below])
    upper_samples = np.bincount(codes[after & (age < upper[codes])], minlength=n)
    upper_mid = np.full(n, np.inf)
    late = after & (age <= upper[codes] / 2)
    _group_reduce(np.minimum, upper_mid, codes[late], y[late])
    with np.errstate(invalid="ignore"):
        rise = last - low
        second_half = np.where(np.isfinite(mid), last - mid, 0.0)
        upper_second_half = np.where(np.isfinite(upper_mid), last - upper_mid, 0.0)
    return _Climb(
        rise,
        np.where(np.isfinite(low_age), low_age, 0.0),
        upper_samples,
        second_half,
        _group_drawdown(codes[after], y[after], n),
        upper,
        upper_second_half,
    )


def _group_drawdown(codes: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """Largest fall from a running peak per group (rows sorted by group, then time)."""
    out = np.zeros(n)
    if len(codes) == 0:
        return out
    running = pd.Series(y).groupby(codes).cummax().to_numpy()
    _group_reduce(np.maximum, out, codes, running - y)
    return out


def _group_reduce(op: np.ufunc, out: np.ndarray, codes: np.ndarray, values: np.ndarray) -> None:
    """``op.at(out, codes, values)`` for rows grouped by code (each code's rows in one run).

    ``op.reduceat`` over the runs, then one update per group: the same result for
    ``np.maximum`` and ``np.minimum``, which do not depend on order, an order of magnitude
    faster than ``op.at``'s per-row updates on a backtest's millions of rows.
    """
    if len(codes) == 0:
        return
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    groups = codes[starts]
    out[groups] = op(out[groups], op.reduceat(values, starts))
