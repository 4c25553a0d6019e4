"""RedisCollector against a real redis-server: every series with its capacity, bounded SCANs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis._parsers.helpers import parse_info

from autofix.collect.base import Sample
from autofix.collect.redis_metrics import RedisCollector, memory_capacity, samples_from_info
from autofix.targets import RedisTarget
from tests.servers import RedisServer, free_port


def _by_metric(samples: list[Sample]) -> dict[str, Sample]:
    return {s.metric: s for s in samples if s.metric != "redis_keys_count"}


@pytest.fixture
def client(redis_srv: RedisServer) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_srv.url)
    conn.flushdb()
    before = conn.config_get("maxclients")["maxclients"]
    try:
        yield conn
    finally:
        conn.config_set("maxmemory", 0)
        conn.config_set("maxclients", before)
        conn.flushdb()
        conn.close()


def test_every_series_with_its_capacity(redis_srv: RedisServer, client: redis.Redis) -> None:
    client.config_set("maxmemory", 64 * 2**20)
    client.config_set("maxclients", 500)
    for i in range(300):
        client.set(f"page:{i}", "x" * 100)
    client.set("session:1", "y", ex=3600)
    target = RedisTarget(
        kind="redis", name="cache", url=redis_srv.url, key_patterns=["page:*", "session:*"]
    )
    samples = RedisCollector(target, 2.0).collect()
    got = _by_metric(samples)
    assert got["probe_up"].value == 1.0
    assert got["probe_up"].labels == {"target": "cache", "kind": "redis"}
    used = got["redis_memory_used_bytes"]
    assert used.capacity == 64 * 2**20  # maxmemory: where writes fail
    assert 0 < used.value < used.capacity
    assert used.labels == {"target": "cache"}
    assert got["redis_memory_used_rss_bytes"].capacity == 64 * 2**20
    assert got["redis_memory_max_bytes"].value == 64 * 2**20
    clients = got["redis_connected_clients"]
    assert clients.capacity == 500
    assert clients.value >= 1  # us
    assert got["redis_config_maxclients"].value == 500
    for counter in (
        "redis_evicted_keys_total",
        "redis_expired_keys_total",
        "redis_rejected_connections_total",
    ):
        assert got[counter].value >= 0
    assert got["redis_db_keys"].value == 301
    assert got["redis_db_keys"].labels == {"target": "cache", "db": "db0"}
    assert got["redis_db_keys_expiring"].value == 1
    counts = {s.labels["key"]: s.value for s in samples if s.metric == "redis_keys_count"}
    assert counts == {"page:*": 300, "session:*": 1}


def test_without_maxmemory_the_capacity_is_the_configured_cap_then_the_ram(
    redis_srv: RedisServer, client: redis.Redis
) -> None:
    capped = RedisTarget(kind="redis", name="cache", url=redis_srv.url, memory_limit="1GiB")
    used = _by_metric(RedisCollector(capped, 2.0).collect())["redis_memory_used_bytes"]
    assert used.capacity == 2**30
    bare = RedisTarget(kind="redis", name="cache", url=redis_srv.url)
    used = _by_metric(RedisCollector(bare, 2.0).collect())["redis_memory_used_bytes"]
    info = client.info("memory")
    assert used.capacity == float(info["total_system_memory"])  # the server host's RAM


def test_key_count_is_bounded_and_extrapolated(redis_srv: RedisServer, client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(20_000):
        pipe.set(f"page:{i}" if i % 4 else f"other:{i}", "1")
    pipe.execute()
    target = RedisTarget(
        kind="redis", name="cache", url=redis_srv.url, key_patterns=["page:*"], scan_max_keys=2000
    )
    collector = RedisCollector(target, 2.0)
    calls: list[int] = []
    real_scan = redis.Redis.scan

    def counting_scan(self: redis.Redis, *args: object, **kwargs: object) -> object:
        calls.append(1)
        return real_scan(self, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(redis.Redis, "scan", counting_scan)
        samples = collector.collect()
    count = next(s.value for s in samples if s.metric == "redis_keys_count")
    assert len(calls) <= 3  # 2000 keys at 1000 per SCAN: not the 20 a full walk takes
    assert count == pytest.approx(15_000, rel=0.15)


def test_a_server_that_does_not_answer_is_probe_up_0_and_nothing_else() -> None:
    target = RedisTarget(kind="redis", name="cache", url=f"redis://127.0.0.1:{free_port()}/0")
    collector = RedisCollector(target, 0.5)
    samples = collector.collect()
    assert [(s.metric, s.value) for s in samples] == [("probe_up", 0.0)]
    assert collector.last_error is not None


# Recorded from a Redis 6 server: INFO there has no maxclients (Redis 7 added it).
_REDIS6_INFO = """# Clients
connected_clients:7
blocked_clients:0
# Memory
used_memory:2048000
used_memory_rss:4096000
total_system_memory:8000000000
maxmemory:0
mem_fragmentation_ratio:2.00
# Stats
evicted_keys:12
expired_keys:40
rejected_connections:0
# Keyspace
db0:keys=10,expires=2,avg_ttl=1000
db3:keys=5,expires=0,avg_ttl=0
"""


def test_recorded_info_of_an_older_server() -> None:
    info = parse_info(_REDIS6_INFO)
    samples = samples_from_info(info, "cache")
    got = _by_metric(samples)
    assert got["redis_memory_used_bytes"].capacity == 8e9  # no maxmemory: the host's RAM
    assert got["redis_connected_clients"].capacity is None  # maxclients unknown
    assert "redis_config_maxclients" not in got
    assert got["redis_evicted_keys_total"].value == 12
    keys = {s.labels["db"]: s.value for s in samples if s.metric == "redis_db_keys"}
    assert keys == {"db0": 10, "db3": 5}
    assert memory_capacity({"maxmemory": 0, "total_system_memory": 0}) is None
    with_cap = samples_from_info({**info, "maxclients": 100}, "cache")
    assert _by_metric(with_cap)["redis_connected_clients"].capacity == 100
