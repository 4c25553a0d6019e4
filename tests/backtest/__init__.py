"""Tests of autofix.backtest."""
