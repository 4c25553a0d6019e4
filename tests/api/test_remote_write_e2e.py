"""A real Prometheus scrapes a real node exporter and remote-writes into ``autofix serve``.

Both sides are restarted once: autofix (SIGTERM, a few seconds down, started again on
the same store) and Prometheus (SIGTERM, started again on the same data directory).
Every raw sample Prometheus holds for the node job's ``up`` series over the whole run
must be in autofix's store afterwards: Prometheus keeps what autofix could not take in
its WAL and resends it, and flushes its queue when it stops. The series arrive with
their labels (``mountpoint`` on filesystem series, the host from ``instance``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autofix.store import MetricStore
from tests.api.test_serve import _env, _wait_ready
from tests.api.world import OPERATOR
from tests.clirun import AUTOFIX
from tests.promstack import PROMETHEUS, NodeExporter, _binary, node_exporter, stack_or_skip
from tests.servers import _terminate, free_port


@pytest.fixture(scope="module")
def node() -> Iterator[NodeExporter]:
    yield from stack_or_skip(node_exporter)


@contextlib.contextmanager
def _autofix(tmp_path: Path, port: int) -> Iterator[None]:
    proc = subprocess.Popen(
        [AUTOFIX, "serve", "--jobs", "collect"],
        env=_env(tmp_path, port),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", proc, timeout=120)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err


@contextlib.contextmanager
def _prometheus(base: Path, port: int, node: str, write_url: str) -> Iterator[str]:
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "node", "static_configs": [{"targets": [node]}]},
            {  # itself, for its remote-write queue's metrics (sent, lag) and nothing more
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                "metric_relabel_configs": [
                    {
                        "source_labels": ["__name__"],
                        "regex": "prometheus_remote_storage_(samples_total|highest_timestamp"
                        "_in_seconds|queue_highest_sent_timestamp_seconds)",
                        "action": "keep",
                    }
                ],
            },
        ],
        "remote_write": [
            {
                "url": write_url,
                "authorization": {"credentials": OPERATOR},
                "queue_config": {
                    "batch_send_deadline": "1s",
                    "min_backoff": "100ms",
                    "max_backoff": "1s",
                },
            }
        ],
    }
    (base / "prometheus.yml").write_text(json.dumps(config))
    url = f"http://127.0.0.1:{port}"
    with open(base / "prometheus.log", "ab") as log:
        proc = subprocess.Popen(
            [
                _binary(PROMETHEUS),
                f"--config.file={base / 'prometheus.yml'}",
                f"--storage.tsdb.path={base / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _until(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, 60, proc)
        yield url
    finally:
        _terminate(proc, timeout=60)  # SIGTERM: Prometheus flushes its remote-write queue


def _until(ready: object, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    assert callable(ready)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, "the server exited"
        with contextlib.suppress(httpx.HTTPError):
            if ready():
                return
        time.sleep(0.3)
    raise AssertionError(f"not ready within {timeout}s")


def _value(prom: str, query: str) -> float:
    result = httpx.get(f"{prom}/api/v1/query", params={"query": query}, timeout=5).json()
    found = result["data"]["result"]
    return float(found[0]["value"][1]) if found else 0.0


def _sent(prom: str) -> float:
    return _value(prom, "sum(prometheus_remote_storage_samples_total)")


def _caught_up(prom: str) -> bool:
    """The queue has sent everything up to the newest sample it read (within 2 s)."""
    lag = (
        "max(prometheus_remote_storage_highest_timestamp_in_seconds) - "
        "max(prometheus_remote_storage_queue_highest_sent_timestamp_seconds)"
    )
    result = httpx.get(f"{prom}/api/v1/query", params={"query": lag}, timeout=5).json()
    found = result["data"]["result"]
    return bool(found) and float(found[0]["value"][1]) < 2


def test_prometheus_remote_write_survives_restarts(node: NodeExporter, tmp_path: Path) -> None:
    api_port, prom_port = free_port(), free_port()
    write_url = f"http://127.0.0.1:{api_port}/api/v1/write"
    base = tmp_path / "prom"
    base.mkdir()
    started = time.time()
    with contextlib.ExitStack() as second:  # the second autofix outlives the first Prometheus
        with _prometheus(base, prom_port, node.address, write_url) as prom:
            with _autofix(tmp_path, api_port):
                _until(lambda: _sent(prom) > 0, 60)
            down = time.time()
            time.sleep(3)  # autofix is down: the sends fail, Prometheus keeps the samples
            second.enter_context(_autofix(tmp_path, api_port))
            up = time.time()
            _until(lambda: _caught_up(prom), 90)
        prom_stopped = time.time()  # stopped with SIGTERM: it flushed its queue to autofix
        with _prometheus(base, prom_port, node.address, write_url) as prom:
            _until(lambda: _sent(prom) > 0 and _caught_up(prom), 90)
            ended = time.time()
            raw = httpx.get(
                f"{prom}/api/v1/query",
                params={
                    "query": f'up{{job="node"}}[{int(ended - started) + 5}s]',
                    "time": f"{ended:.3f}",
                },
                timeout=10,
            ).json()["data"]["result"]
    expected = {round(float(ts) * 1000) for ts, _ in raw[0]["values"]}
    assert len(expected) >= 8
    # Prometheus scraped while autofix was down (its samples had to be resent).
    assert len([ms for ms in expected if down * 1000 < ms < up * 1000]) >= 2
    with MetricStore(tmp_path / "autofix.duckdb", read_only=True) as store:
        got = store.query(
            "SELECT epoch_ms(x.ts) AS ms FROM samples x JOIN series s USING (series_id) "
            "WHERE s.metric = 'up' AND s.labels = '{\"job\":\"node\"}' AND s.host = '127.0.0.1'"
        )
        disk = store.query(
            "SELECT DISTINCT labels FROM series WHERE metric = 'node_filesystem_avail_bytes' "
            "AND host = '127.0.0.1'"
        )
    missing = sorted(expected - set(got["ms"]))
    # The documented window: what Prometheus scraped in the last seconds before it
    # stopped and had not sent yet may be lost (it never resends samples older than its
    # own start). Everything else — including the whole time autofix was down — is there.
    window = (prom_stopped - 10) * 1000
    lost = [ms for ms in missing if not window <= ms <= prom_stopped * 1000]
    print(f"{len(expected)} samples, {len(missing)} missing, all within the window: {not lost}")
    assert not lost, f"{len(lost)} of {len(expected)} samples lost: {lost[:5]}"
    assert any('"mountpoint":' in labels for labels in disk["labels"])
