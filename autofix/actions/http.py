"""http.call: a config-reload endpoint, a load-balancer weight, a scale webhook.

The URL, method and field come from the ``endpoint`` target; the parameter is only the
value, checked against ``allowed_values`` / ``min_value`` / ``max_value``. With a
``field``, the previous value is read (GET) first and kept for rollback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from pydantic import Field

from autofix.actions.base import Action, Applied, Check, Facts, NoOp, Params, Plan, Step
from autofix.errors import ActionError, RefusedError
from autofix.targets import EndpointTarget

Scalar = str | int | float | bool


def parse_field(body: Any, field: str) -> Any:
    """The value of ``field`` in a JSON object reply, or raise ActionError."""
    if not isinstance(body, dict) or field not in body:
        raise ActionError(f"reply has no field {field!r}")
    return body[field]


class CallParams(Params):
    value: Scalar | None = Field(None, description="Value to set (endpoints with a field).")


class HttpCall(Action[CallParams, EndpointTarget]):
    name = "http.call"
    summary = "Call a declared HTTP endpoint; with a field, keep the previous value for rollback."
    params_model = CallParams
    target_kinds = (EndpointTarget,)

    rolls_back = True

    def authorize(self) -> None:
        t, value = self.target, self.params.value
        if t.field is None:
            if value is not None:
                raise RefusedError("params", f"endpoint {t.name!r} takes no value")
            return
        if value is None:
            raise RefusedError("params", f"endpoint {t.name!r} needs a value for {t.field!r}")
        if t.allowed_values is not None and value not in t.allowed_values:
            raise RefusedError(
                "allowlist", f"value {value!r} is not in allowed_values of {t.name!r}"
            )
        if t.min_value is not None or t.max_value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RefusedError("params", f"value {value!r} must be a number")
            if (t.min_value is not None and value < t.min_value) or (
                t.max_value is not None and value > t.max_value
            ):
                raise RefusedError(
                    "allowlist", f"value {value!r} outside [{t.min_value}, {t.max_value}]"
                )

    def _request(self, method: str, body: Any = None) -> httpx.Response:
        try:
            with self.ctx.http() as client:
                reply = client.request(
                    method, self.target.url, json=body, headers=self.target.headers
                )
        except httpx.HTTPError as exc:
            raise ActionError(f"{method} {self.target.url}: {type(exc).__name__}: {exc}") from None
        if not reply.is_success:
            raise ActionError(f"{method} {self.target.url}: HTTP {reply.status_code}")
        return reply

    def facts(self) -> Facts:
        if self.target.field is None:
            return {}
        reply = self._request("GET")
        try:
            body = reply.json()
        except ValueError:
            raise ActionError(f"GET {self.target.url}: not JSON") from None
        return {"value": parse_field(body, self.target.field)}

    def plan(self, facts: Facts) -> Plan:
        field = self.target.field
        if field is None:
            return [Step("call", f"{self.target.method} {self.target.url}")]
        if facts["value"] == self.params.value:
            return NoOp(f"{field} is already {self.params.value!r}")
        return [
            Step(
                "call",
                f"{self.target.method} {self.target.url} {field}: "
                f"{facts['value']!r} -> {self.params.value!r}",
                {"previous": facts["value"], "value": self.params.value},
            )
        ]

    def apply(self, steps: Sequence[Step]) -> Applied:
        field = self.target.field
        if field is None:
            reply = self._request(self.target.method)
            return Applied(f"HTTP {reply.status_code}: {reply.text}")
        step = steps[0]
        reply = self._request(self.target.method, {field: step.args["value"]})
        return Applied(
            f"HTTP {reply.status_code}: {reply.text}", {"previous": step.args["previous"]}
        )

    def verify(self, before: Facts, after: Facts) -> Check:
        if self.target.field is None:
            return Check(True, "called")
        if after["value"] == self.params.value:
            return Check(True, f"{self.target.field} is {after['value']!r}")
        return Check(
            False, f"{self.target.field} is {after['value']!r}, wanted {self.params.value!r}"
        )

    def rollback(self, undo: Mapping[str, Any]) -> str:
        if self.target.field is None or "previous" not in undo:
            raise ActionError(
                f"{self.target.name}: a trigger call has no previous value to restore"
            )
        reply = self._request(self.target.method, {self.target.field: undo["previous"]})
        return f"restored {self.target.field}={undo['previous']!r}: HTTP {reply.status_code}"
