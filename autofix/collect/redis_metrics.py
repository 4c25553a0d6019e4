"""A Redis target: PING as the probe, then the server's own statistics (redis_exporter names).

After a PING that answers within the probe timeout, one ``INFO`` gives memory, clients,
evictions, expirations and the keyspace; each of the target's ``key_patterns`` is counted
with ``SCAN MATCH`` (never ``KEYS``), at most ``scan_max_keys`` keys per pattern — past
that, the count is extrapolated from the share that matched, so a huge keyspace costs a
bounded number of round trips per cycle.

What ``redis_memory_used_bytes`` is measured against (its ``capacity``): ``maxmemory``
(Redis refuses writes or evicts beyond it), else the target's ``memory_limit``, else the
RAM of the server's host (``total_system_memory``). A PING that fails is ``probe_up 0``
and nothing else; an ``INFO`` or ``SCAN`` that fails after it is logged and leaves the
probe up with what was read.

>>> info = {"used_memory": 100, "maxmemory": 400, "connected_clients": 3, "maxclients": 10}
>>> used = samples_from_info(info, "cache")[0]
>>> used.metric, used.value, used.capacity
('redis_memory_used_bytes', 100.0, 400.0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import redis

from autofix.collect.base import Sample
from autofix.collect.probes import _Probe, _reason
from autofix.targets import RedisTarget

log = logging.getLogger(__name__)

#: INFO counters → metric names (counters end in _total).
_COUNTERS = (
    ("evicted_keys", "redis_evicted_keys_total"),
    ("expired_keys", "redis_expired_keys_total"),
    ("rejected_connections", "redis_rejected_connections_total"),
)
#: Keys asked for per SCAN round trip.
SCAN_COUNT = 1000


def _float(info: Mapping[str, Any], key: str) -> float | None:
    value = info.get(key)
    if value is None or isinstance(value, dict):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def memory_capacity(info: Mapping[str, Any], memory_limit: float | None = None) -> float | None:
    """maxmemory, else the configured cap, else the server host's RAM (None: unknown)."""
    maxmemory = _float(info, "maxmemory") or 0.0
    if maxmemory > 0:
        return maxmemory
    if memory_limit is not None and memory_limit > 0:
        return memory_limit
    system = _float(info, "total_system_memory") or 0.0
    return system if system > 0 else None


def samples_from_info(
    info: Mapping[str, Any], target: str, memory_limit: float | None = None
) -> list[Sample]:
    """The series of one parsed ``INFO`` reply (redis-py's dict; keyspace as ``db0: {...}``)."""
    labels = {"target": target}
    out: list[Sample] = []
    capacity = memory_capacity(info, memory_limit)
    for key, metric in (
        ("used_memory", "redis_memory_used_bytes"),
        ("used_memory_rss", "redis_memory_used_rss_bytes"),
    ):
        value = _float(info, key)
        if value is not None:
            out.append(Sample(metric, value, labels, "bytes", capacity))
    maxmemory = _float(info, "maxmemory")
    if maxmemory is not None:
        out.append(Sample("redis_memory_max_bytes", maxmemory, labels, "bytes"))
    ratio = _float(info, "mem_fragmentation_ratio")
    if ratio is not None:
        out.append(Sample("redis_mem_fragmentation_ratio", ratio, labels, "ratio"))
    maxclients = _float(info, "maxclients")
    clients = _float(info, "connected_clients")
    if clients is not None:
        cap = maxclients if maxclients and maxclients > 0 else None
        out.append(Sample("redis_connected_clients", clients, labels, "count", cap))
    if maxclients is not None:
        out.append(Sample("redis_config_maxclients", maxclients, labels, "count"))
    blocked = _float(info, "blocked_clients")
    if blocked is not None:
        out.append(Sample("redis_blocked_clients", blocked, labels, "count"))
    for key, metric in _COUNTERS:
        value = _float(info, key)
        if value is not None:
            out.append(Sample(metric, value, labels, "count"))
    for key, value in info.items():
        keyspace = isinstance(key, str) and key[:2] == "db" and key[2:].isdigit()
        if keyspace and isinstance(value, dict):
            db = {"target": target, "db": key}
            out.append(Sample("redis_db_keys", float(value.get("keys", 0)), db, "count"))
            expiring = float(value.get("expires", 0))
            out.append(Sample("redis_db_keys_expiring", expiring, db, "count"))
    return out


class RedisCollector(_Probe):
    """PING (the probe: ``probe_up``, ``probe_duration_seconds``), then INFO and SCAN counts."""

    kind = "redis"

    def __init__(self, target: RedisTarget, timeout: float) -> None:
        super().__init__(target.name, timeout)
        self.target = target
        self._client: Any = None

    def _probe(self, labels: dict[str, str]) -> list[Sample]:
        client = redis.Redis.from_url(
            self.target.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        try:
            client.ping()
        except BaseException:
            client.close()
            raise
        self._client = client
        return []

    def _after(self) -> list[Sample]:
        client, self._client = self._client, None
        if client is None:
            return []
        try:
            return self._statistics(client)
        finally:
            client.close()

    def _statistics(self, client: Any) -> list[Sample]:
        try:
            info = client.info()
        except redis.RedisError as exc:
            log.warning("redis %s: INFO failed: %s", self.name, _reason(exc))
            return []
        if "maxclients" not in info:  # before Redis 7 INFO does not say; CONFIG may
            info = {**info, **self._maxclients(client)}
        limit = float(self.target.memory_limit) if self.target.memory_limit else None
        out = samples_from_info(info, self.name, limit)
        db = f"db{int(client.connection_pool.connection_kwargs.get('db', 0) or 0)}"
        space = info.get(db)
        total = int(space.get("keys", 0)) if isinstance(space, dict) else 0
        for pattern in self.target.key_patterns:
            try:
                count = self._count(client, pattern, total)
            except redis.RedisError as exc:
                log.warning("redis %s: SCAN %r failed: %s", self.name, pattern, _reason(exc))
                continue
            labels = {"target": self.name, "db": db, "key": pattern}
            out.append(Sample("redis_keys_count", count, labels, "count"))
        return out

    def _maxclients(self, client: Any) -> dict[str, Any]:
        try:
            reply = client.config_get("maxclients")
        except redis.RedisError:
            return {}  # CONFIG renamed or not allowed: clients without a capacity
        return {"maxclients": reply.get("maxclients")} if isinstance(reply, dict) else {}

    def _count(self, client: Any, pattern: str, total: int) -> float:
        """Keys matching ``pattern``: exact up to ``scan_max_keys`` visited, then estimated."""
        limit = self.target.scan_max_keys
        deadline = time.monotonic() + self.timeout
        cursor, visited, matched = 0, 0, 0
        while True:
            # Redis does the matching (its glob rules, not Python's); COUNT is how many
            # slots one call walks, so calls × COUNT is about how many keys were visited.
            cursor, keys = client.scan(cursor=cursor, match=pattern, count=SCAN_COUNT)
            matched += len(keys)
            visited += SCAN_COUNT
            if cursor == 0:
                return float(matched)
            if visited >= limit or time.monotonic() > deadline:
                break
        # Cut short: the share matched so far, over the whole keyspace.
        share = matched / max(visited, 1)
        return float(max(matched, round(share * total)))
