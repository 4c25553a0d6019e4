"""The online driver every scorer shares: long frame in, lock-step recurrence, scores out.

Rows are processed per series in time order (ties and late rows in input order) and
every row with a finite value and time gets a score: a repeated timestamp (a DST change,
a re-sent batch) or a row older than what the series has already seen is scored as one
more observation at the series' current time, never refused. A row whose value or time
is not finite gets NaN and leaves the state untouched.

All series run in lock-step (the i-th point of every series at once), so a fleet costs
one pass over time, not one Python loop per series.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from autofix.errors import InputError

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
State = dict[str, np.ndarray]
DAY = 86400.0
LN2 = float(np.log(2.0))


def hill(evidence: F64, midpoint: float, sharpness: float) -> F64:
    """Map evidence >= 0 to [0, 1): 0.5 at ``midpoint``."""
    e = np.maximum(evidence, 0.0) / midpoint
    p = e**sharpness
    return np.asarray(p / (1.0 + p), dtype=np.float64)


def one_sided(z: F64, direction: str) -> F64:
    """The part of a signed z that counts as bad for ``direction``."""
    if direction == "up":
        return np.maximum(z, 0.0)
    if direction == "down":
        return np.maximum(-z, 0.0)
    return np.abs(z)


def grow(state: State, extra: State) -> State:
    return {k: np.concatenate([state[k], extra[k]]) for k in state}


def check_direction(direction: str) -> None:
    if direction not in ("up", "down", "both"):
        raise InputError(f"direction must be up, down or both, got {direction!r}")


class OnlineScorer(BaseEstimator):
    """Shared driver. Subclasses define ``_new_state(n)`` and one vectorised ``_step``.

    ``_step(state, idx, t, v)`` scores one point of each series in ``idx``; ``t`` may be
    at or before the series' ``last_t`` (a repeated or late time).
    """

    default_threshold: ClassVar[float] = 0.5

    def _new_state(self, n: int) -> State:
        raise NotImplementedError

    def _step(self, state: State, idx: I64, t: F64, v: F64) -> F64:
        raise NotImplementedError

    def _check_params(self) -> None:
        pass

    # -- public API --------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, y: None = None) -> OnlineScorer:
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
        """Causal scores in [0, 1] for every row of ``frame``, each series from scratch."""
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
        if not np.isfinite(v[0]):
            log.debug("series %r: non-finite value at %s is not scored", series_id, stamp)
            return float("nan")
        if series_id not in self.series_:
            self.series_[series_id] = len(self.series_)
            self.state_ = grow(self.state_, self._new_state(1))
        idx = np.array([self.series_[series_id]], dtype=np.int64)
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
        t[ts.isna().to_numpy()] = np.nan
        v = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=np.float64)
        keys = frame["series_id"].to_numpy()
        codes, uniques = pd.factorize(keys, sort=False)
        new = [k for k in uniques if k not in series]
        for k in new:
            series[k] = len(series)
        if new:
            state = grow(state, self._new_state(len(new)))
        lookup = np.array([series[k] for k in uniques], dtype=np.int64)
        sid = lookup[codes]
        ok = np.isfinite(v) & np.isfinite(t)
        if not ok.all():
            log.debug("%s: %d rows with a non-finite value or time not scored", where, (~ok).sum())
        rows = np.flatnonzero(ok)
        # Stable sort by (series, time): equal times keep their input order.
        order = rows[np.lexsort((t[rows], sid[rows]))]
        s_sorted = sid[order]
        if order.size == 0:
            return scores, state
        # Position of each point within its series: the lock-step column it runs in.
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        lengths = np.diff(np.r_[starts, s_sorted.size])
        pos = np.arange(s_sorted.size) - np.repeat(starts, lengths)
        by_pos = np.argsort(pos, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(pos[by_pos]) != 0, True])
        t_sorted = t[order]
        for a, b in itertools.pairwise(bounds):
            cols = by_pos[a:b]
            rows_here = order[cols]
            scores[rows_here] = self._step(state, s_sorted[cols], t_sorted[cols], v[rows_here])
        return scores, state
