"""Data-driven plan tests (pyinfra style): facts in, steps or a no-op reason out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from autofix.actions.base import Context, NoOp
from autofix.actions.registry import ACTIONS
from autofix.pipeline import Target

CASES = json.loads((Path(__file__).parent / "cases" / "plans.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_plan(case: dict[str, Any]) -> None:
    target = TypeAdapter(Target).validate_python(case["target"])
    action = ACTIONS[case["action"]].bind(target, case["params"], Context())
    plan = action.plan(case["facts"])
    if "noop" in case:
        assert isinstance(plan, NoOp)
        assert case["noop"] in plan.reason
        return
    assert not isinstance(plan, NoOp)
    got = [[s.op, *(v for k in ("path", "archive") if (v := s.args.get(k)))] for s in plan]
    assert got == case["steps"]


def test_plan_is_pure() -> None:
    case = CASES[0]
    target = TypeAdapter(Target).validate_python(case["target"])
    action = ACTIONS[case["action"]].bind(target, case["params"], Context())
    facts = json.loads(json.dumps(case["facts"]))
    first, second = action.plan(facts), action.plan(facts)
    assert first == second
    assert facts == case["facts"]
