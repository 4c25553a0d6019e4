"""The robust seasonal model, and the two scores read from it (sustained state, onset).

Per series, online and vectorised over series:

- after a warm-up of ``warmup`` points, a decision on what to model: the rate of a
  counter-like series (Prometheus ``rate`` semantics, resets included) or the value, on a
  log scale when the series is positive (latency is multiplicative, so a x3 slowdown is
  the same distance at 1 ms and at 1 s); the typical sampling step;
- a level (EWMA with a time-based half-life, so gaps and irregular sampling behave), a
  daily profile of ``season_bins`` bins and a day-of-week offset (additive Holt-Winters).
  The level and the robust scale (EWMA of absolute residuals) learn only from points
  inside ``clip`` robust sigmas, so an incident does not teach the model that it is
  normal. The seasonal profile learns from inliers and, with ``season_outlier_weight``
  > 0, from outliers too with their residual winsorised at ``season_clip`` sigmas (after
  Gelper, Fried & Croux's robust Holt-Winters): a shape that comes back every day is then
  learned even where it first looked like an outlier, while an incident moves the
  expectation by a small bounded amount (the onset scorer does this; the state scorer
  keeps inliers only, so a long slowdown is never learned as "the usual 3 pm");
- level-shift acceptance: after ``adapt_after`` seconds of consecutive outliers on one
  side the level jumps to the new regime (a deploy step stops alarming after a while; a
  short slowdown does not get absorbed).

``RobustScorer`` reads a *state*: robust z (one-sided by ``direction``), smoothed with
weight ``persistence`` per point, through a Hill curve; it stays high while a slowdown
lasts (rules say "score >= 0.9 for 5m"), and a 1-2 point burst scores well below a
sustained slowdown of the same height.

``OnsetScorer`` reads *news*: how far the current point goes beyond the worst this series
has shown before (a slowly forgotten record of its surprises and of its value range).
The first point of a new kind of trouble scores high; the same trouble continuing, or
trouble as bad as what has been seen before, scores lower. That is what an event
detector that pages once per incident needs, and what NAB measures.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from autofix.errors import InputError
from autofix.models.anomaly._online import (
    DAY,
    F64,
    I64,
    LN2,
    OnlineScorer,
    State,
    check_direction,
    hill,
    one_sided,
)

Dir = Literal["up", "down", "both"]
_WEEKDAY_OF_EPOCH = 3  # 1970-01-01 was a Thursday: Monday is day 0


class RobustScorer(OnlineScorer):
    """Robust seasonal level/scale with persistence (the default; see the module docstring).

    Durations are in seconds. ``default_threshold`` (0.5) means "smoothed evidence
    reached ``midpoint`` robust sigmas".

        >>> import pandas as pd
        >>> frame = pd.DataFrame({"series_id": "a",
        ...                       "ts": pd.date_range("2024-01-01", periods=60, freq="5min"),
        ...                       "value": [0.04] * 50 + [0.4] * 10})
        >>> scores = RobustScorer().fit_score(frame)
        >>> bool(scores[:50].max() < 0.1), bool(scores[-1] > 0.9)
        (True, True)
    """

    default_threshold: ClassVar[float] = 0.5

    def __init__(
        self,
        *,
        warmup: int = 20,
        level_halflife: float = 3600.0,
        scale_halflife: float = 6 * 3600.0,
        season_bins: int = 24,
        weekly: bool = True,
        season_rate: float = 0.5,
        season_clip: float = 8.0,
        season_outlier_weight: float = 0.0,
        scale_outlier_weight: float = 0.0,
        adapt_after: float = 3 * 3600.0,
        clip: float = 4.0,
        cap: float = 10.0,
        persistence: float = 0.8,
        midpoint: float = 5.0,
        sharpness: float = 4.0,
        min_scale: float = 0.02,
        transform: Literal["auto", "log", "none"] = "auto",
        counter: bool | None = None,
        direction: Dir = "up",
    ) -> None:
        self.warmup = warmup
        self.level_halflife = level_halflife
        self.scale_halflife = scale_halflife
        self.season_bins = season_bins
        self.weekly = weekly
        self.season_rate = season_rate
        self.season_clip = season_clip
        self.season_outlier_weight = season_outlier_weight
        self.scale_outlier_weight = scale_outlier_weight
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
        check_direction(self.direction)
        if min(self.level_halflife, self.scale_halflife, self.adapt_after) <= 0:
            raise InputError("half-lives and adapt_after must be positive")
        if min(self.clip, self.cap, self.midpoint, self.sharpness, self.season_clip) <= 0:
            raise InputError("clip, season_clip, cap, midpoint and sharpness must be positive")

    def _new_state(self, n: int) -> State:
        w, bins = self.warmup, max(self.season_bins, 1)
        return {
            "n": np.zeros(n, dtype=np.int64),  # points seen
            "buf_t": np.zeros((n, w)),  # warm-up buffer
            "buf_v": np.zeros((n, w)),
            "last_t": np.full(n, -np.inf),
            "last_raw": np.zeros(n),
            "last_x": np.zeros(n),  # last modelled value (a counter's last rate)
            "step": np.ones(n),  # typical sampling step, seconds
            "is_counter": np.zeros(n, dtype=bool),
            "use_log": np.zeros(n, dtype=bool),
            "offset": np.zeros(n),  # added before the log so zeros stay finite
            "level": np.zeros(n),
            "mad": np.zeros(n),  # EWMA of |residual| of inliers
            "season": np.zeros((n, bins)),
            "week": np.zeros((n, 7)),
            "run_t": np.zeros(n),  # when the current same-sided outlier run began
            "run_sign": np.zeros(n),
            "run_sum": np.zeros(n),  # residual sum over the run
            "run_n": np.zeros(n),
            "evidence": np.zeros(n),
            **self._extra_state(n),
        }

    def _extra_state(self, n: int) -> State:
        return {}

    # -- one lock-step column ------------------------------------------------------------

    def _step(self, state: State, idx: I64, t: F64, v: F64) -> F64:
        scores = np.zeros(idx.size)
        n = state["n"][idx]
        warming = n < self.warmup
        if warming.any():
            wi, wt, wv = idx[warming], t[warming], v[warming]
            state["buf_t"][wi, n[warming]] = np.maximum(wt, state["last_t"][wi])
            state["buf_v"][wi, n[warming]] = wv
            state["n"][wi] += 1
            state["last_t"][wi] = np.maximum(wt, state["last_t"][wi])
            state["last_raw"][wi] = wv
            done = wi[state["n"][wi] == self.warmup]
            if done.size:
                self._initialise(state, done)
        live = ~warming
        if live.any():
            z, y, eff = self._observe(state, idx[live], t[live], v[live])
            scores[live] = self._read(state, idx[live], z, y, eff)
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
        dts = np.diff(bt, axis=1)
        positive = np.where(dts > 0, dts, np.nan)
        none = np.asarray(np.isnan(positive).all(axis=1))
        step = np.nanmedian(np.where(none[:, None], 60.0, positive), axis=1)
        rates = self._rates(bv[:, :-1], bv[:, 1:], np.where(dts > 0, dts, step[:, None]))
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
        state["step"][idx] = step
        state["last_x"][idx] = x[:, -1]
        y = self._to_model_space(state, idx, x)
        level = np.median(y, axis=1)
        mad = np.median(np.abs(y - level[:, None]), axis=1) * 1.4826 * 0.7979
        state["level"][idx] = level
        state["mad"][idx] = mad
        state["evidence"][idx] = 0.0
        self._initialise_extra(state, idx, y)

    def _initialise_extra(self, state: State, idx: I64, y: F64) -> None:
        pass

    def _scale(self, state: State, idx: I64) -> F64:
        level = state["level"][idx]
        floor = np.where(state["use_log"][idx], self.min_scale, self.min_scale * np.abs(level))
        return np.asarray(np.maximum(state["mad"][idx] * 1.2533, np.maximum(floor, 1e-12)))

    def _observe(self, state: State, idx: I64, t: F64, v: F64) -> tuple[F64, F64, F64]:
        """Score-free part: the point's signed robust z, its modelled value, and learning.

        Returns (z before learning, y on the model scale, effective time step).
        """
        raw_dt = t - state["last_t"][idx]
        step = state["step"][idx]
        repeat = raw_dt <= 0  # a repeated or late time: one more observation, now
        dt = np.where(repeat, step, raw_dt)
        rate = self._rates(state["last_raw"][idx], v, dt)
        x = np.where(state["is_counter"][idx], np.where(repeat, state["last_x"][idx], rate), v)
        state["last_t"][idx] = np.maximum(t, state["last_t"][idx])
        state["last_raw"][idx] = v
        state["last_x"][idx] = x
        state["n"][idx] += 1
        y = self._to_model_space(state, idx, x)
        now = state["last_t"][idx]

        bins = max(self.season_bins, 1)
        h = ((now % DAY) / DAY * bins).astype(np.int64) % bins
        dow = ((now // DAY).astype(np.int64) + _WEEKDAY_OF_EPOCH) % 7
        season = state["season"][idx, h] if self.season_bins > 0 else np.zeros(idx.size)
        week = state["week"][idx, dow] if self.weekly else np.zeros(idx.size)
        level = state["level"][idx]
        sigma = self._scale(state, idx)
        r = y - level - season - week
        z = r / sigma

        # Inliers teach level and scale; outliers only extend a run that may become a level.
        inlier = np.abs(z) <= self.clip
        sign = np.sign(r)
        same_run = ~inlier & (state["run_sign"][idx] == sign) & (state["run_n"][idx] > 0)
        run_t = np.where(same_run, state["run_t"][idx], now)
        run_sum = np.where(same_run, state["run_sum"][idx], 0.0) + np.where(inlier, 0.0, r)
        run_n = np.where(same_run, state["run_n"][idx], 0.0) + np.where(inlier, 0.0, 1.0)
        shifted = ~inlier & (now - run_t >= self.adapt_after)

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
        # Outliers inflate the scale a little (winsorised): a model that keeps missing (a
        # seasonal shape not learned yet) widens until the shape becomes learnable.
        abs_r = np.minimum(np.abs(r), self.season_clip * sigma)
        w_scale = np.where(inlier, 1.0, self.scale_outlier_weight)
        state["mad"][idx] += w_scale * a_scale * (abs_r - state["mad"][idx])
        # Every point teaches the seasonal terms, its residual winsorised: a daily pattern
        # is learned even where it first looked like an outlier, an incident barely counts.
        r_season = np.clip(r, -self.season_clip * sigma, self.season_clip * sigma)
        weight = np.where(inlier, 1.0, self.season_outlier_weight)
        r_season = np.where(shifted, 0.0, r_season) * (1 - a_level) * weight
        if self.season_bins > 0:
            # Each bin learns ~season_rate of its residual per day, whatever the step.
            g = -np.expm1(-self.season_rate * np.minimum(dt, DAY / bins) / (DAY / bins))
            state["season"][idx, h] = season + g * r_season
        if self.weekly:
            # A day-of-week offset learns at the same pace per week (weekends are quieter).
            gw = -np.expm1(-self.season_rate * np.minimum(dt, DAY) / DAY) / 7
            state["week"][idx, dow] = week + gw * r_season
        state["run_t"][idx] = np.where(shifted | inlier, 0.0, run_t)
        state["run_sign"][idx] = np.where(shifted | inlier, 0.0, sign)
        state["run_sum"][idx] = np.where(shifted | inlier, 0.0, run_sum)
        state["run_n"][idx] = np.where(shifted | inlier, 0.0, run_n)
        return z, y, dt

    def _read(self, state: State, idx: I64, z: F64, y: F64, dt: F64) -> F64:
        """The sustained-state score: persistence-smoothed, capped, one-sided evidence."""
        e = np.minimum(one_sided(z, self.direction), self.cap)
        evidence = self.persistence * state["evidence"][idx] + (1 - self.persistence) * e
        state["evidence"][idx] = evidence
        return hill(evidence, self.midpoint, self.sharpness)


class OnsetScorer(RobustScorer):
    """News, not state: how far a point goes beyond the worst this series has shown.

    Two records per series, both slowly forgotten: the largest smoothed evidence seen
    (``record_halflife``) and the value range (``range_halflife``, on the model scale).
    A point's novelty is the larger of evidence ÷ max(record, ``min_evidence``) and
    1 + ``range_weight`` × (how far it is outside the range, in range widths); the score
    is the Hill curve of the novelty around ``midpoint`` (1.0: as bad as the record).
    Every point updates the records at once, so an incident scores high when it starts
    or gets worse, and lower while it merely continues. Defaults: see
    ``benchmarks/nab.py`` and docs/forecasting.md for how they were chosen.
    """

    default_threshold: ClassVar[float] = 0.5

    def __init__(
        self,
        *,
        warmup: int = 20,
        level_halflife: float = 3600.0,
        scale_halflife: float = 6 * 3600.0,
        season_bins: int = 96,
        weekly: bool = True,
        season_rate: float = 0.5,
        season_clip: float = 8.0,
        season_outlier_weight: float = 0.1,
        scale_outlier_weight: float = 1.0,
        adapt_after: float = 3 * 3600.0,
        clip: float = 4.0,
        cap: float = 20.0,
        persistence: float = 0.5,
        midpoint: float = 1.0,
        sharpness: float = 4.0,
        min_scale: float = 0.01,
        transform: Literal["auto", "log", "none"] = "auto",
        counter: bool | None = None,
        direction: Dir = "both",
        min_evidence: float = 3.0,
        record_halflife: float = 7 * DAY,
        range_weight: float = 10.0,
        range_halflife: float = 120 * DAY,
    ) -> None:
        super().__init__(
            warmup=warmup,
            level_halflife=level_halflife,
            scale_halflife=scale_halflife,
            season_bins=season_bins,
            weekly=weekly,
            season_rate=season_rate,
            season_clip=season_clip,
            season_outlier_weight=season_outlier_weight,
            scale_outlier_weight=scale_outlier_weight,
            adapt_after=adapt_after,
            clip=clip,
            cap=cap,
            persistence=persistence,
            midpoint=midpoint,
            sharpness=sharpness,
            min_scale=min_scale,
            transform=transform,
            counter=counter,
            direction=direction,
        )
        self.min_evidence = min_evidence
        self.record_halflife = record_halflife
        self.range_weight = range_weight
        self.range_halflife = range_halflife

    def _check_params(self) -> None:
        super()._check_params()
        if min(self.min_evidence, self.record_halflife, self.range_halflife) <= 0:
            raise InputError("min_evidence, record_halflife and range_halflife must be positive")
        if self.range_weight < 0:
            raise InputError(f"range_weight must be >= 0, got {self.range_weight}")

    def _extra_state(self, n: int) -> State:
        return {"record": np.zeros(n), "hi": np.zeros(n), "lo": np.zeros(n)}

    def _initialise_extra(self, state: State, idx: I64, y: F64) -> None:
        state["hi"][idx] = y.max(axis=1)
        state["lo"][idx] = y.min(axis=1)

    def _read(self, state: State, idx: I64, z: F64, y: F64, dt: F64) -> F64:
        e = np.minimum(one_sided(z, self.direction), self.cap)
        evidence = self.persistence * state["evidence"][idx] + (1 - self.persistence) * e
        state["evidence"][idx] = evidence
        record = state["record"][idx]
        novelty = evidence / np.maximum(record, self.min_evidence)
        hi, lo = state["hi"][idx], state["lo"][idx]
        width = np.maximum(hi - lo, 1e-12)
        over = (y - hi) / width if self.direction != "down" else np.zeros(idx.size)
        under = (lo - y) / width if self.direction != "up" else np.zeros(idx.size)
        outside = np.maximum(np.maximum(over, under), 0.0)
        novelty = np.maximum(novelty, np.where(outside > 0, 1.0 + self.range_weight * outside, 0))
        # The records: decayed towards nothing (evidence) and towards the level (range).
        keep = np.exp(-dt * LN2 / self.record_halflife)
        state["record"][idx] = np.maximum(record * keep, evidence)
        shrink = np.exp(-dt * LN2 / self.range_halflife)
        level = state["level"][idx]
        state["hi"][idx] = np.maximum(level + (hi - level) * shrink, y)
        state["lo"][idx] = np.minimum(level + (lo - level) * shrink, y)
        return hill(novelty, self.midpoint, self.sharpness)
