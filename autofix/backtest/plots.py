"""PNG plots of a backtest: forecast vs actual on hard cases, and the lead-time histogram.

The figures are drawn on matplotlib's ``Figure`` directly, never through pyplot: no
backend or figure manager to pick or import, nothing to close, nothing that could open a
window. ``savefig`` renders the PNG with Agg. Margins are fixed in inches rather than
computed by ``tight_layout``, which lays out every tick label once more before the
figure is drawn (most of a plot's cost here).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from autofix.backtest.forecast import ALERT_THRESHOLD, LabelledSeries

_DPI = 90
_ROW_INCHES = 2.6  # one hard case's panel in the forecast figure
# Room in inches (left, right, top, bottom) for the tick labels, the titles, the twin axis
# on the right of a forecast panel and the histogram's axis labels; the gap between panels.
_PANEL_MARGINS = (0.6, 0.6, 0.3, 0.4)
_HISTOGRAM_MARGINS = (0.6, 0.2, 0.2, 0.55)
_GAP = 0.7


def _lead_minutes(forecasts: pd.DataFrame, series: Sequence[LabelledSeries]) -> list[float]:
    leads = []
    for s in series:
        if s.exhaustion is None:
            continue
        rows = forecasts[forecasts["key"] == s.key]
        alert = rows["p_24h"].to_numpy() >= ALERT_THRESHOLD
        if not len(alert) or not alert[-1]:
            continue
        first = len(alert) - 1
        while first > 0 and alert[first - 1]:
            first -= 1
        leads.append((s.exhaustion - rows["origin"].iloc[first]).total_seconds() / 60)
    return leads


def _margins(fig: Figure, margins: tuple[float, float, float, float], rows: int = 1) -> None:
    """Fixed margins (inches) as figure fractions, for any number of stacked panels."""
    left, right, top, bottom = margins
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        # hspace is a fraction of the mean panel height
        hspace=_GAP / ((height - top - bottom - _GAP * (rows - 1)) / rows),
    )


def forecast_plots(
    forecasts: pd.DataFrame,
    series: Sequence[LabelledSeries],
    out_dir: Path,
    *,
    limit: int = 4,
) -> dict[str, Path]:
    """Write the plots; return them by name (for MLflow artifacts and reports)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    hard = [s for s in series if s.traps or s.exhaustion is not None][:limit]
    if hard:
        fig = Figure(figsize=(10, _ROW_INCHES * len(hard)))
        axes = fig.subplots(len(hard), 1, squeeze=False)
        _margins(fig, _PANEL_MARGINS, rows=len(hard))
        for ax, s in zip(axes[:, 0], hard, strict=True):
            ax.plot(s.frame["ts"], s.frame["value"], lw=0.7, color="0.3", label="fill ratio")
            ax.axhline(1.0, color="red", lw=0.8, ls="--", label="capacity")
            rows = forecasts[forecasts["key"] == s.key]
            twin = ax.twinx()
            twin.plot(
                rows["origin"], rows["p_24h"], color="tab:blue", lw=1.0, label="P(full within 24 h)"
            )
            twin.set_ylim(-0.02, 1.02)
            if s.exhaustion is not None:
                ax.axvline(s.exhaustion, color="red", lw=1.2, label="true exhaustion")
                ax.axvspan(
                    s.exhaustion - pd.Timedelta(hours=24), s.exhaustion, color="red", alpha=0.08
                )
            ax.set_title(f"{s.key}  traps: {', '.join(s.traps) or 'none'}", fontsize=8)
            ax.set_ylim(0, 1.1)
        paths["forecast_vs_actual"] = out_dir / "forecast_vs_actual.png"
        fig.savefig(paths["forecast_vs_actual"], dpi=_DPI)
    leads = _lead_minutes(forecasts, series)
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    _margins(fig, _HISTOGRAM_MARGINS)
    ax.hist(np.asarray(leads) / 60, bins=max(5, len(leads)), color="tab:green")
    ax.axvline(0.5, color="red", ls="--", lw=0.8, label="30 min")
    ax.set_xlabel("lead time before exhaustion (hours)")
    ax.set_ylabel("events")
    ax.legend()
    paths["lead_time_histogram"] = out_dir / "lead_time_histogram.png"
    fig.savefig(paths["lead_time_histogram"], dpi=_DPI)
    return paths
