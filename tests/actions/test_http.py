"""http.call against a real local JSON endpoint: set, verify, roll back the previous value."""

from __future__ import annotations

import pytest

from autofix.actions.base import Context, RefusedError
from autofix.actions.http import HttpCall
from autofix.pipeline import EndpointTarget
from tests.actions._util import run_phases
from tests.servers import StateServer


def _weight(server: StateServer, **extra: object) -> EndpointTarget:
    return EndpointTarget(
        name="lb", kind="endpoint", url=server.url, field="weight", min_value=0, max_value=100,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def test_set_weight_then_rollback(state_http: StateServer) -> None:
    action = HttpCall.bind(_weight(state_http), {"value": 0}, Context())
    before, applied, check = run_phases(action)
    assert check.ok, check.reason
    assert before == {"value": 10}
    assert state_http.state["weight"] == 0
    assert applied.undo == {"previous": 10}
    action.rollback(applied.undo)
    assert state_http.state["weight"] == 10


def test_reload_trigger_without_field(state_http: StateServer) -> None:
    target = EndpointTarget(name="reload", kind="endpoint", url=state_http.url, method="POST")
    _, _, check = run_phases(HttpCall.bind(target, {}, Context()))
    assert check.ok
    assert state_http.state["reloads"] == 1


@pytest.mark.parametrize("value", [101, -1, "50; rm -rf /", True])
def test_value_outside_bounds_is_refused(state_http: StateServer, value: object) -> None:
    with pytest.raises(RefusedError):
        HttpCall.bind(_weight(state_http), {"value": value}, Context())
    assert state_http.state["weight"] == 10


def test_allowed_values(state_http: StateServer) -> None:
    target = EndpointTarget(
        name="lb", kind="endpoint", url=state_http.url, field="mode", allowed_values=["a", "b"]
    )
    with pytest.raises(RefusedError) as caught:
        HttpCall.bind(target, {"value": "c"}, Context())
    assert caught.value.gate == "allowlist"
