"""command.run: argv from configuration, params as whole arguments, never a shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from autofix.actions.base import ActionError, Context, NoOp, RefusedError
from autofix.actions.command import RunCommand, build_argv
from autofix.pipeline import CommandTarget

_ECHO = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"


def _target(tmp_path: Path, **extra: object) -> CommandTarget:
    return CommandTarget(
        name="echo",
        kind="command",
        argv=[sys.executable, "-c", _ECHO, str(tmp_path / "argv.json"), "--name", "{name}"],
        params={"name": r".{1,64}"},
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "value", ["; rm -rf /", "$(touch pwned)", "`touch pwned`", "a b 'c' \"d\"", "*", "|| true"]
)
def test_hostile_values_arrive_as_one_argument(tmp_path: Path, value: str) -> None:
    action = RunCommand.bind(_target(tmp_path), {"name": value}, Context())
    steps = action.plan(action.facts())
    assert not isinstance(steps, NoOp)
    action.apply(steps)
    assert json.loads((tmp_path / "argv.json").read_text()) == ["--name", value]
    assert not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()


@pytest.mark.parametrize(
    ("params", "gate"),
    [
        ({"name": "a\nb"}, "params"),
        ({"name": "x" * 65}, "params"),
        ({"name": "ok", "extra": "x"}, "params"),
        ({}, "params"),
    ],
)
def test_invalid_params_are_refused(tmp_path: Path, params: dict[str, str], gate: str) -> None:
    with pytest.raises(RefusedError) as caught:
        RunCommand.bind(_target(tmp_path), params, Context())
    assert caught.value.gate == gate
    assert not (tmp_path / "argv.json").exists()


_EXISTS = "import os, sys; sys.exit(not os.path.exists(sys.argv[1]))"


def test_check_and_rollback_argv(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    target = CommandTarget(
        name="flag",
        kind="command",
        argv=[sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write('x')", str(flag)],
        check_argv=[sys.executable, "-c", _EXISTS, str(flag)],
        rollback_argv=[sys.executable, "-c", "import os, sys; os.remove(sys.argv[1])", str(flag)],
    )  # fmt: skip
    action = RunCommand.bind(target, {}, Context())
    before = action.facts()
    steps = action.plan(before)
    assert not isinstance(steps, NoOp)
    applied = action.apply(steps)
    assert action.verify(before, action.facts()).ok
    assert isinstance(action.plan(action.facts()), NoOp)
    action.rollback(applied.undo)
    assert not flag.exists()


def test_failing_command_is_an_action_error(tmp_path: Path) -> None:
    target = CommandTarget(
        name="f", kind="command", argv=[sys.executable, "-c", "raise SystemExit(3)"]
    )
    action = RunCommand.bind(target, {}, Context())
    with pytest.raises(ActionError, match="exit 3"):
        action.apply(action.plan(action.facts()))  # type: ignore[arg-type]


def test_build_argv_substitutes_whole_elements_only() -> None:
    assert build_argv(["x", "--a={v}", "{v}"], {"v": "1"}) == ["x", "--a={v}", "1"]


def test_an_invalid_declared_regex_refuses_with_one_line(tmp_path: Path) -> None:
    target = _target(tmp_path).model_copy(update={"params": {"name": "[0-9"}})
    with pytest.raises(RefusedError, match="declares an invalid regular expression") as caught:
        RunCommand.bind(target, {"name": "1"}, Context())
    assert caught.value.gate == "params"


@pytest.mark.parametrize(
    ("raw", "text"), [("1.10", "1.10"), ("007", "007"), (True, "true"), (5, "5"), (2.5, "2.5")]
)
def test_values_become_argv_text_unchanged(tmp_path: Path, raw: object, text: str) -> None:
    action = RunCommand.bind(_target(tmp_path), {"name": raw}, Context())
    steps = action.plan(action.facts())
    assert not isinstance(steps, NoOp)
    action.apply(steps)
    assert json.loads((tmp_path / "argv.json").read_text()) == ["--name", text]


def test_a_nested_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RefusedError, match="give text or a number"):
        RunCommand.bind(_target(tmp_path), {"name": ["a", "b"]}, Context())
