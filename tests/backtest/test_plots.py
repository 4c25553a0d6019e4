"""The backtest's plots: both PNGs written, at the size asked for, without pyplot."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from autofix.backtest.forecast import LabelledSeries
from autofix.backtest.plots import forecast_plots

T0 = pd.Timestamp("2026-01-01")


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _case(key: str, exhaustion: pd.Timestamp | None, traps: list[str]) -> LabelledSeries:
    ts = pd.date_range(T0, periods=4 * 24 * 12, freq="5min")
    frame = pd.DataFrame({"ts": ts, "value": np.linspace(0.2, 0.95, len(ts))})
    return LabelledSeries(key, "case", frame, exhaustion, traps)


def _forecasts(key: str, p24: np.ndarray) -> pd.DataFrame:
    origin = pd.date_range(T0 + pd.Timedelta(days=2), periods=len(p24), freq="2h")
    return pd.DataFrame({"key": key, "origin": origin, "p_24h": p24})


def test_forecast_plots_writes_both_pngs(tmp_path: Path) -> None:
    filling = _case("filling", T0 + pd.Timedelta(days=4, hours=1), [])
    quiet = _case("quiet", None, ["sawtooth"])
    healthy = _case("healthy", None, [])  # neither hard nor an event: not drawn
    forecasts = pd.concat(
        [_forecasts("filling", np.r_[np.zeros(12), np.ones(12)]), _forecasts("quiet", np.zeros(24))]
    )
    paths = forecast_plots(forecasts, [filling, quiet, healthy], tmp_path / "plots")
    assert set(paths) == {"forecast_vs_actual", "lead_time_histogram"}
    # 10 x 2.6 in per hard case and 6 x 3 in, at 90 dpi
    assert _png_size(paths["forecast_vs_actual"]) == (900, 468)
    assert _png_size(paths["lead_time_histogram"]) == (540, 270)


def test_no_hard_case_still_draws_the_histogram(tmp_path: Path) -> None:
    healthy = _case("healthy", None, [])
    paths = forecast_plots(_forecasts("healthy", np.zeros(24)), [healthy], tmp_path)
    assert list(paths) == ["lead_time_histogram"]
    assert paths["lead_time_histogram"].is_file()


def test_plots_module_does_not_import_pyplot() -> None:
    # pyplot brings a backend and a figure manager the files do not need (and their cost
    # on every `autofix train`).
    code = "import sys, autofix.backtest.plots; print('matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
