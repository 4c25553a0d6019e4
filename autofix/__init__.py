"""autofix: predictive auto-remediation for a Linux service fleet."""

__version__ = "0.1.0"

__all__ = ["__version__"]
