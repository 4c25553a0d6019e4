"""Redis actions against a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from autofix.actions.base import Context, NoOp, RefusedError
from autofix.actions.redis import DeleteKeys, FlushDb, MemoryPurge, parse_info_text
from autofix.pipeline import RedisTarget
from tests.actions._util import run_phases
from tests.servers import RedisServer

RECORDED_INFO = """# Memory
used_memory:1048576
used_memory_human:1.00M
used_memory_rss:4194304
mem_fragmentation_ratio:4.00
"""


@pytest.fixture
def client(redis_srv: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_srv.url) as conn:
        conn.flushall()
        yield conn
        conn.flushall()


def _fill(conn: redis.Redis, prefix: str, n: int, size: int = 1000) -> None:
    pipe = conn.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"{prefix}{i}", b"v" * size)
        if i % 3 == 0:
            pipe.expire(f"{prefix}{i}", 3600)
    pipe.execute()


def _target(server: RedisServer) -> RedisTarget:
    return RedisTarget(name="cache", kind="redis", url=server.url, key_patterns=["session:*"])


def test_parse_recorded_info() -> None:
    info = parse_info_text(RECORDED_INFO)
    assert info["used_memory"] == "1048576"
    assert info["mem_fragmentation_ratio"] == "4.00"


def test_delete_keys_in_batches_then_rollback_restores(
    redis_srv: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    _fill(client, "session:", 3000)
    _fill(client, "keep:", 50)
    ctx = Context(fix_id=11, quarantine_dir=tmp_path)
    action = DeleteKeys.bind(_target(redis_srv), {"pattern": "session:*", "batch": 200}, ctx)
    before, applied, check = run_phases(action)
    assert check.ok, check.reason
    assert before["matching"] == 3000
    assert client.dbsize() == 50
    out = action.rollback(applied.undo)
    assert out.startswith("restored 3000 key(s)")
    assert client.dbsize() == 3050
    assert client.get("session:7") == b"v" * 1000
    assert 0 < client.ttl("session:3") <= 3600
    assert client.ttl("session:1") == -1


def test_delete_keys_pattern_must_be_allowlisted(redis_srv: RedisServer) -> None:
    for pattern in ("*", "keep:*", "session:*; FLUSHALL", "session:*\r\nFLUSHALL"):
        with pytest.raises(RefusedError) as caught:
            DeleteKeys.bind(_target(redis_srv), {"pattern": pattern}, Context())
        assert caught.value.gate == "allowlist"


def test_flushdb_verifies_memory_dropped_and_rolls_back(
    redis_srv: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    _fill(client, "k", 2000)
    action = FlushDb.bind(_target(redis_srv), {}, Context(fix_id=12, quarantine_dir=tmp_path))
    _before, applied, check = run_phases(action)
    assert check.ok, check.reason
    assert client.dbsize() == 0
    action.rollback(applied.undo)
    assert client.dbsize() == 2000


def test_flushdb_empty_is_noop(redis_srv: RedisServer, client: redis.Redis) -> None:
    action = FlushDb.bind(_target(redis_srv), {}, Context())
    assert isinstance(action.plan(action.facts()), NoOp)


def test_memory_purge(redis_srv: RedisServer, client: redis.Redis) -> None:
    _fill(client, "big", 5000, 2000)
    client.flushdb()
    action = MemoryPurge.bind(_target(redis_srv), {"min_fragmentation": 0}, Context())
    _, applied, check = run_phases(action)
    assert check.ok, check.reason
    assert "OK" in applied.output


def test_a_snapshot_never_overwrites_another_fix_with_the_same_id(
    redis_srv: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    undos = []
    for value in (b"first store", b"second store"):  # fix 1 of two stores, one quarantine
        client.set("k", value)
        action = FlushDb.bind(_target(redis_srv), {}, Context(fix_id=1, quarantine_dir=tmp_path))
        undos.append((action, run_phases(action)[1].undo))
    assert undos[0][1]["snapshot"] != undos[1][1]["snapshot"]
    undos[0][0].rollback(undos[0][1])
    assert client.get("k") == b"first store"


def test_delete_keys_with_a_condition_leaves_the_verdict_to_it_while_a_writer_refills(
    redis_srv: RedisServer, client: redis.Redis, tmp_path: Path
) -> None:
    # A warm-up job tops the cache up as soon as there is room: more keys of the pattern
    # than before by the time the action re-reads. Memory back under its threshold (the
    # triggering condition, checked by the executor) is what the fix promised.
    _fill(client, "session:", 100)
    ctx = Context(fix_id=12, quarantine_dir=tmp_path, condition=True)
    action = DeleteKeys.bind(_target(redis_srv), {"pattern": "session:*"}, ctx)
    before = action.facts()
    applied = action.apply(action.plan(before))  # type: ignore[arg-type]
    _fill(client, "session:refill:", 300, size=10)
    check = action.verify(before, action.facts())
    assert check.ok, check.reason
    assert "matching keys 100 -> 300" in check.reason
    assert applied.output == "deleted 100 key(s)"
    no_condition = DeleteKeys.bind(
        _target(redis_srv),
        {"pattern": "session:*"},
        ctx.__class__(fix_id=13, quarantine_dir=tmp_path),
    )
    assert not no_condition.verify(before, no_condition.facts()).ok
