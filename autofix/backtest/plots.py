"""PNG plots of a backtest: forecast vs actual on hard cases, and the lead-time histogram."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, never need a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from autofix.backtest.forecast import ALERT_THRESHOLD, LabelledSeries


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
        fig, axes = plt.subplots(len(hard), 1, figsize=(10, 2.6 * len(hard)), squeeze=False)
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
        fig.tight_layout()
        paths["forecast_vs_actual"] = out_dir / "forecast_vs_actual.png"
        fig.savefig(paths["forecast_vs_actual"], dpi=90)
        plt.close(fig)
    leads = _lead_minutes(forecasts, series)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(np.asarray(leads) / 60, bins=max(5, len(leads)), color="tab:green")
    ax.axvline(0.5, color="red", ls="--", lw=0.8, label="30 min")
    ax.set_xlabel("lead time before exhaustion (hours)")
    ax.set_ylabel("events")
    ax.legend()
    fig.tight_layout()
    paths["lead_time_histogram"] = out_dir / "lead_time_histogram.png"
    fig.savefig(paths["lead_time_histogram"], dpi=90)
    plt.close(fig)
    return paths
