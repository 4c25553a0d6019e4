"""Model work on a real Dask cluster: a `dask scheduler` and two `dask worker` processes.

The fixture starts them on 127.0.0.1 from this environment's ``dask`` command (workers
import autofix like any user's would) and stops them after the module. ``autofix
predict`` against them must give the predictions of the in-process run, and a worker
killed mid-run must cost nothing but time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from autofix.compute import Compute
from autofix.models.registry import make_forecaster
from autofix.predict import predict_store
from autofix.store import MetricStore
from tests.clirun import run_autofix
from tests.servers import free_port

ROOT = Path(__file__).parents[2]
DASK = Path(sys.executable).with_name("dask")
SERIES = 24
#: Predictions on the cluster equal the in-process ones: the forecaster is per series, so
#: cutting the fleet into partitions changes no arithmetic. ETAs to the second and
#: probabilities to 1e-9 (float64 sums in another order would still pass).
ETA_TOLERANCE = pd.Timedelta(seconds=1)
P_TOLERANCE = 1e-9


@dataclass
class DaskCluster:
    address: str
    workdir: Path
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(self) -> str:
        port = free_port()
        log = (self.workdir / f"worker-{port}.log").open("wb")
        proc = subprocess.Popen(
            [
                str(DASK),
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--worker-port",
                str(port),
                "--nthreads",
                "1",
                "--no-nanny",  # killing the worker's pid is losing it (no restart behind it)
                "--no-dashboard",
                "--local-directory",
                str(self.workdir),
                "--memory-limit",
                "1GB",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # the tests' failing model
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()  # the worker has its own copy
        address = f"tcp://127.0.0.1:{port}"
        self.workers[address] = proc
        return address

    def wait_for_workers(self, count: int, timeout: float = 60) -> None:
        from distributed import Client

        with Client(self.address, timeout="20s") as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(count, timeout=timeout)  # type: ignore[no-untyped-call]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    if not DASK.exists():
        pytest.skip(f"{DASK}: no dask command (pip install distributed)")
    workdir = tmp_path_factory.mktemp("dask")
    port = free_port()
    log = (workdir / "scheduler.log").open("wb")
    scheduler = subprocess.Popen(
        [
            str(DASK),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
            "--no-show",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # it unpickles the tests' model too
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    found = DaskCluster(f"tcp://127.0.0.1:{port}", workdir, scheduler)
    try:
        found.start_worker()
        found.start_worker()
        found.wait_for_workers(2)
        yield found
    finally:
        for proc in found.workers.values():
            _stop(proc)
        _stop(scheduler)


def _fleet(path: Path, now: datetime) -> None:
    """SERIES disks filling at different rates: 3 days at 5 min up to ``now``."""
    ts = pd.date_range(end=now - timedelta(minutes=1), periods=3 * 288, freq="5min")
    rng = np.random.default_rng(16)
    frames = []
    for i in range(SERIES):
        # Fill ratio per hour: none full yet (an ETA past reads "now", which differs
        # between two runs), ETAs from a day to weeks.
        rate = 0.001 + 0.008 * i / SERIES
        used = 0.30 + rate * np.arange(len(ts)) / 12 + rng.normal(0, 0.003, len(ts))
        free = np.clip(1.0 - used, 0.01, None) * 100 * 2**30
        frames.append(
            pd.DataFrame(
                {
                    "ts": ts.tz_localize(None),
                    "host": f"node-{i:02d}",
                    "metric": "node_filesystem_avail_bytes",
                    "labels": json.dumps({"mountpoint": "/data"}),
                    "value": free,
                    "capacity": 100.0 * 2**30,
                }
            )
        )
    with MetricStore(path) as store:
        store.write(pd.concat(frames, ignore_index=True))


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
        "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
        "AUTOFIX_HOSTNAME": "test-host",
        **extra,
    }


def _by_series(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(records).set_index("host")
    return frame.sort_index()


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.index) == list(b.index)
    for column in ("eta", "eta_lo", "eta_hi"):
        left, right = pd.to_datetime(a[column]), pd.to_datetime(b[column])
        assert (left.isna() == right.isna()).all(), column
        gap = (left - right).abs().dropna()
        assert (gap <= ETA_TOLERANCE).all(), (column, gap.max())
    for column in ("p_1h", "p_4h", "p_24h", "p_4d"):
        np.testing.assert_allclose(a[column], b[column], rtol=0, atol=P_TOLERANCE)


def test_predict_on_the_cluster_equals_in_process(cluster: DaskCluster, tmp_path: Path) -> None:
    _fleet(tmp_path / "autofix.duckdb", datetime.now(UTC).replace(tzinfo=None))
    predict = ["predict", "--model", "default", "--json"]
    local = json.loads(run_autofix(predict, _env(tmp_path), timeout=300).stdout)
    assert local["compute"]["backend"] == "inline"
    assert local["written"] == SERIES
    on_dask = json.loads(
        run_autofix(
            predict,
            _env(
                tmp_path,
                AUTOFIX_DASK_SCHEDULER=cluster.address,
                AUTOFIX_COMPUTE_PARTITION_SERIES="5",  # 5 partitions over two workers
                AUTOFIX_COMPUTE_DIR=str(tmp_path / "compute"),
            ),
            timeout=300,
        ).stdout
    )
    assert on_dask["compute"] | {"seconds": 0} == {
        "backend": "dask",
        "partitions": 5,
        "fallbacks": 0,
        "failed": 0,
        "seconds": 0,
    }
    assert on_dask["model_version"] == local["model_version"]
    assert on_dask["written"] == SERIES
    # Some of these disks fill within days: the comparison is not over empty forecasts.
    ours = _by_series(on_dask["predictions"])
    assert ours["p_4d"].max() > 0.5
    assert ours["eta"].notna().sum() >= SERIES // 2
    _assert_same(ours, _by_series(local["predictions"]))
    # The work ran on the workers (the scheduler knows the task), and the export that
    # they read is gone once the writer stored the results.
    from distributed import Client

    with Client(cluster.address, timeout="20s") as client:  # type: ignore[no-untyped-call]
        prefixes = client.run_on_scheduler(  # type: ignore[no-untyped-call]
            lambda dask_scheduler: sorted(dask_scheduler.task_prefixes)
        )
    assert "forecast_partition" in prefixes
    assert not any((tmp_path / "compute").iterdir())


class FailsOnSeries4:
    """The default forecaster, slowed down (the kill must find a worker busy), that
    raises on the partition holding series 4."""

    def __init__(self) -> None:
        self.inner = make_forecaster("default")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {}

    def set_params(self, **params: Any) -> FailsOnSeries4:
        return self

    def fit(self, frame: pd.DataFrame) -> FailsOnSeries4:
        time.sleep(0.2)
        if 4 in set(frame["series_id"]):
            raise ValueError("this partition breaks the model")
        self.inner.fit(frame)
        return self

    def predict(self, threshold: float = 1.0) -> pd.DataFrame:
        result: pd.DataFrame = self.inner.predict(threshold)
        return result


def test_a_killed_worker_and_a_bad_partition_do_not_lose_the_run(
    cluster: DaskCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    _fleet(tmp_path / "autofix.duckdb", now)
    store = MetricStore(tmp_path / "autofix.duckdb")
    kwargs: dict[str, Any] = {"model_name": "default", "model_version": "1", "now": now}
    expected = predict_store(store, make_forecaster("default"), write=False, **kwargs)
    assert expected.series == SERIES

    killed: list[tuple[str, int]] = []
    from distributed import Client

    watcher = Client(cluster.address, timeout="20s")  # type: ignore[no-untyped-call]

    def kill_a_busy_worker(done: int, total: int) -> None:
        # After the first result: SIGKILL a worker that is running a partition right now.
        if done != 1 or killed:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            busy = {w: k for w, k in watcher.processing().items() if k}  # type: ignore[no-untyped-call]
            if busy:
                address = sorted(busy)[0]
                cluster.workers[address].kill()
                cluster.workers[address].wait()
                killed.append((address, len(busy[address])))
                return
            time.sleep(0.01)

    compute = Compute(
        scheduler=cluster.address,
        directory=tmp_path / "compute",
        partition_series=2,  # 12 partitions: the kill lands mid-run
    )
    try:
        with compute, caplog.at_level("WARNING", logger="autofix.compute"):
            run = predict_store(
                store,
                FailsOnSeries4(),
                compute=compute,
                progress=kill_a_busy_worker,
                write=False,
                **kwargs,
            )
    finally:
        watcher.close()  # (the last test of the module: the cluster stays one worker short)
    assert killed, "no worker was busy to kill"
    # Every partition came back: the killed worker's task ran again on the other one.
    assert run.compute["partitions"] == SERIES // 2
    assert run.compute["failed"] == 0
    assert run.series == SERIES
    # The one bad partition fell back to predict_linear, logged with what broke.
    assert run.compute["fallbacks"] == 1
    fallback = run.forecasts[run.forecasts["model_version"] == "fallback"]
    assert sorted(fallback["series_id"]) == [4, 16]  # partition 4 of 12 (series_id % 12)
    assert set(fallback["model"]) == {"predict_linear"}
    assert any("this partition breaks the model" in r.getMessage() for r in caplog.records)
    # Every other series: the in-process predictions.
    ours = run.forecasts[run.forecasts["model_version"] != "fallback"].set_index("series_id")
    theirs = expected.forecasts.set_index("series_id").loc[ours.index]
    _assert_same(ours, theirs)
    store.close()
