"""Backtests: how models would have done on labelled history (anomaly events, forecasts)."""
