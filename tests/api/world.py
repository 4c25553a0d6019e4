"""A small real world for the API tests: a DuckDB store in tmp_path with series,
forecasts, anomaly scores, job runs and fixes made by the real executor on log-directory
targets, and the app served by uvicorn on loopback (``autofix.api.server.ApiServer``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from autofix.api.app import create_app
from autofix.api.server import ApiServer
from autofix.config import load_settings
from autofix.jobs import Service
from autofix.pipeline import Pipeline
from autofix.store import MetricStore

OPERATOR = "ops-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
TABLES = (
    "decisions",
    "fixes",
    "fix_events",
    "escalations",
    "approvals",
    "fix_labels",
    "pause_events",
    "silences",
)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    service: Service
    root: Path
    now: datetime
    fixes: dict[str, int] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)
    app: Any = None  # the app ``serving`` serves last

    @property
    def store(self) -> MetricStore:
        return self.service.store

    def counts(self) -> dict[str, int]:
        """Rows in every table an API call could write to."""
        return {t: int(self.store._run(f"SELECT count(*) FROM {t}")[0][0]) for t in TABLES}

    def stale(self, target: str, name: str = "old.tmp", size: int = 4096) -> Path:
        """A file clean_temp will quarantine (three days old)."""
        file = self.root / target / name
        file.write_bytes(b"x" * size)
        stamp = (self.now - timedelta(days=3)).replace(tzinfo=UTC).timestamp()
        os.utime(file, (stamp, stamp))
        return file


def pipeline(root: Path) -> Pipeline:
    targets = [
        {"name": name, "kind": "logdir", "path": str(root / name)}
        for name in ("logs-a", "logs-b", "logs-c")
    ]
    rules = [
        {
            "name": "disk-filling",
            "when": {"type": "alert", "alertname": "DiskFilling"},
            "actions": [{"action": "files.clean_temp", "params": {"older_than": "1d"}}],
            "mode": "auto",
            "gates": {"cooldown": "0s", "max_runs": 100, "flap_count": 100},
        },
        {
            "name": "spool-full",
            "when": {"type": "alert", "alertname": "SpoolFull", "match": {"severity": "critical"}},
            "actions": [{"action": "files.clean_temp", "target": "logs-b"}],
            "mode": "approve",
        },
        {"name": "needs-human", "when": {"type": "alert", "alertname": "NeedsHuman"}},
    ]
    return Pipeline.model_validate({"targets": targets, "rules": rules})


def settings(tmp_path: Path, **extra: str) -> Any:
    return load_settings(
        environ={
            "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "quarantine"),
            "AUTOFIX_FIX_VERIFY_WAIT": "0s",
            "AUTOFIX_FIX_MODE": "approve",
            "AUTOFIX_FIX_BLAST_RADIUS": "1",
            "AUTOFIX_API_TOKENS": f"ops:operator:{OPERATOR},eve:viewer:{VIEWER}",
            **{f"AUTOFIX_{k.upper()}": v for k, v in extra.items()},
        }
    )


def prediction(
    series_id: int, origin: datetime, eta: datetime | None, p: dict[str, float], version: str = "7"
) -> dict[str, Any]:
    """One row of a forecast frame: ETA ± (2 h, 3 h), probabilities (0 when not given)."""
    return {
        "series_id": series_id,
        "origin": origin,
        "eta": eta if eta is not None else pd.NaT,
        "eta_lo": eta - timedelta(hours=2) if eta is not None else pd.NaT,
        "eta_hi": eta + timedelta(hours=3) if eta is not None else pd.NaT,
        **{f"p_{h}": p.get(h, 0.0) for h in ("1h", "4h", "24h", "4d")},
        "threshold": 1.0,
        "model": "default",
        "model_version": version,
    }


def _history(store: MetricStore, now: datetime) -> dict[str, int]:
    """Six hours of a filling disk, a flat memory series and a latency series."""
    rows = []
    for step in range(73):
        ts = now - timedelta(minutes=5 * (72 - step))
        rows += [
            (ts, "web-1", "node_filesystem_avail_bytes", '{"mountpoint":"/var/log"}',
             40e9 - 0.4e9 * step, "bytes", 100e9),
            (ts, "web-1", "node_memory_available_bytes", "{}", 8e9, "bytes", 16e9),
            (ts, "db-1", "probe_duration_seconds", '{"target":"news-db"}',
             0.01 if step < 70 else 0.4, "seconds", None),
        ]  # fmt: skip
    frame = pd.DataFrame(
        rows, columns=["ts", "host", "metric", "labels", "value", "unit", "capacity"]
    )
    store.write(frame)
    ids = {str(r["metric"]): int(r["series_id"]) for r in store.series().to_dict("records")}
    disk, memory = ids["node_filesystem_avail_bytes"], ids["node_memory_available_bytes"]
    for made_at, p24 in ((now - timedelta(minutes=10), 0.5), (now - timedelta(minutes=1), 0.9)):
        eta = now + timedelta(hours=8)
        rows = [
            prediction(disk, now, eta, {"4h": 0.2, "24h": p24, "4d": 0.99}),
            prediction(memory, now, None, {"4d": 0.01}),
        ]
        store.write_predictions(pd.DataFrame(rows), made_at)
    latency = ids["probe_duration_seconds"]
    with store._write_lock:
        for step, score in ((70, 0.2), (71, 0.95), (72, 0.97)):
            ts = now - timedelta(minutes=5 * (72 - step))
            store._run(
                "INSERT INTO anomaly_scores VALUES (?, ?, ?, ?, ?, 'robust')",
                [now, latency, ts, 0.4, score],
            )
        for job, ok, error in (("collect", True, None), ("remediate", False, "boom")):
            store._run(
                "INSERT INTO job_runs VALUES (?, ?, ?, 12.5, ?, ?, ?)",
                [job, now - timedelta(seconds=30), now, ok, error, "{}"],
            )
    return {"disk": disk, "memory": memory, "latency": latency}


@contextmanager
def make_world(tmp_path: Path, **extra: str) -> Iterator[World]:
    """The world, with one fix pending approval, one succeeded and one refused."""
    root = tmp_path / "targets"
    for name in ("logs-a", "logs-b", "logs-c"):
        (root / name).mkdir(parents=True)
    now = utcnow()
    with MetricStore(tmp_path / "autofix.duckdb") as store:
        service = Service(settings(tmp_path, **extra), pipeline(root), store)
        world = World(service, root, now, series=_history(store, now))
        ex = service.executor
        world.stale("logs-a")
        world.stale("logs-c")
        world.fixes["pending"] = ex.run("files.clean_temp", "logs-a").id
        done = ex.run("files.clean_temp", "logs-c", approved_by="someone")
        assert done.state == "succeeded", done.as_dict()
        world.fixes["succeeded"] = done.id
        world.fixes["refused"] = ex.run("files.clean_temp", "nowhere").id
        yield world


@contextmanager
def serving(world: World, **kwargs: Any) -> Iterator[httpx.Client]:
    """The app over the world's service, under uvicorn on 127.0.0.1; a client for it."""
    app = create_app(world.service.settings, world.store, service=world.service, **kwargs)
    world.app = app
    server = ApiServer(app, "127.0.0.1", 0)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


def alert(name: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    """One alert as Alertmanager sends it."""
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": "test"},
        "startsAt": "2026-03-02T11:59:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph?g0.expr=up",
        "fingerprint": "0123456789abcdef",
    }


def webhook(*alerts: dict[str, Any]) -> dict[str, Any]:
    """An Alertmanager webhook body (version 4) carrying ``alerts``."""
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="DiskFilling"}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "autofix",
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]} if alerts else {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": list(alerts),
    }


def body(response: httpx.Response) -> Any:
    """The JSON body, with the response in the assertion message when it is not JSON."""
    try:
        return response.json()
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{response.status_code}: {response.text[:500]}") from exc
