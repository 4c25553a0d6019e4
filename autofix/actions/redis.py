"""Redis: FLUSHDB, delete keys by pattern (SCAN in batches, never KEYS), MEMORY PURGE.

Deleting actions first DUMP what they delete (with its TTL) into the quarantine, so
rollback RESTOREs it; verify is "used_memory dropped". Patterns are not free text: the
``pattern`` parameter must be one of the target's ``key_patterns``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from pydantic import Field

from autofix.actions._quarantine import new_slot
from autofix.actions.base import Action, Applied, Check, Facts, NoOp, Params, Plan, Step
from autofix.errors import ActionError, RefusedError
from autofix.targets import RedisTarget

_MEMORY_FIELDS = ("used_memory", "used_memory_rss", "mem_fragmentation_ratio", "used_memory_peak")


def parse_memory_info(info: Mapping[str, Any]) -> dict[str, float]:
    """The fields autofix uses from ``INFO memory`` (a parsed reply)."""
    return {key: float(info[key]) for key in _MEMORY_FIELDS if key in info}


def parse_info_text(text: str) -> dict[str, str]:
    """Parse raw ``INFO`` text (``key:value`` lines, ``#`` sections) into a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            key, value = line.split(":", 1)
            out[key] = value
    return out


class _RedisParams(Params):
    snapshot_max_keys: int = Field(
        100_000, ge=0, description="DUMP up to this many keys for rollback (more: no rollback)."
    )
    batch: int = Field(500, ge=1, le=10_000, description="Keys per SCAN/DEL round trip.")


class _RedisAction(Action[Any, RedisTarget]):
    target_kinds = (RedisTarget,)

    @contextmanager
    def client(self) -> Iterator[Any]:  # redis-py types sync and async replies as one
        conn = redis.Redis.from_url(
            self.target.url, socket_timeout=self.ctx.timeout, socket_connect_timeout=5
        )
        try:
            yield conn
        except redis.RedisError as exc:
            raise ActionError(f"redis {self.target.name}: {exc}") from exc
        finally:
            conn.close()

    def _memory(self, conn: Any) -> dict[str, float]:
        return parse_memory_info(conn.info("memory"))

    def _snapshot(self, conn: Any, keys: Sequence[bytes]) -> Path:
        # A slot of its own: fix ids restart with a new store (see _quarantine.new_slot).
        directory = new_slot(self.ctx.quarantine_dir, self.ctx.fix_id, self.ctx.clock())
        file = directory / "redis-dump.jsonl"
        # The manifest lets purge_quarantine age this snapshot out like quarantined files.
        (directory / "manifest.json").write_text(
            json.dumps({"moved_at": self.ctx.clock().isoformat(), "entries": [], "redis": True})
        )
        with file.open("w") as out:
            for start in range(0, len(keys), self.params.batch):
                chunk = keys[start : start + self.params.batch]
                pipe = conn.pipeline(transaction=False)
                for key in chunk:
                    pipe.dump(key)
                    pipe.pttl(key)
                replies = pipe.execute()
                for index, key in enumerate(chunk):
                    dumped, ttl = replies[2 * index], replies[2 * index + 1]
                    if dumped is None:
                        continue  # expired in between
                    out.write(
                        json.dumps(
                            {
                                "key": base64.b64encode(key).decode(),
                                "ttl": max(int(ttl), 0),
                                "dump": base64.b64encode(dumped).decode(),
                            }
                        )
                        + "\n"
                    )
        return file

    def rollback(self, undo: Mapping[str, Any]) -> str:
        if not undo.get("snapshot"):
            raise ActionError(f"{self.name}: no snapshot was taken (too many keys); cannot restore")
        restored = skipped = 0
        with self.client() as conn, Path(undo["snapshot"]).open() as lines:
            for line in lines:
                row = json.loads(line)
                try:
                    conn.restore(
                        base64.b64decode(row["key"]), row["ttl"], base64.b64decode(row["dump"])
                    )
                    restored += 1
                except redis.ResponseError as exc:
                    if "BUSYKEY" not in str(exc):
                        raise
                    skipped += 1  # written again since; the newer value wins
        return f"restored {restored} key(s), {skipped} kept (written again since)"


class FlushDbParams(_RedisParams):
    pass


class FlushDb(_RedisAction):
    name = "redis.flushdb"
    summary = "FLUSHDB the target's database (DUMPed first for rollback)."
    params_model = FlushDbParams
    rolls_back = True

    def facts(self) -> Facts:
        with self.client() as conn:
            return {"dbsize": int(conn.dbsize()), **self._memory(conn)}

    def plan(self, facts: Facts) -> Plan:
        if facts["dbsize"] == 0:
            return NoOp("the database is already empty")
        steps = []
        if facts["dbsize"] <= self.params.snapshot_max_keys:
            steps.append(Step("snapshot", f"DUMP {facts['dbsize']} key(s) for rollback"))
        steps.append(Step("flushdb", f"FLUSHDB ({facts['dbsize']} key(s))"))
        return steps

    def apply(self, steps: Sequence[Step]) -> Applied:
        with self.client() as conn:
            snapshot = None
            if any(s.op == "snapshot" for s in steps):
                keys = list(conn.scan_iter(count=self.params.batch))
                snapshot = str(self._snapshot(conn, keys))
            conn.flushdb()
        return Applied("FLUSHDB done", {"snapshot": snapshot})

    def verify(self, before: Facts, after: Facts) -> Check:
        if after["dbsize"] != 0:
            return Check(False, f"{after['dbsize']} key(s) still there")
        return _memory_dropped(before, after)


def _memory_dropped(before: Facts, after: Facts) -> Check:
    """The common post-check of the Redis actions: used_memory went down."""
    if after["used_memory"] >= before["used_memory"]:
        return Check(False, "used_memory did not drop")
    return Check(True, f"used_memory {before['used_memory']:.0f} -> {after['used_memory']:.0f}")


class DeleteKeysParams(_RedisParams):
    pattern: str = Field(
        description="SCAN MATCH pattern; must be one of the target's key_patterns."
    )
    max_keys: int = Field(1_000_000, ge=1, description="Refuse to delete more keys than this.")


class DeleteKeys(_RedisAction):
    name = "redis.delete_keys"
    summary = "Delete keys matching an allowlisted pattern, SCAN + DEL in batches."
    params_model = DeleteKeysParams
    rolls_back = True

    def authorize(self) -> None:
        if self.params.pattern not in self.target.key_patterns:
            raise RefusedError(
                "allowlist",
                f"pattern {self.params.pattern!r} is not in key_patterns of {self.target.name!r}",
            )

    def _count(self, conn: Any) -> int:
        count = 0
        for _key in conn.scan_iter(match=self.params.pattern, count=self.params.batch):
            count += 1
            if count > self.params.max_keys:
                break
        return count

    def facts(self) -> Facts:
        with self.client() as conn:
            return {
                "matching": self._count(conn),
                "dbsize": int(conn.dbsize()),
                **self._memory(conn),
            }

    def plan(self, facts: Facts) -> Plan:
        n = facts["matching"]
        if n == 0:
            return NoOp(f"no key matches {self.params.pattern!r}")
        if n > self.params.max_keys:
            return NoOp(f"more than max_keys={self.params.max_keys} keys match; refusing to delete")
        steps = []
        if n <= self.params.snapshot_max_keys:
            steps.append(Step("snapshot", f"DUMP {n} key(s) for rollback"))
        steps.append(
            Step(
                "delete",
                f"SCAN MATCH {self.params.pattern} and DEL {n} key(s)",
                {"batch": self.params.batch},
            )
        )
        return steps

    def apply(self, steps: Sequence[Step]) -> Applied:
        deleted = 0
        with self.client() as conn:
            keys = list(conn.scan_iter(match=self.params.pattern, count=self.params.batch))
            snapshot = None
            if any(s.op == "snapshot" for s in steps):
                snapshot = str(self._snapshot(conn, keys))
            for start in range(0, len(keys), self.params.batch):
                deleted += int(conn.delete(*keys[start : start + self.params.batch]))
        return Applied(f"deleted {deleted} key(s)", {"snapshot": snapshot})

    def verify(self, before: Facts, after: Facts) -> Check:
        counts = f"matching keys {before['matching']} -> {after['matching']}"
        if self.ctx.condition:
            # The condition that triggered the fix (memory back under its threshold)
            # decides: a live writer may have added more keys of the pattern since (a
            # warm-up job topping the cache up as soon as there is room).
            return Check(True, counts)
        # Without one: a live application keeps writing keys of the pattern (new
        # sessions); what this action promises is that it removed what was there.
        if after["matching"] >= before["matching"]:
            return Check(False, f"{after['matching']} matching key(s), {before['matching']} before")
        return _memory_dropped(before, after)


class MemoryPurgeParams(Params):
    min_fragmentation: float = Field(
        1.0, ge=0, description="Do nothing below this mem_fragmentation_ratio."
    )


class MemoryPurge(_RedisAction):
    name = "redis.memory_purge"
    summary = "MEMORY PURGE: return freed allocator pages to the OS."
    params_model = MemoryPurgeParams

    def facts(self) -> Facts:
        with self.client() as conn:
            return self._memory(conn)

    def plan(self, facts: Facts) -> Plan:
        ratio = facts.get("mem_fragmentation_ratio", 0.0)
        if ratio < self.params.min_fragmentation:
            return NoOp(f"fragmentation {ratio:.2f} below {self.params.min_fragmentation:.2f}")
        return [Step("memory_purge", "MEMORY PURGE")]

    def apply(self, steps: Sequence[Step]) -> Applied:
        with self.client() as conn:
            reply = conn.execute_command("MEMORY", "PURGE")
        return Applied(f"MEMORY PURGE: {reply!r}")

    def verify(self, before: Facts, after: Facts) -> Check:
        # RSS moves by a few pages under any client traffic; 1 % is noise, not a regression.
        if after["used_memory_rss"] <= before["used_memory_rss"] * 1.01:
            return Check(
                True, f"rss {before['used_memory_rss']:.0f} -> {after['used_memory_rss']:.0f}"
            )
        return Check(False, "used_memory_rss grew after MEMORY PURGE")
