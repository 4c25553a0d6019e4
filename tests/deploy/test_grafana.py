"""deploy/grafana: the committed dashboard is the generator's output, and every panel's
PromQL returns data from a real Prometheus scraping a real ``autofix serve``."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from tests.api.world import make_world
from tests.clirun import AUTOFIX
from tests.promstack import prometheus, stack_or_skip, wait_for_scrapes
from tests.servers import free_port

GRAFANA = Path(__file__).parents[2] / "deploy" / "grafana"
#: What Grafana substitutes for the dashboard's variables when the test runs the queries.
VARIABLES = {"$instance": ".*", "$horizon": "4h", "$__rate_interval": "1m"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("autofix_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (panel["title"], target) for panel in board["panels"] for target in panel.get("targets", [])
    ]


def test_the_committed_dashboard_is_up_to_date() -> None:
    committed = (GRAFANA / "autofix.json").read_text()
    assert committed == _generator().render(), (
        "deploy/grafana/autofix.json is stale: python deploy/grafana/dashboard.py > "
        "deploy/grafana/autofix.json"
    )
    board = json.loads(committed)
    assert board["uid"] == "autofix-overview"
    titles = [p["title"] for p in board["panels"]]
    for wanted in ("Riskiest series", "Fixes by state", "Gate refusals", "KPIs", "Job durations"):
        assert any(t.startswith(wanted) for t in titles), wanted
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    assert all(t["datasource"]["uid"] == "${datasource}" for _, t in _targets(board))


@contextlib.contextmanager
def _serve(tmp_path: Path) -> Iterator[str]:
    """A real `autofix serve` over a store with predictions, fixes and job runs."""
    with make_world(tmp_path) as world:
        root = world.root
    pipeline = tmp_path / "pipeline.yaml"
    names = ("logs-a", "logs-b", "logs-c")
    targets = [{"name": n, "kind": "logdir", "path": str(root / n)} for n in names]
    pipeline.write_text(json.dumps({"targets": targets}))
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
        "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "quarantine"),
        "AUTOFIX_SNAPSHOT_DIR": str(tmp_path / "snapshot"),
        "AUTOFIX_API_PORT": str(port),
        "AUTOFIX_HEARTBEAT_INTERVAL": "1s",
    }
    proc = subprocess.Popen(
        [AUTOFIX, "serve", "--jobs", "collect"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://{address}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "autofix serve did not start"
            time.sleep(0.2)
        yield address
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.communicate()


def _query(prom: str, expr: str, instant: bool) -> list[dict[str, Any]]:
    if instant:
        response = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    else:
        end = time.time()
        params = {"query": expr, "start": end - 120, "end": end, "step": "5"}
        response = httpx.get(f"{prom}/api/v1/query_range", params=params, timeout=10)
    body = response.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_every_panel_query_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    board = json.loads((GRAFANA / "autofix.json").read_text())
    with _serve(tmp_path) as address:
        for prom in stack_or_skip(
            lambda: prometheus({"autofix": [address]}, wait_for_targets=False)
        ):
            wait_for_scrapes(prom, samples=5, timeout=60)  # rate() and increase() need a few
            empty = []
            for title, target in _targets(board):
                expr = target["expr"]
                for name, value in VARIABLES.items():
                    expr = expr.replace(name, value)
                assert "$" not in expr, expr
                if not _query(prom.url, expr, bool(target.get("instant"))):
                    empty.append(f"{title}: {expr}")
            assert empty == []
            variable = next(v for v in board["templating"]["list"] if v["name"] == "instance")
            instances = _query(prom.url, "autofix_build_info", instant=True)
            assert variable["query"] == "label_values(autofix_build_info, instance)"
            assert [i["metric"]["instance"] for i in instances] == [address]
