"""Event-level evaluation of anomaly scores against labelled windows, without point-adjust.

Point-wise metrics reward a detector for every point of a long incident, and the common
"point-adjust" trick (one hit marks the whole window detected, every point of it a true
positive) inflates them further. Here an incident counts once and a false alarm counts
once:

- an *event* is a labelled window ``[start, end)``; it is detected when an alert (a score
  >= threshold) fires inside it, or, with ``deadline``, inside its first ``deadline``;
- an *episode* is a run of alerting points, runs closer than ``merge_gap`` merged; an
  episode that touches no window (extended by ``grace`` past its end, for the tail of a
  causal detector) is one false positive, however long it lasts;
- precision = detected / (detected + false episodes), recall = detected / events;
  precision is 1.0 when nothing fired (no false alarm was raised);
- delay = first alert in the window minus the window start.

    >>> import pandas as pd
    >>> ts = pd.date_range("2024-01-01", periods=10, freq="1min")
    >>> r = event_metrics(ts, [0, 0, 0.9, 0.9, 0, 0, 0, 0.8, 0, 0],
    ...                   [(ts[2], ts[5])], threshold=0.5)
    >>> (r.detected, r.false_episodes, r.precision, r.recall, r.median_delay_min)
    (1, 1, 0.5, 1.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from autofix.errors import InputError

__all__ = [
    "EventResult",
    "ScoredSeries",
    "evaluate",
    "event_metrics",
    "threshold_sweep",
    "windows_from_truth",
]

Window = tuple[pd.Timestamp, pd.Timestamp]
TimeLike = pd.Timestamp | str | np.datetime64
Times = pd.DatetimeIndex | pd.Series | npt.NDArray[Any] | Sequence[Any]


@dataclass(frozen=True)
class EventResult:
    """Event-level counts; add two results to pool series or scenarios."""

    events: int = 0
    detected: int = 0
    episodes: int = 0
    false_episodes: int = 0
    delays_s: tuple[float, ...] = field(default=())
    span_s: float = 0.0  # time covered by the scored points (for false alarms per day)

    def __add__(self, other: EventResult) -> EventResult:
        return EventResult(
            self.events + other.events,
            self.detected + other.detected,
            self.episodes + other.episodes,
            self.false_episodes + other.false_episodes,
            self.delays_s + other.delays_s,
            self.span_s + other.span_s,
        )

    @property
    def precision(self) -> float:
        fired = self.detected + self.false_episodes
        return 1.0 if fired == 0 else self.detected / fired

    @property
    def recall(self) -> float:
        return math.nan if self.events == 0 else self.detected / self.events

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if math.isnan(r):
            return math.nan
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    @property
    def median_delay_min(self) -> float:
        return float(np.median(self.delays_s)) / 60 if self.delays_s else math.nan

    @property
    def false_per_day(self) -> float:
        return math.nan if self.span_s <= 0 else self.false_episodes / (self.span_s / 86400)

    def as_dict(self) -> dict[str, float | int]:
        """Counts and rates, rounded for reports (NaN stays NaN)."""
        return {
            "events": self.events,
            "detected": self.detected,
            "episodes": self.episodes,
            "false_episodes": self.false_episodes,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "median_delay_min": round(self.median_delay_min, 3),
            "false_per_day": round(self.false_per_day, 3),
        }


@dataclass(frozen=True)
class ScoredSeries:
    """One series' timestamps, scores and labelled windows."""

    ts: pd.DatetimeIndex
    scores: npt.NDArray[np.float64]
    windows: list[Window]

    @classmethod
    def of(
        cls, ts: Times, scores: Iterable[float], windows: Iterable[Sequence[TimeLike]]
    ) -> ScoredSeries:
        index = _naive_index(ts)
        values = np.asarray(
            list(scores) if not isinstance(scores, np.ndarray) else scores, dtype=np.float64
        )
        if values.shape != (len(index),):
            raise InputError(f"{len(index)} timestamps but {values.size} scores")
        order = np.argsort(_ns(index), kind="stable")
        return cls(index[order], values[order], _windows(windows))


def _naive_index(ts: Times) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(pd.to_datetime(ts))
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index


def _ns(index: pd.DatetimeIndex) -> npt.NDArray[np.int64]:
    return index.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _stamp(value: TimeLike) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _windows(windows: Iterable[Sequence[TimeLike]]) -> list[Window]:
    out = []
    for w in windows:
        if len(w) != 2:
            raise InputError(f"a window is [start, end), got {list(w)!r}")
        start, end = _stamp(w[0]), _stamp(w[1])
        if end <= start:
            raise InputError(f"window ends before it starts: {start} .. {end}")
        out.append((start, end))
    return sorted(out)


def windows_from_truth(series_truth: Mapping[str, Any]) -> list[Window]:
    """The ``slowdown_windows`` of one series entry of a ``labels_truth`` document."""
    return _windows(series_truth.get("slowdown_windows", []))


def _episodes(
    ts: pd.DatetimeIndex, alert: npt.NDArray[np.bool_], merge_gap: pd.Timedelta
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """(first, last) alerting time of each episode, runs closer than merge_gap merged."""
    hits = ts[alert]
    if hits.empty:
        return []
    idx = np.flatnonzero(alert)
    run_break = np.diff(idx) > 1  # a non-alerting point in between
    gap = np.diff(_ns(hits)) > merge_gap.value
    cut = np.flatnonzero(run_break & gap) + 1
    starts = np.r_[0, cut]
    ends = np.r_[cut - 1, hits.size - 1]
    return [(hits[a], hits[b]) for a, b in zip(starts, ends, strict=True)]


def event_metrics(
    ts: Times,
    scores: Iterable[float],
    windows: Iterable[Sequence[TimeLike]],
    threshold: float,
    *,
    merge_gap: pd.Timedelta | str | None = None,
    grace: pd.Timedelta | str = "0s",
    deadline: pd.Timedelta | str | None = None,
) -> EventResult:
    """Event-level result of one series at one threshold (see the module docstring).

    ``merge_gap`` defaults to three median sampling steps.
    """
    return _evaluate_one(
        ScoredSeries.of(ts, scores, windows), threshold, merge_gap, grace, deadline
    )


def _evaluate_one(
    s: ScoredSeries,
    threshold: float,
    merge_gap: pd.Timedelta | str | None,
    grace: pd.Timedelta | str,
    deadline: pd.Timedelta | str | None,
) -> EventResult:
    ts = s.ts
    if len(ts) == 0:
        return EventResult(events=len(s.windows))
    if merge_gap is None:
        step = np.median(np.diff(_ns(ts))) if len(ts) > 1 else 0
        gap = pd.Timedelta(int(3 * step))
    else:
        gap = pd.Timedelta(merge_gap)
    grace_td = pd.Timedelta(grace)
    limit = None if deadline is None else pd.Timedelta(deadline)
    alert = np.nan_to_num(s.scores, nan=-np.inf) >= threshold

    delays: list[float] = []
    for start, end in s.windows:
        stop = end if limit is None else min(end, start + limit)
        inside = alert & (ts >= start) & (ts < stop)
        if inside.any():
            delays.append((ts[int(np.argmax(inside))] - start).total_seconds())

    episodes = _episodes(ts, alert, gap)
    false = sum(
        1
        for first, last in episodes
        if not any(first < end + grace_td and last >= start for start, end in s.windows)
    )
    return EventResult(
        events=len(s.windows),
        detected=len(delays),
        episodes=len(episodes),
        false_episodes=false,
        delays_s=tuple(delays),
        span_s=(ts[-1] - ts[0]).total_seconds(),
    )


def evaluate(
    cases: Iterable[ScoredSeries],
    threshold: float,
    *,
    merge_gap: pd.Timedelta | str | None = None,
    grace: pd.Timedelta | str = "0s",
    deadline: pd.Timedelta | str | None = None,
) -> EventResult:
    """Pooled event-level result over many series (counts add up, delays pool)."""
    total = EventResult()
    for case in cases:
        total = total + _evaluate_one(case, threshold, merge_gap, grace, deadline)
    return total


def threshold_sweep(
    cases: Sequence[ScoredSeries],
    thresholds: Iterable[float],
    *,
    merge_gap: pd.Timedelta | str | None = None,
    grace: pd.Timedelta | str = "0s",
    deadline: pd.Timedelta | str | None = None,
) -> pd.DataFrame:
    """Event-level precision/recall/F1 per threshold, pooled over ``cases``."""
    rows = []
    for threshold in thresholds:
        r = evaluate(cases, threshold, merge_gap=merge_gap, grace=grace, deadline=deadline)
        rows.append({"threshold": float(threshold), **r.as_dict()})
    return pd.DataFrame(rows)
