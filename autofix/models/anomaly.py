"""Anomaly scorers: a continuous score in [0, 1] per point, computed causally and online.

A point's score uses only that point and earlier points of its series, so a history can
be scored in one batch (``score_samples``) or point by point as samples arrive
(``fit`` on the history, then ``score_new`` / ``update``) with identical results. Both
scorers run one vectorised recurrence over all series in lock-step (the i-th point of
every series at once), so a fleet costs one pass over time, not one Python loop per
series.

``RobustScorer`` (the default) keeps, per series:

- after a warm-up of ``warmup`` points, a decision on what to model: the rate of a
  counter-like series (Prometheus ``rate`` semantics, resets included) or the value, on a
  log scale when the series is positive (latency is multiplicative, so a x3 slowdown is
  the same distance at 1 ms and at 1 s);
- a level (EWMA, time-based half-life, so gaps and irregular sampling behave) plus a
  seasonal offset per hour of day (additive Holt-Winters), fed only with points inside
  ``clip`` robust standard deviations, so an incident does not teach the model that it
  is normal; a robust scale (EWMA of absolute residuals of those same points);
- level-shift acceptance: after ``adapt_after`` seconds of consecutive outliers on the
  same side the level jumps to the new regime (a deploy step stops alarming; a 2-hour
  slowdown does not get absorbed);
- persistence: the per-point evidence (robust z, one-sided by default, capped at ``cap``)
  is smoothed with weight ``persistence`` per point, so a 1-2 point burst scores well
  below a sustained slowdown of the same height: with the defaults a strong slowdown
  crosses 0.5 on its 3rd-4th point, a burst of two points never does.

The score is the Hill function ``e**k / (e**k + midpoint**k)`` of the smoothed evidence:
0 for normal points, 0.5 when evidence reaches ``midpoint`` robust sigmas, towards 1
above. ``RollingZScore`` is the comparison anchor: the z-score of a point against the mean
and standard deviation of the previous ``window`` points, squashed the same way.

Thresholds belong to the policy; ``default_threshold`` is the one the backtest uses.

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"series_id": "a",
    ...                       "ts": pd.date_range("2024-01-01", periods=60, freq="5min"),
    ...                       "value": [0.04] * 50 + [0.4] * 10})
    >>> scores = RobustScorer().fit_score(frame)
    >>> bool(scores[:50].max() < 0.1), bool(scores[-1] > 0.9)
    (True, True)
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from autofix.errors import InputError

__all__ = ["SCORERS", "RobustScorer", "RollingZScore", "make_scorer"]

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
State = dict[str, np.ndarray]
DAY = 86400.0
LN2 = float(np.log(2.0))


def _hill(evidence: F64, midpoint: float, sharpness: float) -> F64:
    """Map evidence >= 0 to [0, 1): 0.5 at ``midpoint``."""
    e = np.maximum(evidence, 0.0) / midpoint
    p = e**sharpness
    return np.asarray(p / (1.0 + p), dtype=np.float64)


def _one_sided(z: F64, direction: str) -> F64:
    if direction == "up":
        return np.maximum(z, 0.0)
    if direction == "down":
        return np.maximum(-z, 0.0)
    return np.abs(z)


class _OnlineScorer(BaseEstimator):
    """Shared driver: long frame in, lock-step recurrence, scores out in input order.

    Subclasses define the per-series state (``_new_state``) and one vectorised step
    (``_step``) over the series that have a point at this position.
    """

    default_threshold: ClassVar[float] = 0.5

    # -- subclass hooks ----------------------------------------------------------------

    def _new_state(self, n: int) -> State:
        raise NotImplementedError

    def _step(self, state: State, idx: I64, t: F64, v: F64) -> F64:
        raise NotImplementedError

    def _check_params(self) -> None:
        pass

    # -- public API --------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, y: None = None) -> _OnlineScorer:
        """Consume a history (``series_id, ts, value``) into per-series online state."""
        self.fit_score(frame)
        return self

    def fit_score(self, frame: pd.DataFrame) -> F64:
        """``fit`` and return the history's causal scores (one pass; = ``score_samples``)."""
        self._check_params()
        self.series_: dict[Hashable, int] = {}
        self.state_: State = self._new_state(0)
        scores, self.state_ = self._run(frame, self.series_, self.state_, "frame")
        return scores

    def score_samples(self, frame: pd.DataFrame) -> F64:
        """Causal scores in [0, 1] for every row of ``frame``, each series from scratch.

        Rows come back in input order; a non-finite value, or a timestamp not after the
        previous one of its series, gets NaN and leaves the state untouched.
        """
        check_is_fitted(self)
        series: dict[Hashable, int] = {}
        return self._run(frame, series, self._new_state(0), "frame")[0]

    def score_new(self, frame: pd.DataFrame) -> F64:
        """Score points that follow the history seen so far, and remember them."""
        check_is_fitted(self)
        scores, self.state_ = self._run(frame, self.series_, self.state_, "frame")
        return scores

    def update(self, series_id: Hashable, ts: Any, value: float) -> float:
        """Score one new point of one series (the streaming path) and remember it."""
        check_is_fitted(self)
        stamp = pd.Timestamp(ts)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        t = np.array([stamp.value / 1e9])
        v = np.array([float(value)])
        if series_id not in self.series_:
            self.series_[series_id] = len(self.series_)
            self.state_ = _grow(self.state_, self._new_state(1))
        idx = np.array([self.series_[series_id]], dtype=np.int64)
        fresh = np.isfinite(v) & (t > self.state_["last_t"][idx])
        if not fresh[0]:
            log.debug("series %r: point at %s is not new; not scored", series_id, stamp)
            return float("nan")
        return float(self._step(self.state_, idx, t, v)[0])

    # -- driver ------------------------------------------------------------------------

    def _run(
        self, frame: pd.DataFrame, series: dict[Hashable, int], state: State, where: str
    ) -> tuple[F64, State]:
        missing = [c for c in ("series_id", "ts", "value") if c not in frame.columns]
        if missing:
            raise InputError(f"{where}: missing column {missing[0]!r}")
        n_rows = len(frame)
        scores = np.full(n_rows, np.nan)
        if n_rows == 0:
            return scores, state
        ts = pd.to_datetime(frame["ts"])
        if isinstance(ts.dtype, pd.DatetimeTZDtype):
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        t = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
        v = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=np.float64)
        keys = frame["series_id"].to_numpy()
        codes, uniques = pd.factorize(keys, sort=False)
        new = [k for k in uniques if k not in series]
        for k in new:
            series[k] = len(series)
        if new:
            state = _grow(state, self._new_state(len(new)))
        lookup = np.array([series[k] for k in uniques], dtype=np.int64)
        sid = lookup[codes]
        ok = np.isfinite(v) & np.isfinite(t)
        rows = np.flatnonzero(ok)
        # Stable sort by (series, time); then keep a row only if it is newer than the one
        # before it in its series (and than the state's last point).
        order = rows[np.lexsort((t[rows], sid[rows]))]
        s_sorted, t_sorted = sid[order], t[order]
        prev_t = np.empty_like(t_sorted)
        prev_t[1:] = t_sorted[:-1]
        first = np.ones(order.size, dtype=bool)
        first[1:] = s_sorted[1:] != s_sorted[:-1]
        prev_t[first] = -np.inf
        newer = (t_sorted > prev_t) & (t_sorted > state["last_t"][s_sorted])
        if not newer.all():
            log.debug("%s: %d stale or duplicate points not scored", where, (~newer).sum())
        order, s_sorted, t_sorted = order[newer], s_sorted[newer], t_sorted[newer]
        if order.size == 0:
            return scores, state
        # Position of each point within its series: the lock-step column it runs in.
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        lengths = np.diff(np.r_[starts, s_sorted.size])
        pos = np.arange(s_sorted.size) - np.repeat(starts, lengths)
        by_pos = np.argsort(pos, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(pos[by_pos]) != 0, True])
        for a, b in itertools.pairwise(bounds):
            cols = by_pos[a:b]
            rows_here = order[cols]
            scores[rows_here] = self._step(state, s_sorted[cols], t_sorted[cols], v[rows_here])
        return scores, state


def _grow(state: State, extra: State) -> State:
    return {k: np.concatenate([state[k], extra[k]]) for k in state}


# -- the default scorer ----------------------------------------------------------------


class RobustScorer(_OnlineScorer):
    """Robust seasonal level/scale with persistence; see the module docstring.

    Durations are in seconds. ``default_threshold`` (0.5) means "smoothed evidence
    reached ``midpoint`` robust sigmas".
    """

    default_threshold: ClassVar[float] = 0.5

    def __init__(
        self,
        *,
        warmup: int = 20,
        level_halflife: float = 3600.0,
        scale_halflife: float = 6 * 3600.0,
        season_bins: int = 24,
        season_rate: float = 0.5,
        adapt_after: float = 3 * 3600.0,
        clip: float = 4.0,
        cap: float = 10.0,
        persistence: float = 0.8,
        midpoint: float = 5.0,
        sharpness: float = 4.0,
        min_scale: float = 0.02,
        transform: Literal["auto", "log", "none"] = "auto",
        counter: bool | None = None,
        direction: Literal["up", "down", "both"] = "up",
    ) -> None:
        self.warmup = warmup
        self.level_halflife = level_halflife
        self.scale_halflife = scale_halflife
        self.season_bins = season_bins
        self.season_rate = season_rate
        self.adapt_after = adapt_after
        self.clip = clip
        self.cap = cap
        self.persistence = persistence
        self.midpoint = midpoint
        self.sharpness = sharpness
        self.min_scale = min_scale
        self.transform = transform
        self.counter = counter
        self.direction = direction

    def _check_params(self) -> None:
        if self.warmup < 3:
            raise InputError(f"warmup must be >= 3 points, got {self.warmup}")
        if not 0.0 <= self.persistence < 1.0:
            raise InputError(f"persistence must be in [0, 1), got {self.persistence}")
        if self.transform not in ("auto", "log", "none"):
            raise InputError(f"transform must be auto, log or none, got {self.transform!r}")
        if self.direction not in ("up", "down", "both"):
            raise InputError(f"direction must be up, down or both, got {self.direction!r}")
        if min(self.level_halflife, self.scale_halflife, self.adapt_after) <= 0:
            raise InputError("half-lives and adapt_after must be positive")
        if min(self.clip, self.cap, self.midpoint, self.sharpness) <= 0:
            raise InputError("clip, cap, midpoint and sharpness must be positive")

    def _new_state(self, n: int) -> State:
        w, bins = self.warmup, max(self.season_bins, 1)
        return {
            "n": np.zeros(n, dtype=np.int64),  # points seen
            "buf_t": np.zeros((n, w)),  # warm-up buffer
            "buf_v": np.zeros((n, w)),
            "last_t": np.full(n, -np.inf),
            "last_raw": np.zeros(n),
            "is_counter": np.zeros(n, dtype=bool),
            "use_log": np.zeros(n, dtype=bool),
            "offset": np.zeros(n),  # added before the log so zeros stay finite
            "level": np.zeros(n),
            "mad": np.zeros(n),  # EWMA of |residual| of inliers
            "season": np.zeros((n, bins)),
            "run_t": np.zeros(n),  # when the current same-sided outlier run began
            "run_sign": np.zeros(n),
            "run_sum": np.zeros(n),  # residual sum over the run
            "run_n": np.zeros(n),
            "evidence": np.zeros(n),
        }

    # -- one lock-step column ------------------------------------------------------------

    def _step(self, state: State, idx: I64, t: F64, v: F64) -> F64:
        scores = np.zeros(idx.size)
        n = state["n"][idx]
        warming = n < self.warmup
        if warming.any():
            wi, wt, wv = idx[warming], t[warming], v[warming]
            state["buf_t"][wi, n[warming]] = wt
            state["buf_v"][wi, n[warming]] = wv
            state["n"][wi] += 1
            state["last_t"][wi] = wt
            state["last_raw"][wi] = wv
            done = wi[state["n"][wi] == self.warmup]
            if done.size:
                self._initialise(state, done)
        live = ~warming
        if live.any():
            scores[live] = self._score(state, idx[live], t[live], v[live])
        return scores

    def _to_model_space(self, state: State, idx: I64, x: F64) -> F64:
        """Values (1-D, one per series, or 2-D, a row per series) on the modelled scale."""
        use_log, offset = state["use_log"][idx], state["offset"][idx]
        if x.ndim == 2:
            use_log, offset = use_log[:, None], offset[:, None]
        return np.where(use_log, np.log(np.maximum(x + offset, 1e-12)), x)

    def _rates(self, prev: F64, cur: F64, dt: F64) -> F64:
        # Prometheus rate semantics: a drop is a counter reset, the new value is the increase.
        inc = np.where(cur >= prev, cur - prev, cur)
        return np.asarray(inc / np.maximum(dt, 1e-9), dtype=np.float64)

    def _initialise(self, state: State, idx: I64) -> None:
        bt, bv = state["buf_t"][idx], state["buf_v"][idx]
        diffs = np.diff(bv, axis=1)
        if self.counter is None:
            is_counter = ((diffs >= 0).mean(axis=1) >= 0.9) & ((diffs > 0).mean(axis=1) >= 0.5)
        else:
            is_counter = np.full(idx.size, bool(self.counter))
        rates = self._rates(bv[:, :-1], bv[:, 1:], np.diff(bt, axis=1))
        # Counters model their rate (one value fewer); pad with the first rate.
        x = np.where(is_counter[:, None], np.c_[rates[:, :1], rates], bv)
        med = np.median(x, axis=1)
        if self.transform == "none":
            use_log = np.zeros(idx.size, dtype=bool)
        elif self.transform == "log":
            use_log = np.ones(idx.size, dtype=bool)
        else:
            use_log = (x.min(axis=1) >= 0) & (med > 0)
        state["is_counter"][idx] = is_counter
        state["use_log"][idx] = use_log
        state["offset"][idx] = np.where(use_log, 0.05 * np.abs(med), 0.0)
        y = self._to_model_space(state, idx, x)
        level = np.median(y, axis=1)
        mad = np.median(np.abs(y - level[:, None]), axis=1) * 1.4826 * 0.7979
        state["level"][idx] = level
        state["mad"][idx] = mad
        state["evidence"][idx] = 0.0

    def _scale(self, state: State, idx: I64) -> F64:
        level = state["level"][idx]
        floor = np.where(state["use_log"][idx], self.min_scale, self.min_scale * np.abs(level))
        return np.asarray(np.maximum(state["mad"][idx] * 1.2533, np.maximum(floor, 1e-12)))

    def _score(self, state: State, idx: I64, t: F64, v: F64) -> F64:
        dt = t - state["last_t"][idx]
        is_counter = state["is_counter"][idx]
        x = np.where(is_counter, self._rates(state["last_raw"][idx], v, dt), v)
        state["last_t"][idx] = t
        state["last_raw"][idx] = v
        state["n"][idx] += 1
        y = self._to_model_space(state, idx, x)

        bins = max(self.season_bins, 1)
        h = ((t % DAY) / DAY * bins).astype(np.int64) % bins
        season = state["season"][idx, h] if self.season_bins > 0 else np.zeros(idx.size)
        level = state["level"][idx]
        sigma = self._scale(state, idx)
        r = y - level - season
        z = r / sigma

        # Persistence: smoothed, capped, one-sided evidence.
        e = np.minimum(_one_sided(z, self.direction), self.cap)
        evidence = self.persistence * state["evidence"][idx] + (1 - self.persistence) * e
        state["evidence"][idx] = evidence

        # Inliers teach the model; outliers only extend a run that may become a new level.
        inlier = np.abs(z) <= self.clip
        sign = np.sign(r)
        same_run = ~inlier & (state["run_sign"][idx] == sign) & (state["run_n"][idx] > 0)
        run_t = np.where(same_run, state["run_t"][idx], t)
        run_sum = np.where(same_run, state["run_sum"][idx], 0.0) + np.where(inlier, 0.0, r)
        run_n = np.where(same_run, state["run_n"][idx], 0.0) + np.where(inlier, 0.0, 1.0)
        shifted = ~inlier & (t - run_t >= self.adapt_after)

        n_live = (state["n"][idx] - self.warmup).astype(np.float64)
        # Time-based EWMAs (gaps and irregular steps behave); early on, the running mean of
        # the warm-up and every inlier since, so a short history is not dominated by noise.
        early = 1 / (n_live + self.warmup)
        a_level = np.maximum(-np.expm1(-dt * LN2 / self.level_halflife), early)
        a_scale = np.maximum(-np.expm1(-dt * LN2 / self.scale_halflife), early)
        a_level = np.where(inlier, a_level, 0.0)
        new_level = level + a_level * r
        new_level = np.where(shifted, level + run_sum / np.maximum(run_n, 1), new_level)
        state["level"][idx] = new_level
        state["mad"][idx] += np.where(inlier, a_scale * (np.abs(r) - state["mad"][idx]), 0.0)
        if self.season_bins > 0:
            # Each hour bin learns ~season_rate of its residual per day, whatever the step.
            g = -np.expm1(-self.season_rate * np.minimum(dt, DAY / bins) / (DAY / bins))
            g = np.where(inlier, g, 0.0)
            state["season"][idx, h] = season + g * (1 - a_level) * r
        state["run_t"][idx] = np.where(shifted | inlier, 0.0, run_t)
        state["run_sign"][idx] = np.where(shifted | inlier, 0.0, sign)
        state["run_sum"][idx] = np.where(shifted | inlier, 0.0, run_sum)
        state["run_n"][idx] = np.where(shifted | inlier, 0.0, run_n)
        return _hill(evidence, self.midpoint, self.sharpness)


# -- the baseline --------------------------------------------------------------------


class RollingZScore(_OnlineScorer):
    """Baseline: z of a point against the previous ``window`` points' mean and std.

    Squashed with the same Hill function as the default scorer, so ``default_threshold``
    0.5 means z >= ``midpoint`` (3, the classic three-sigma rule). Scores 0 until
    ``min_periods`` points are in the window.
    """

    default_threshold: ClassVar[float] = 0.5

    def __init__(
        self,
        *,
        window: int = 120,
        min_periods: int = 20,
        midpoint: float = 3.0,
        sharpness: float = 4.0,
        direction: Literal["up", "down", "both"] = "up",
    ) -> None:
        self.window = window
        self.min_periods = min_periods
        self.midpoint = midpoint
        self.sharpness = sharpness
        self.direction = direction

    def _check_params(self) -> None:
        if self.window < 2 or not 2 <= self.min_periods <= self.window:
            raise InputError(
                f"need 2 <= min_periods <= window, got {self.min_periods}, {self.window}"
            )
        if self.direction not in ("up", "down", "both"):
            raise InputError(f"direction must be up, down or both, got {self.direction!r}")

    def _new_state(self, n: int) -> State:
        return {
            "n": np.zeros(n, dtype=np.int64),
            "ring": np.zeros((n, self.window)),
            "ref": np.zeros(n),  # first value: sums are kept around it against cancellation
            "sum": np.zeros(n),
            "sumsq": np.zeros(n),
            "last_t": np.full(n, -np.inf),
        }

    def _step(self, state: State, idx: I64, t: F64, v: F64) -> F64:
        n = state["n"][idx]
        state["ref"][idx] = np.where(n == 0, v, state["ref"][idx])
        ref = state["ref"][idx]
        k = np.minimum(n, self.window).astype(np.float64)
        total, total_sq = state["sum"][idx], state["sumsq"][idx]
        cnt = np.maximum(k, 1.0)
        mean = total / cnt
        var = np.maximum(total_sq - total * mean, 0.0) / np.maximum(cnt - 1, 1.0)
        std = np.sqrt(var)
        z = (v - ref - mean) / np.maximum(std, 1e-12 + 1e-9 * np.abs(mean + ref))
        evidence = _one_sided(z, self.direction)
        scores = np.where(
            k >= self.min_periods, _hill(evidence, self.midpoint, self.sharpness), 0.0
        )
        # Slide the window: the oldest value leaves once it is full.
        slot = n % self.window
        old = np.where(n >= self.window, state["ring"][idx, slot], 0.0)
        full = n >= self.window
        x = v - ref
        state["sum"][idx] = total + x - old
        state["sumsq"][idx] = total_sq + x * x - np.where(full, old * old, 0.0)
        state["ring"][idx, slot] = x
        state["n"][idx] = n + 1
        state["last_t"][idx] = t
        return np.asarray(scores, dtype=np.float64)


SCORERS: dict[str, type[_OnlineScorer]] = {"default": RobustScorer, "zscore": RollingZScore}


def make_scorer(name: str, **params: Any) -> _OnlineScorer:
    """A scorer by its CLI name (``default`` or ``zscore``)."""
    try:
        cls = SCORERS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; known: {', '.join(SCORERS)}") from None
    return cls(**params)
