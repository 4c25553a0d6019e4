"""The comparison anchor: a rolling z-score, squashed like the default scorer."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from autofix.errors import InputError
from autofix.models.anomaly._online import F64, I64, OnlineScorer, State, hill, one_sided


class RollingZScore(OnlineScorer):
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
        evidence = one_sided(z, self.direction)
        scores = np.where(k >= self.min_periods, hill(evidence, self.midpoint, self.sharpness), 0.0)
        # Slide the window: the oldest value leaves once it is full.
        slot = n % self.window
        old = np.where(n >= self.window, state["ring"][idx, slot], 0.0)
        full = n >= self.window
        x = v - ref
        state["sum"][idx] = total + x - old
        state["sumsq"][idx] = total_sq + x * x - np.where(full, old * old, 0.0)
        state["ring"][idx, slot] = x
        state["n"][idx] = n + 1
        state["last_t"][idx] = np.maximum(state["last_t"][idx], t)
        return np.asarray(scores, dtype=np.float64)
