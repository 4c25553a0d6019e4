"""Calibration of the forecasters' uncertainty, fitted on backtests.

Two things a forecast promises and a backtest can check:

- the 80 % ETA interval: split-conformal on backtest residuals. The residual of an origin
  whose true exhaustion lies within 4 days is ``log(remaining_true /
  remaining_predicted)``, with the ETA the forecast shows (a miss on both sides where the
  model saw no exhaustion); the remaining time scaled by ``exp(q_lo) .. exp(q_hi)``, the
  conformal 10th and 90th percentiles, covers 80 % of such origins on exchangeable data
  (Vovk et al.; Angelopoulos & Bates' tutorial). The bounds are Mondrian: one pair per
  band of predicted remaining time (``INTERVAL_BANDS``), because ETAs hours away miss by
  a factor of two and ETAs days away by a few percent; one pair for all covered the far
  ones 95 % of the time and the near ones 50 %. The pooled pair turns the ETA into
  P(exhaust within H), so the probability rises as the ETA approaches;
- P(exhaust within H): an isotonic map from the raw probability to the frequency observed
  in the backtest (scikit-learn's ``IsotonicRegression``), one per horizon, so that among
  origins given p the share that did exhaust within H is p. Mondrian again: one map for
  the origins below ``LEVEL_BANDS[0]`` of usage, one per band above it. A single map
  pooled a disk at 99 % filling steadily with a backup burst at 92 % or a backfill that
  stopped: both get raw p = 1, one of them nearly always exhausts, so the pooled map
  capped every P at the share of both (0.69 within 4 days) and no rule above 0.7 could
  fire. Checked with the Brier score and the expected calibration error (10 equal-width
  bins) per horizon, and drawn as a reliability diagram.

The shipped default forecaster carries a calibration fitted on the tuning seeds
(``autofix/models/calibration.json``, rebuilt by ``benchmarks/forecast.py --calibrate``);
the held-out seeds in ``benchmarks/forecast.py`` check it on series it never saw.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autofix.backtest.forecast import LabelledSeries, calibration_error, within
from autofix.models.base import HORIZONS

COVERAGE = 0.8
N_BINS = 10
#: Bands of predicted remaining time (upper edges, hours; the last is open) with their
#: own conformal interval. Near-term ETAs miss differently from far ones (a runaway fill
#: is often slower than its last two hours say; a steady fill 3 days out is accurate to
#: a few percent): one interval for all would cover far ETAs ~95 % and near ones ~50 %.
INTERVAL_BANDS: tuple[float | None, ...] = (12.0, 24.0, 48.0, 96.0, None)
#: A band with fewer calibration origins than this is merged into the band below it.
MIN_BAND = 100
#: Lower edges (usage now, fill ratio) of the bands with their own probability maps.
LEVEL_BANDS: tuple[float, ...] = (0.95,)

Maps = dict[str, tuple[list[float], list[float]]]


@dataclass(frozen=True)
class Calibration:
    """What ``fit_calibration`` learned; ``as_params`` gives the forecaster's parameters."""

    interval_log_range: tuple[float, float]
    interval_bins: list[tuple[float | None, float, float]]
    calibration: dict[str, tuple[list[float], list[float]]]
    origins: int
    coverable: int
    source: dict[str, Any] = field(default_factory=dict)
    level_bands: list[tuple[float, Maps]] = field(default_factory=list)

    def as_params(self) -> dict[str, Any]:
        return {
            "interval_log_range": self.interval_log_range,
            "interval_bins": self.interval_bins,
            "calibration": self.calibration,
            "level_bands": self.level_bands or None,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Calibration:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["calibration"] = {k: (list(v[0]), list(v[1])) for k, v in raw["calibration"].items()}
        raw["interval_log_range"] = tuple(raw["interval_log_range"])
        raw["interval_bins"] = [tuple(b) for b in raw.get("interval_bins", [])]
        raw["level_bands"] = [
            (float(edge), {k: (list(v[0]), list(v[1])) for k, v in maps.items()})
            for edge, maps in raw.get("level_bands", [])
        ]
        return cls(**raw)


def outcomes(forecasts: pd.DataFrame, series: Sequence[LabelledSeries]) -> pd.DataFrame:
    """One row per (series, origin): raw p per horizon, the truth per horizon, ETA parts."""
    truth = {s.key: s for s in series}
    parts = []
    for key, rows in forecasts.groupby("key", sort=False):
        s = truth[str(key)]
        origin = rows["origin"].to_numpy("datetime64[ns]")
        t_ex = None if s.exhaustion is None else np.datetime64(s.exhaustion, "ns")
        part = pd.DataFrame({"key": key, "origin": origin})
        for h, horizon in HORIZONS.items():
            part[f"p_{h}"] = rows[f"p_{h}"].to_numpy("float64")
            part[f"y_{h}"] = within(origin, horizon, t_ex)
        eta = rows["eta"].to_numpy("datetime64[ns]")
        part["remaining_pred_s"] = (eta - origin) / np.timedelta64(1, "s")
        true_left = (t_ex - origin) if t_ex is not None else None
        part["remaining_true_s"] = (
            true_left.astype("timedelta64[ns]").astype("int64") / 1e9
            if true_left is not None
            else np.nan
        )
        part["eta_lo"] = rows["eta_lo"].to_numpy("datetime64[ns]")
        part["eta_hi"] = rows["eta_hi"].to_numpy("datetime64[ns]")
        part["t_ex"] = t_ex if t_ex is not None else np.datetime64("NaT")
        # Usage now: the last sample at or before the origin (what the forecaster bands by).
        ts = s.frame["ts"].to_numpy("datetime64[ns]")
        at = np.searchsorted(ts, origin, side="right") - 1
        values = s.frame["value"].to_numpy("float64")
        part["level"] = np.where(at >= 0, values[np.maximum(at, 0)], np.nan)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _log_ratio(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Predicted remaining seconds and log(true / predicted) over origins whose truth is
    within 4 days (NaN predictions stay NaN: the model saw no exhaustion)."""
    near = table["y_4d"].to_numpy(bool)
    pred = table.loc[near, "remaining_pred_s"].to_numpy("float64")
    true = table.loc[near, "remaining_true_s"].to_numpy("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(np.maximum(true, 1.0) / np.maximum(pred, 1.0))
    return pred, ratio


def _conformal_pair(pred: np.ndarray, ratio: np.ndarray, coverage: float) -> tuple[float, float]:
    """The ``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` conformal quantiles of the
    ratios; an origin with no predicted ETA counts as missed on both sides."""
    n = ratio.size
    if n == 0:
        return -math.inf, math.inf
    tail = (1 - coverage) / 2
    level = min(math.ceil((n + 1) * (1 - tail)) / n, 1.0)
    low = np.where(np.isfinite(pred), ratio, -np.inf)
    high = np.where(np.isfinite(pred), ratio, np.inf)
    q_lo = float(np.quantile(low, 1 - level, method="lower"))
    q_hi = float(np.quantile(high, level, method="higher"))
    return q_lo, q_hi


def conformal_range(
    table: pd.DataFrame, coverage: float = COVERAGE
) -> tuple[tuple[float, float], int]:
    """Split-conformal bounds of log(true / predicted remaining time), and the origins used.

    Over origins whose truth is within 4 days: the ``(1 - coverage) / 2`` and ``(1 +
    coverage) / 2`` conformal quantiles of the signed log ratio (an origin with no
    predicted ETA counts as missed on both sides, so it widens both bounds).
    """
    pred, ratio = _log_ratio(table)
    return _conformal_pair(pred, ratio, coverage), ratio.size


def conformal_bands(
    table: pd.DataFrame,
    coverage: float = COVERAGE,
    bands: Sequence[float | None] = INTERVAL_BANDS,
    min_band: int = MIN_BAND,
) -> list[tuple[float | None, float, float]]:
    """Mondrian split-conformal bounds: one ``(upper_hours, q_lo, q_hi)`` per band of
    predicted remaining time (Vovk et al.'s category-conditional conformal prediction,
    the category being the band), so each band covers ``coverage`` of its own origins.

    An origin with no predicted ETA belongs to the open last band. A band with fewer
    than ``min_band`` origins is merged with the next one (the last with the one before).
    """
    pred, ratio = _log_ratio(table)
    uppers = np.array([math.inf if b is None else float(b) * 3600.0 for b in bands])
    which = np.searchsorted(uppers, np.where(np.isfinite(pred), pred, math.inf), side="left")
    which = np.minimum(which, len(uppers) - 1)
    groups: list[list[int]] = []
    for band in range(len(uppers)):
        if groups and np.isin(which, groups[-1]).sum() < min_band:
            groups[-1].append(band)
        else:
            groups.append([band])
    if len(groups) > 1 and np.isin(which, groups[-1]).sum() < min_band:
        last = groups.pop()
        groups[-1].extend(last)
    out: list[tuple[float | None, float, float]] = []
    for group in groups:
        mask = np.isin(which, group)
        q_lo, q_hi = _conformal_pair(pred[mask], ratio[mask], coverage)
        top = bands[group[-1]]
        out.append((top, round(q_lo, 6), round(q_hi, 6)))
    return out


def fit_calibration(
    backtest_with: Callable[[dict[str, Any]], pd.DataFrame],
    series: Sequence[LabelledSeries],
    **source: Any,
) -> Calibration:
    """Two stages, each on a backtest of the same series (``backtest_with(params)`` runs
    one and returns its forecasts): the conformal interval from the uncalibrated model's
    ETAs, then the isotonic maps from the probabilities of the model with that interval
    (one set below ``LEVEL_BANDS[0]`` of usage, one per band above).
    """
    first = outcomes(backtest_with({}), series)
    bounds, coverable = conformal_range(first)
    bounds = (round(bounds[0], 6), round(bounds[1], 6))
    bins = conformal_bands(first)
    table = outcomes(backtest_with({"interval_log_range": bounds, "interval_bins": bins}), series)
    level = table["level"].to_numpy("float64")
    edges = [*LEVEL_BANDS, math.inf]
    base = isotonic_maps(table[~(level >= edges[0])])
    bands = [
        (edge, isotonic_maps(table[(level >= edge) & (level < upper)], centred=True))
        for edge, upper in itertools.pairwise(edges)
    ]
    return Calibration(bounds, bins, base, len(table), coverable, dict(source), bands)


def isotonic_maps(table: pd.DataFrame, *, centred: bool = False) -> Maps:
    """Per horizon, the isotonic map (knots) from raw p to the observed frequency.

    The knots are the blocks' edges (a step map), or with ``centred`` one knot per block
    at the mean raw p of its origins, linear in between: centred isotonic regression
    (Oron & Flournoy 2017), the remedy for fits on few origins. The near-full band has a
    few hundred; there a step map jumped from 0.04 to 1.0 between two raw values a hair
    apart, and a disk at 95 % due in 24.6 h read 1.0 within 24 h (a fix a day early).
    The base map has ~50,000 origins and well-supported steps; centring it too delayed
    alerts (held-out recall within 24 h 0.96 -> 0.83).
    """
    from sklearn.isotonic import IsotonicRegression  # scikit-learn: only when calibrating

    maps: Maps = {}
    for h in HORIZONS:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        # Rounded first: a raw 0.999999 and a raw 1.0 are the same claim.
        raw = np.round(table[f"p_{h}"].to_numpy("float64"), 4)
        iso.fit(raw, table[f"y_{h}"].to_numpy(float))
        if centred:
            blocks = pd.Series(raw).groupby(iso.predict(raw)).mean()
            xs, ys = blocks.to_numpy(), blocks.index.to_numpy()
        else:
            knots = pd.Series(iso.y_thresholds_).groupby(np.asarray(iso.X_thresholds_)).mean()
            xs, ys = knots.index.to_numpy(), knots.to_numpy()
        maps[h] = ([round(float(x), 6) for x in xs], [round(float(y), 6) for y in ys])
    return maps


def reliability(table: pd.DataFrame, n_bins: int = N_BINS) -> dict[str, dict[str, Any]]:
    """Brier score, expected calibration error and the bins, per horizon."""
    out: dict[str, dict[str, Any]] = {}
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for h in HORIZONS:
        p = table[f"p_{h}"].to_numpy("float64")
        y = table[f"y_{h}"].to_numpy(float)
        which = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
        bins = []
        for b in range(n_bins):
            mask = which == b
            if not mask.any():
                continue
            mean_p, freq = float(p[mask].mean()), float(y[mask].mean())
            bins.append({"lo": edges[b], "hi": edges[b + 1], "n": int(mask.sum()),
                         "mean_p": mean_p, "frequency": freq})  # fmt: skip
        out[h] = {
            "brier": float(np.mean((p - y) ** 2)) if p.size else math.nan,
            "ece": calibration_error(p, y, n_bins),
            "positives": int(y.sum()),
            "origins": int(p.size),
            "bins": bins,
        }
    return out


def coverage_by_band(
    table: pd.DataFrame, bands: Sequence[float | None] = INTERVAL_BANDS
) -> list[dict[str, Any]]:
    """Share of origins whose exhaustion (within 4 days) the 80 % interval holds, per band
    of predicted remaining time: the conditional coverage a single pair of bounds hides."""
    near = table[table["y_4d"].to_numpy(bool)]
    pred = near["remaining_pred_s"].to_numpy("float64")
    t_ex = near["t_ex"].to_numpy("datetime64[ns]")
    held = (near["eta_lo"].to_numpy("datetime64[ns]") <= t_ex) & (
        near["eta_hi"].to_numpy("datetime64[ns]") >= t_ex
    )
    uppers = np.array([math.inf if b is None else float(b) * 3600.0 for b in bands])
    which = np.searchsorted(uppers, np.where(np.isfinite(pred), pred, math.inf), side="left")
    out = []
    for i, top in enumerate(bands):
        mask = np.minimum(which, len(bands) - 1) == i
        out.append({"upper_hours": top, "origins": int(mask.sum()),
                    "coverage": float(held[mask].mean()) if mask.any() else math.nan})  # fmt: skip
    return out


def reliability_diagram(
    stats: dict[str, dict[str, dict[str, Any]]],
    path: Path,
    coverage: dict[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """PNG: observed frequency vs predicted probability per horizon, one line per model;
    with ``coverage`` (``coverage_by_band`` per model), a last panel of the 80 % interval's
    coverage per band of predicted remaining time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(HORIZONS) + (1 if coverage else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4))
    for ax, h in zip(axes, HORIZONS, strict=False):
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=0.8, label="perfectly calibrated")
        for model, per_h in stats.items():
            bins = per_h[h]["bins"]
            ax.plot(
                [b["mean_p"] for b in bins],
                [b["frequency"] for b in bins],
                marker="o",
                ms=3,
                label=f"{model} (ECE {per_h[h]['ece']:.3f}, Brier {per_h[h]['brier']:.3f})",
            )
        ax.set_title(f"P(exhaust within {h})")
        ax.set_xlabel("predicted probability")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("observed frequency")
    if coverage:
        ax = axes[-1]
        ax.axhspan(0.75, 0.85, color="tab:green", alpha=0.15, label="target 0.75-0.85")
        width = 0.8 / len(coverage)
        for i, (model, bands) in enumerate(coverage.items()):
            xs = np.arange(len(bands)) + (i - (len(coverage) - 1) / 2) * width
            ax.bar(xs, [b["coverage"] for b in bands], width=width, label=model)
        lows = ["0"] + [f"{b['upper_hours']:g}" for b in bands[:-1]]
        highs = [f"{b['upper_hours']:g}" if b["upper_hours"] else "" for b in bands]
        ax.set_xticks(np.arange(len(bands)))
        ax.set_xticklabels(
            [f"{lo}-{hi} h\n{b['origins']}" for lo, hi, b in zip(lows, highs, bands, strict=True)],
            fontsize=7,
        )
        ax.set_ylim(0, 1.02)
        ax.set_title("80 % ETA interval: coverage")
        ax.set_xlabel("predicted remaining time (origins)")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Calibration on the held-out backtest")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


#: Where the default forecaster's calibration lives (read by autofix.models.registry).
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "models" / "calibration.json"
