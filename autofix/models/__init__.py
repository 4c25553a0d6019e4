"""Forecasters and anomaly scorers (scikit-learn style estimators over long frames)."""
