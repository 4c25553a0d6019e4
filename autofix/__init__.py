"""autofix: predictive auto-remediation for a Linux service fleet."""

from types import ModuleType

__version__ = "0.1.0"

__all__ = ["__version__", "lab"]


def __getattr__(name: str) -> ModuleType:
    # ``autofix.lab`` (the notebook API) pulls in pandas and DuckDB: imported on first use,
    # so ``import autofix`` stays instant for the CLI.
    if name == "lab":
        import importlib

        return importlib.import_module("autofix.lab")
    raise AttributeError(f"module 'autofix' has no attribute {name!r}")
