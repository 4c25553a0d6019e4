"""The collector around heavy imports: paused, restored as it was, imports frozen."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from autofix._gc import collector_paused


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was before, frozen objects released."""
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_paused_then_restored_and_the_import_frozen(
    collector: None, enabled: bool
) -> None:
    gc.enable() if enabled else gc.disable()
    gc.unfreeze()
    with collector_paused():
        assert not gc.isenabled()
        # objects an import would leave behind
        import_like: list[list[int]] = [[] for _ in range(1000)]
    assert gc.isenabled() is enabled
    assert gc.get_freeze_count() >= len(import_like)


def test_collector_restored_when_the_import_fails(collector: None) -> None:
    gc.enable()
    with pytest.raises(ImportError), collector_paused():
        import autofix_no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert gc.isenabled()


def test_a_command_freezes_the_heap_at_exit_once() -> None:
    # Exit handlers run last-registered first: the one registered before freeze_at_exit
    # runs after the freeze.
    script = (
        "import atexit, gc\n"
        "atexit.register(lambda: print(gc.get_freeze_count() > 0))\n"
        "from autofix._gc import freeze_at_exit\n"
        "before = atexit._ncallbacks()\n"
        "freeze_at_exit(); freeze_at_exit()\n"
        "print(gc.get_freeze_count(), atexit._ncallbacks() - before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["0", "1", "True"]
