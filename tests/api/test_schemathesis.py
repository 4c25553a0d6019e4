"""Schemathesis over /openapi.json against the real server: no 5xx for any input, every
response documented and matching its schema, auth never ignored.

Cases are generated with an operator token over a world with real fixes, so approve,
reject, rollback, label and the Alertmanager webhook run for real on whatever comes:
valid data (positive) and data the schema forbids (negative), 25 derandomized examples
each per operation. (schemathesis' pytest plugin needs an older pytest; its strategies
under a plain hypothesis ``@given`` are the same generator.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.api.world import OPERATOR, auth, make_world, serving

OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/forecasts"),
    ("GET", "/api/v1/series/{series_id}/forecast"),
    ("GET", "/api/v1/anomalies"),
    ("GET", "/api/v1/kpis"),
    ("GET", "/api/v1/maintenance"),
    ("GET", "/api/v1/fixes"),
    ("GET", "/api/v1/fixes/{fix_id}"),
    ("POST", "/api/v1/fixes/{fix_id}/approve"),
    ("POST", "/api/v1/fixes/{fix_id}/reject"),
    ("POST", "/api/v1/fixes/{fix_id}/rollback"),
    ("POST", "/api/v1/fixes/{fix_id}/label"),
    ("POST", "/api/v1/alerts/alertmanager"),
]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with make_world(tmp_path_factory.mktemp("fuzz")) as world, serving(world) as client:
        yield schemathesis.openapi.from_url(f"{client.base_url}/openapi.json")


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    served = {
        (op.method.upper(), op.path)
        for result in api_schema.get_all_operations()
        for op in [result.ok()]
    }
    assert served == set(OPERATIONS)


# Negative data needs something to break: every operation but the three without inputs.
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in OPERATIONS[3:]
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_operation_conforms(api_schema: Any, method: str, path: str, mode: Any) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=auth(OPERATOR))

    run()
