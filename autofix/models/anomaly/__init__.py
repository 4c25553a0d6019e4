"""Anomaly scorers: a continuous score in [0, 1] per point, computed causally and online.

A point's score uses only that point and earlier points of its series, so a history can
be scored in one batch (``score_samples``) or point by point as samples arrive (``fit``
on the history, then ``score_new`` / ``update``) with identical results. Every row with a
finite value gets a score, in input order, repeated timestamps included.

- ``RobustScorer`` (``default``): the state of a series against its robust seasonal
  model: high while a slowdown lasts, low for a 1-2 point burst, a new level accepted
  after ``adapt_after``. The service's anomaly rules threshold it ("score >= 0.9 for 5m").
- ``OnsetScorer`` (``onset``): the same model read as news: high when trouble starts or
  gets worse than anything recent, lower while it continues (one page per incident; the
  NAB benchmark's task).
- ``RollingZScore`` (``zscore``): the comparison anchor.

Thresholds belong to the policy; ``default_threshold`` is the one the backtest uses.
``direction_for_metric`` says which way is bad for a metric name (latency: only up;
traffic and throughput: both ways).
"""

from __future__ import annotations

from typing import Any

from autofix.errors import InputError
from autofix.models.anomaly._online import OnlineScorer
from autofix.models.anomaly._robust import OnsetScorer, RobustScorer
from autofix.models.anomaly._zscore import RollingZScore

__all__ = [
    "SCORERS",
    "OnlineScorer",
    "OnsetScorer",
    "RobustScorer",
    "RollingZScore",
    "direction_for_metric",
    "make_scorer",
]

SCORERS: dict[str, type[OnlineScorer]] = {
    "default": RobustScorer,
    "onset": OnsetScorer,
    "zscore": RollingZScore,
}

# Slower (longer, more errors, more saturation) is bad; less is fine.
_UP = ("_duration_seconds", "_latency_seconds", "_seconds", "_errors_total", "_failures_total")
_UP_WORDS = ("latency", "duration", "error", "fail", "timeout", "wait", "lag")


def direction_for_metric(metric: str) -> str:
    """``up`` for latency- and error-like metrics, ``both`` for the rest (traffic, rates).

    A news site's traffic that collapses is as bad as one that explodes; a query that got
    faster is not an incident.
    """
    name = metric.lower()
    if name.endswith(_UP) or any(word in name for word in _UP_WORDS):
        return "up"
    return "both"


def make_scorer(name: str, **params: Any) -> OnlineScorer:
    """A scorer by its CLI name (``default``, ``onset`` or ``zscore``)."""
    try:
        cls = SCORERS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; known: {', '.join(SCORERS)}") from None
    return cls(**params)
