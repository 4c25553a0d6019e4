"""The cyclic garbage collector around heavy imports and at exit.

Each full collection walks every object in the process. pandas, scikit-learn,
matplotlib and MLflow build hundreds of thousands of objects when imported, which
trigger full collections while they load, make every later one longer, and are walked
once more by the interpreter's last collection at exit: about 2 s of CPU in an 8 s
``autofix train``. Modules live as long as the process and an import leaves little
cyclic garbage, so the collector waits while they load and what they built is then
frozen out of its sight (``gc.freeze``). Objects are still freed when their last
reference goes; only cycles among frozen objects are never collected.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Import without the collector, then freeze what exists (use once per process)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.freeze()


@functools.cache
def freeze_at_exit() -> None:
    """Leave the heap out of the interpreter's last collection (a one-shot command).

    Registered once, so it runs after the exit handlers registered later; an
    in-process caller (the CLI's tests) is unaffected until its own exit.
    """
    atexit.register(gc.freeze)


__all__ = ["collector_paused", "freeze_at_exit"]
