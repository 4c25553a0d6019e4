"""Session fixtures: real servers on loopback, started once and stopped at the end."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.servers import (
    HttpServer,
    PostgresServer,
    PostgresUnavailableError,
    RedisServer,
    ServerUnavailableError,
    StateServer,
    Supervisor,
    http_server,
    postgres_server,
    redis_server,
    state_server,
    supervisord_server,
)

T = TypeVar("T")


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server (initdb in a temp dir, loopback, free port).

    Skips when PostgreSQL is not installed, except under CI (CI=true), where a missing
    server is a broken test environment and fails instead.
    """
    try:
        with postgres_server() as server:
            yield server
    except PostgresUnavailableError as exc:
        if _under_ci():
            pytest.fail(f"CI=true but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_dsn(postgres: PostgresServer) -> str:
    """libpq DSN of the session's PostgreSQL server, logged in as its superuser."""
    return postgres.dsn


@pytest.fixture(scope="session")
def http_test_server() -> Iterator[HttpServer]:
    """A local HTTP server: ``/ok`` 200, ``/error`` 500, ``/slow?s=N`` answers after N s."""
    with http_server() as server:
        yield server


def _server_or_skip(factory: Callable[[], contextlib.AbstractContextManager[T]]) -> Iterator[T]:
    try:
        with factory() as server:
            yield server
    except ServerUnavailableError as exc:
        if _under_ci():
            pytest.fail(f"CI=true but {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """A real redis-server on loopback (no persistence). Fails instead of skipping under CI."""
    yield from _server_or_skip(redis_server)


@pytest.fixture(scope="session")
def supervisor() -> Iterator[Supervisor]:
    """A real supervisord managing the ``demo`` HTTP program. Fails instead of skipping under CI."""
    yield from _server_or_skip(supervisord_server)


@pytest.fixture
def state_http() -> Iterator[StateServer]:
    """A fresh JSON control endpoint (weight 10, reloads 0) per test."""
    with state_server() as server:
        yield server
