"""Helpers shared by the action tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from autofix.actions.base import Action, Check, NoOp, Step


def eventually(probe: Callable[[], bool], timeout: float = 10.0, every: float = 0.1) -> bool:
    """Poll ``probe`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(every)
    return probe()


def run_phases(action: Action[Any, Any], wait: float = 10.0) -> tuple[dict[str, Any], Any, Check]:
    """facts → plan → apply → verify (re-reading facts until it passes or ``wait`` ends)."""
    before = action.facts()
    steps = action.plan(before)
    assert not isinstance(steps, NoOp), steps
    assert all(isinstance(s, Step) for s in steps)
    applied = action.apply(steps)
    result: list[Check] = []

    def verified() -> bool:
        result.append(action.verify(before, action.facts()))
        return result[-1].ok

    eventually(verified, wait)
    return before, applied, result[-1]
