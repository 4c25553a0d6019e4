"""The HTML report: KPIs against targets, the riskiest series, recent fixes, charts.

``write_report`` writes ``index.html`` and its PNG charts into one directory (images are
referenced relatively, styles are inline, so the directory can be copied or mailed as
is). It only reads the store, so it works on a read-only store and on a Parquet
snapshot; a section without data says so instead of showing an empty table or chart.

Charts: ``forecast_vs_actual.png`` (the riskiest series' fill ratio, the forecast line
from its origin to the ETA with the 80 % interval, capacity, and what actually happened
after the forecast was made), ``fix_timeline.png`` (fixes over time by target, coloured
by final state) and ``kpi_trend.png`` (KPI snapshots, or daily KPIs from the audit log
while there are fewer than two snapshots). Each forecast panel spans its own series'
time range (not a shared axis); axes read in percent, bytes with SI prefixes and
durations in s / min / h, dates with the year where it changes.

Only series that still report are ranked (``autofix.predict.current_predictions``):
imported history that ended long ago is not a risk today, and an ETA is never in the
past (a passed one reads "due now").
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, never need a display

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd
from jinja2 import Environment, StrictUndefined
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, PercentFormatter

from autofix.kpi import audit_query, compute_kpis, daily_kpis, kpi_history, kpi_rows
from autofix.models.base import direction_for, to_fill_ratio
from autofix.predict import current_predictions
from autofix.store import MetricStore

CHARTS = ("forecast_vs_actual.png", "fix_timeline.png", "kpi_trend.png")

# Final state → colour, shared by the timeline and the fixes table.
STATE_COLOURS = {
    "succeeded": "#2ca02c",
    "failed": "#d62728",
    "rolled_back": "#ff7f0e",
    "interrupted": "#9467bd",
    "running": "#1f77b4",
    "pending_approval": "#bcbd22",
    "planned": "#17becf",
    "refused": "#7f7f7f",
    "noop": "#c7c7c7",
}
_TABLE_ROWS = 20
_TIMELINE_TARGETS = 25


def _naive(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _plain(text: object, limit: int = 60) -> str:
    """Text for a chart: shortened, and ``$`` escaped so matplotlib never parses mathtext."""
    value = str(text)
    value = value if len(value) <= limit else value[: limit - 1] + "…"
    return value.replace("$", r"\$")


def _save(fig: Figure, path: Path) -> None:
    try:
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)


# -- reads -----------------------------------------------------------------------------


def riskiest(
    store: MetricStore, now: datetime, top: int = 5, lookback: timedelta = timedelta(days=7)
) -> pd.DataFrame:
    """The newest prediction (made by ``now``) of the ``top`` series most likely to fill.

    Series that stopped reporting by ``now`` (nothing inside ``lookback``, or silent for
    several of their sampling intervals) are left out; ETAs before ``now`` read ``now``.
    """
    latest = audit_query(
        store,
        """SELECT s.host, s.metric, s.labels, s.capacity, p.*
           FROM predictions p JOIN series s USING (series_id)
           WHERE p.made_at <= ?
           QUALIFY row_number() OVER (PARTITION BY p.series_id ORDER BY p.made_at DESC) = 1""",
        [_naive(now)],
    )
    if latest.empty:
        return latest
    current = current_predictions(store, _naive(now), lookback, latest)
    return current.sort_values(
        ["p_24h", "eta", "p_4d", "series_id"],
        ascending=[False, True, False, True],
        na_position="last",
    ).head(top)


def _fixes(store: MetricStore, since: datetime, now: datetime) -> pd.DataFrame:
    return audit_query(
        store,
        """WITH cur AS (
               SELECT fix_id, arg_max(state, seq) AS state, max(ts) AS updated_at,
                      arg_max(gate, seq) AS gate,
                      arg_max(coalesce(error, reason), seq)
                          FILTER (WHERE coalesce(error, reason) IS NOT NULL) AS why
               FROM fix_events WHERE ts <= $2 GROUP BY fix_id),
           lab AS (
               SELECT fix_id, arg_max(false_fix, (ts, rowid)) AS false_fix
               FROM fix_labels WHERE ts <= $2 GROUP BY fix_id)
           SELECT f.fix_id, f.requested_at, f.action, f.target, c.state, c.gate, c.why,
                  c.updated_at, lab.false_fix
           FROM fixes f JOIN cur c USING (fix_id) LEFT JOIN lab USING (fix_id)
           WHERE f.requested_at >= $1 AND f.requested_at <= $2
           ORDER BY f.requested_at DESC, f.fix_id DESC""",
        [since, now],
    )


def _escalations(store: MetricStore, since: datetime, now: datetime) -> pd.DataFrame:
    return audit_query(
        store,
        """SELECT ts, fix_id, action, target, gate, reason FROM escalations
           WHERE ts >= ? AND ts <= ? ORDER BY ts DESC""",
        [since, now],
    )


# -- charts ----------------------------------------------------------------------------


def _dates(ax: Axes) -> None:
    """Dates that say the year where it changes (and only there)."""
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(
        mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    )


def _seconds(value: float, _pos: object = None) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2 d``."""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if abs(value) >= 2 * size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g} s"


def _amount(value: float, unit: str) -> str:
    """A raw value with its unit: bytes with SI prefixes, else the number."""
    if unit == "bytes" or unit.endswith("_bytes"):
        return str(EngFormatter(unit="B", places=1)(value))
    return f"{value:.4g}"


def _forecast_chart(
    store: MetricStore, risky: pd.DataFrame, now: datetime, lookback: timedelta, path: Path
) -> bool:
    if risky.empty:
        return False
    ids = [int(i) for i in risky["series_id"]]
    history = store.fill_history(lookback, end=now, series_ids=ids)
    # Each series on its own time axis: one that reports every 15 s and one imported
    # hourly would squeeze each other into a sliver on a shared one.
    fig, axes = plt.subplots(len(risky), 1, figsize=(10, 2.9 * len(risky)), squeeze=False)
    for ax, row in zip(axes[:, 0], _records(risky), strict=True):
        mine = history[history["series_id"] == row["series_id"]]
        direction = direction_for(str(row["metric"]))
        fill = pd.Series(
            to_fill_ratio(mine["value"], mine["capacity"], direction),
            index=pd.DatetimeIndex(mine["ts"]),
        )
        made_at = pd.Timestamp(row["made_at"])
        before, after = fill[fill.index <= made_at], fill[fill.index > made_at]
        ax.plot(before.index, before.to_numpy(), lw=0.8, color="0.35", label="fill")
        if not after.empty:
            ax.plot(
                after.index, after.to_numpy(), lw=1.2, color="black", label="actual after forecast"
            )
        _forecast_line(ax, row, fill)
        threshold = float(row["threshold"])
        ax.axhline(1.0, color="red", lw=0.8, ls="--", label="capacity")
        if threshold != 1.0:
            ax.axhline(threshold, color="orange", lw=0.8, ls=":", label="threshold")
        ax.axvline(made_at, color="0.5", lw=0.7, ls=":", label="forecast made")
        highest = float(fill.max()) if fill.notna().any() else 1.0
        ax.set_ylim(0, max(1.1, highest * 1.05))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("full")
        start = fill.index.min() if not fill.empty else made_at
        end = max(fill.index.max() if not fill.empty else made_at, made_at)
        if row["eta"] is not None:
            # Show the ETA, but not a month of empty axis for a series with a day of data.
            horizon = pd.Timestamp(row["eta_hi"] or row["eta"])
            end = max(end, min(horizon, end + max(end - start, pd.Timedelta(hours=1))))
        ax.set_xlim(start, end + (end - start) * 0.02 + pd.Timedelta(seconds=1))
        _dates(ax)
        eta = "no ETA" if row["eta"] is None else _eta(row["eta"], now)
        last = mine["value"].iloc[-1] if not mine.empty else None
        capacity = mine["capacity"].iloc[-1] if not mine.empty else row["capacity"]
        unit = str(row["metric"]).rsplit("_", 1)[-1]
        level = (
            f"{_amount(float(last), unit)} of {_amount(float(capacity), unit)}"
            if last is not None and capacity is not None
            else ""
        )
        ax.set_title(
            _plain(f"{row['host']}  {row['metric']}  {row['labels']}", 110)
            + f"\n{level}; P(full within 24 h) {row['p_24h']:.2f}, {eta}"
            + f"  ({_plain(row['model'], 30)})",
            fontsize=8,
        )
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    return True


def _forecast_line(ax: Axes, row: dict[str, Any], fill: pd.Series) -> None:
    """The forecast: a line from the origin's fill to the threshold at the ETA, and its band."""
    if row["eta"] is None:
        return
    origin = pd.Timestamp(row["origin"])
    known = fill[(fill.index <= origin)].dropna()
    if known.empty:
        return
    start, threshold = float(known.iloc[-1]), float(row["threshold"])
    eta = pd.Timestamp(row["eta"])
    lo = eta if row["eta_lo"] is None else pd.Timestamp(row["eta_lo"])
    hi = eta if row["eta_hi"] is None else pd.Timestamp(row["eta_hi"])
    ax.plot(
        pd.DatetimeIndex([origin, eta]),
        [start, threshold],
        color="tab:blue",
        lw=1.4,
        ls="--",
        label="forecast",
    )
    ax.fill(
        pd.DatetimeIndex([origin, lo, hi]),
        [start, threshold, threshold],
        color="tab:blue",
        alpha=0.18,
        lw=0,
        label="80 % interval",
    )


def _timeline_chart(fixes: pd.DataFrame, escalations: pd.DataFrame, path: Path) -> bool:
    if fixes.empty:
        return False
    busiest = fixes["target"].value_counts().index[:_TIMELINE_TARGETS]
    targets = sorted(str(t) for t in busiest)
    row_of = {t: i for i, t in enumerate(targets)}
    shown = fixes[fixes["target"].isin(targets)]
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.35 * len(targets)))
    for state, colour in STATE_COLOURS.items():
        mine = shown[shown["state"] == state]
        if not mine.empty:
            ax.scatter(
                mine["requested_at"],
                [row_of[str(t)] for t in mine["target"]],
                color=colour,
                s=36,
                label=state.replace("_", " "),
                zorder=3,
            )
    mine = escalations[escalations["target"].isin(targets)]
    if not mine.empty:
        ax.scatter(
            mine["ts"],
            [row_of[str(t)] for t in mine["target"]],
            marker="x",
            color="black",
            s=40,
            label="escalation",
            zorder=4,
        )
    ax.set_yticks(range(len(targets)), [_plain(t, 40) for t in targets], fontsize=8)
    ax.set_ylim(-0.7, len(targets) - 0.3)
    ax.grid(axis="x", color="0.9")
    more = fixes["target"].nunique() - len(targets)
    hidden = f" (the {len(targets)} busiest; {more} more)" if more else ""
    ax.set_title(f"fixes by target{hidden}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _dates(ax)
    fig.tight_layout()
    _save(fig, path)
    return True


_TREND_RATES = {
    "auto_fix_success_rate": "success rate",
    "false_fix_rate": "false-fix rate",
    "preventive_execution_rate": "preventive execution",
    "mttr_reduction": "MTTR reduction",
}
_TREND_SECONDS = {"mttr_seconds": "MTTR", "recovery_p95_seconds": "recovery p95"}


def _trend_chart(store: MetricStore, since: datetime, now: datetime, path: Path) -> str | None:
    """Plot KPI snapshots (or daily KPIs); return where the numbers came from, or None."""
    frame, source = kpi_history(store, since), "KPI snapshots"
    if len(frame) < 2:
        frame, source = daily_kpis(store, since, now).rename(columns={"day": "ts"}), "daily KPIs"
    rates = {c: n for c, n in _TREND_RATES.items() if c in frame and frame[c].notna().any()}
    seconds = {c: n for c, n in _TREND_SECONDS.items() if c in frame and frame[c].notna().any()}
    if not rates and not seconds:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for column, name in rates.items():
        top.plot(frame["ts"], frame[column] * 100, marker="o", ms=3, label=name)
    top.set_ylabel("rate")
    top.set_ylim(-2, 102)
    for column, name in seconds.items():
        bottom.plot(frame["ts"], frame[column], marker="o", ms=3, label=name)
    bottom.set_ylabel("time")
    bottom.yaxis.set_major_formatter(FuncFormatter(_seconds))
    top.yaxis.set_major_formatter(PercentFormatter(100))
    for ax, drawn in ((top, rates), (bottom, seconds)):
        ax.grid(color="0.9")
        if drawn:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="0.5")
    top.set_title(f"KPI trend ({source})")
    _dates(bottom)
    fig.tight_layout()
    _save(fig, path)
    return source


# -- the page --------------------------------------------------------------------------

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>autofix report {{ now | ts }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .7em; text-align: left;
         vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.meets_goal { color: #1a7f37; font-weight: 600; }
.meets_target { color: #9a6700; font-weight: 600; }
.misses { color: #cf222e; font-weight: 600; }
.no_data, .empty, .note { color: #777; }
.state { font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; }
code { font-size: 90%; }
</style>
</head>
<body>
<h1>autofix report</h1>
<p>At {{ now | ts }} UTC over the last {{ window }}; store <code>{{ source }}</code>.</p>
{% if snapshot %}
<p class="note">Read from the Parquet snapshot (the store is held by a running service):
it shows the store as of the snapshot's last export.</p>
{% endif %}

<h2>KPIs</h2>
<table>
<tr><th>KPI</th><th>value</th><th>seed target</th><th>our goal</th><th>status</th>
<th>basis</th></tr>
{% for row in kpi_rows %}
<tr><td>{{ row.label }}</td><td class="num">{{ row.shown }}</td><td>{{ row.seed }}</td>
<td>{{ row.goal }}</td>
<td class="{{ row.status or '' }}">{{ (row.status or '').replace('_', ' ') }}</td>
<td>{{ row.basis }}</td></tr>
{% endfor %}
</table>
<p>Fixes by final state:
{% for state, n in kpis.fixes_by_state.items() if n %}{{ state.replace('_', ' ') }} {{ n
}}{% if not loop.last %}, {% endif %}{% else %}none{% endfor %}.
Decisions by mode:
{% for mode, n in kpis.decisions_by_mode.items() if n %}{{ mode.replace('_', ' ') }} {{ n
}}{% if not loop.last %}, {% endif %}{% else %}none{% endfor %}.
Escalations: {{ kpis.escalations }}. Waiting for approval: {{ kpis.pending_approvals }}.</p>
{% if trend_source %}
<img src="kpi_trend.png" alt="KPI trend">
<p class="note">Trend from {{ trend_source }}.</p>
{% else %}
<p class="empty">No KPI trend yet: no KPI snapshots and no fixes or scored decisions in
the last {{ window }}.</p>
{% endif %}

<h2>Riskiest series</h2>
{% if risky %}
<table>
<tr><th>host</th><th>metric</th><th>labels</th><th>P 1 h</th><th>P 4 h</th><th>P 24 h</th>
<th>P 4 d</th><th>ETA (UTC)</th><th>80 % interval</th><th>model</th><th>made at</th></tr>
{% for r in risky %}
<tr><td>{{ r.host }}</td><td>{{ r.metric }}</td><td><code>{{ r.labels }}</code></td>
<td class="num">{{ '%.2f' % r.p_1h }}</td><td class="num">{{ '%.2f' % r.p_4h }}</td>
<td class="num">{{ '%.2f' % r.p_24h }}</td><td class="num">{{ '%.2f' % r.p_4d }}</td>
<td>{{ r.eta_text }}</td><td>{{ r.eta_lo | ts }} … {{ r.eta_hi | ts }}</td>
<td>{{ r.model }} {{ r.model_version }}</td><td>{{ r.made_at | ts }}</td></tr>
{% endfor %}
</table>
{% if forecast_chart %}<img src="forecast_vs_actual.png" alt="forecast vs actual">{% endif %}
{% elif silent %}
<p class="empty">No current forecasts: the {{ silent }} series with forecasts stopped
reporting (nothing in the last {{ lookback }}, or silent for several of their own
sampling intervals); their old forecasts are not risks now.</p>
{% else %}
<p class="empty">No predictions yet: run <code>autofix predict</code>.</p>
{% endif %}

<h2>Fixes</h2>
{% if fixes %}
<img src="fix_timeline.png" alt="fixes over time by target">
<p>{{ fix_count }} fixes in the last {{ window }}{% if fix_count > fixes | length
%}, the newest {{ fixes | length }} shown{% endif %}.</p>
<table>
<tr><th>id</th><th>requested (UTC)</th><th>action</th><th>target</th><th>state</th>
<th>gate</th><th>why</th><th>label</th></tr>
{% for f in fixes %}
<tr><td class="num">{{ f.fix_id }}</td><td>{{ f.requested_at | ts }}</td>
<td>{{ f.action }}</td><td>{{ f.target }}</td>
<td class="state" style="color: {{ colours.get(f.state, '#222') }}">{{ f.state }}</td>
<td>{{ f.gate or '' }}</td><td>{{ (f.why or '') | truncate(240) }}</td><td>{{ f.label }}</td></tr>
{% endfor %}
</table>
{% else %}
<p class="empty">No fixes in the last {{ window }}.</p>
{% endif %}

<h2>Escalations</h2>
{% if escalations %}
<table>
<tr><th>at (UTC)</th><th>fix</th><th>action</th><th>target</th><th>gate</th>
<th>reason</th></tr>
{% for e in escalations %}
<tr><td>{{ e.ts | ts }}</td><td class="num">{{ e.fix_id if e.fix_id is not none else '' }}</td>
<td>{{ e.action }}</td><td>{{ e.target }}</td><td>{{ e.gate or '' }}</td>
<td>{{ e.reason | truncate(240) }}</td></tr>
{% endfor %}
</table>
{% else %}
<p class="empty">No escalations in the last {{ window }}.</p>
{% endif %}
</body>
</html>
"""


def _eta(value: Any, now: datetime) -> str:
    """``ETA 2026-03-02 18:00 (in 6 h)``, or ``due now`` for one that is not ahead."""
    when = pd.Timestamp(value)
    ahead = (when - pd.Timestamp(_naive(now))).total_seconds()
    if ahead <= 0:
        return "due now"
    return f"ETA {when:%Y-%m-%d %H:%M} (in {_seconds(ahead)})"


def _ts(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    return f"{pd.Timestamp(value):%Y-%m-%d %H:%M}"


def _span(window: timedelta) -> str:
    seconds = window.total_seconds()
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    return f"{seconds:g} seconds"


def _missing(value: Any) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts, NaN and NaT as None: one kind of missing for charts and the template."""
    return [
        {str(k): (None if _missing(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def _label(value: Any) -> str:
    if value is None:
        return ""
    return "false fix" if value else "correct"


def _render(context: dict[str, Any]) -> str:
    env = Environment(
        autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["ts"] = _ts
    return env.from_string(_TEMPLATE).render(context)


def write_report(
    store: MetricStore,
    out_dir: str | Path,
    now: datetime,
    *,
    window: timedelta = timedelta(days=7),
    top: int = 5,
    manual_mttr: timedelta = timedelta(minutes=30),
    lookback: timedelta = timedelta(days=7),
) -> Path:
    """Write ``out_dir/index.html`` and its charts; return the page's path.

    A chart without data is not drawn (and an old one of that name is removed), so
    every file in ``out_dir`` belongs to this report.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = _naive(now)
    since = now - window
    kpis = compute_kpis(store, now, window, manual_mttr)
    risky = riskiest(store, now, top, lookback)
    forecast_series = audit_query(
        store,
        "SELECT count(DISTINCT series_id) AS n FROM predictions WHERE made_at <= ?",
        [now],
    )
    predicted = int(forecast_series["n"].iloc[0]) if not forecast_series.empty else 0
    fixes = _fixes(store, since, now)
    escalations = _escalations(store, since, now)
    drawn = {
        "forecast_vs_actual.png": _forecast_chart(
            store, risky, now, window, out / "forecast_vs_actual.png"
        ),
        "fix_timeline.png": _timeline_chart(fixes, escalations, out / "fix_timeline.png"),
    }
    trend_source = _trend_chart(store, since, now, out / "kpi_trend.png")
    drawn["kpi_trend.png"] = trend_source is not None
    for name, written in drawn.items():
        if not written:
            (out / name).unlink(missing_ok=True)
    risky_rows = _records(risky)
    for risk in risky_rows:
        risk["eta_text"] = "—" if risk["eta"] is None else _eta(risk["eta"], now)
    recent = _records(fixes.head(_TABLE_ROWS))
    for fix in recent:
        fix["label"] = _label(fix["false_fix"])
    html = _render(
        {
            "now": now,
            "window": _span(window),
            "source": store.path,
            "snapshot": store.snapshot is not None,
            "kpis": kpis,
            "kpi_rows": kpi_rows(kpis),
            "trend_source": trend_source,
            "risky": risky_rows,
            "silent": predicted if risky.empty else 0,
            "lookback": _span(lookback),
            "forecast_chart": drawn["forecast_vs_actual.png"],
            "fixes": recent,
            "fix_count": len(fixes),
            "escalations": _records(escalations.head(_TABLE_ROWS)),
            "colours": STATE_COLOURS,
        }
    )
    page = out / "index.html"
    partial = out / ".index.html.tmp"
    partial.write_text(html, encoding="utf-8")
    os.replace(partial, page)  # a reader never sees half a page
    return page


__all__ = ["CHARTS", "STATE_COLOURS", "riskiest", "write_report"]
