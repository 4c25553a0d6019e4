"""Model work in worker processes: same results as in-process, never on the caller's pid."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from autofix.collect.importer import import_files
from autofix.config import load_settings
from autofix.errors import AutofixError
from autofix.jobs import Service
from autofix.models.registry import make_forecaster
from autofix.pipeline import Pipeline
from autofix.store import MetricStore
from autofix.workers import InlineModelWork, ModelWorkers

ROOT = Path(__file__).parents[1]
SAMPLES_END = datetime(2024, 3, 18)  # just after the last sample of data/samples


class PidRecorder:
    """A forecaster that notes which process fitted it (in a file: it runs elsewhere)."""

    def __init__(self, inner: Any, note: Path) -> None:
        self.inner = inner
        self.note = note

    def fit(self, frame: pd.DataFrame) -> PidRecorder:
        self.note.write_text(str(os.getpid()))
        self.inner.fit(frame)
        return self

    def predict(self, threshold: float) -> pd.DataFrame:
        out: pd.DataFrame = self.inner.predict(threshold)
        return out


@pytest.fixture(scope="module")
def workers() -> Iterator[ModelWorkers]:
    pool = ModelWorkers(1, log_level="WARNING", log_format="json")
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def samples() -> pd.DataFrame:
    store = MetricStore(":memory:")
    import_files(store, ROOT / "data" / "samples")
    return store.query(
        """SELECT series_id, ts, value FROM samples JOIN series USING (series_id)
           WHERE metric = 'pg_query_latency_seconds' ORDER BY series_id, ts"""
    )


def _service(tmp_path: Path, store: MetricStore, models: Any) -> Service:
    settings = load_settings(environ={"AUTOFIX_QUARANTINE_DIR": str(tmp_path / "q")})
    # A rule over the fleet: its evaluation runs where the model work runs.
    pipeline = Pipeline.model_validate(
        {"rules": [{"name": "disk-4d", "mode": "shadow",
                    "when": {"type": "exhaustion", "metric": "node_filesystem_avail_bytes",
                             "within": "4d", "probability": 0.3}}]}
    )  # fmt: skip
    service = Service(settings, pipeline, store, clock=lambda: SAMPLES_END, models=models)
    service._model = (  # what the worker gets: this test's estimator, not MLflow's
        PidRecorder(make_forecaster("default"), tmp_path / "fitted-by"),
        "default",
        "7",
    )
    return service


def test_a_remediate_run_fits_and_decides_in_the_worker_with_the_same_results(
    tmp_path: Path, workers: ModelWorkers
) -> None:
    made: dict[str, pd.DataFrame] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for name, models in (("inline", InlineModelWork()), ("workers", workers)):
        with MetricStore(tmp_path / f"{name}.duckdb") as store:
            import_files(store, ROOT / "data" / "samples" / "disk_fill_linear.parquet")
            service = _service(tmp_path, store, models)
            before = workers.calls
            summary = summaries[name] = service.remediate()
            assert summary["predictions"] >= 1
            assert summary["decisions"] >= 1
            fitted_by = int((tmp_path / "fitted-by").read_text())
            if name == "workers":
                assert fitted_by != os.getpid()
                assert fitted_by == workers.pid()
                assert workers.calls - before >= 2  # the forecast and the rules
            else:
                assert fitted_by == os.getpid()
                assert workers.calls == before
            made[name] = store.latest_predictions().drop(columns=["made_at"])
    pd.testing.assert_frame_equal(made["inline"], made["workers"])
    assert summaries["inline"] == summaries["workers"]


def test_anomaly_scores_are_the_same_from_a_worker(
    workers: ModelWorkers, samples: pd.DataFrame
) -> None:
    assert len(samples) > 100
    here = InlineModelWork().score(samples)
    there = workers.score(samples)
    assert len(there) == len(samples)
    assert (here == there).all()


def test_a_killed_worker_fails_one_call_and_the_next_gets_a_new_one(
    workers: ModelWorkers, samples: pd.DataFrame
) -> None:
    few = samples.head(50)
    victim = workers.pid()
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(AutofixError, match=r"model worker: the process running .* died"):
        workers.score(few)
    assert len(workers.score(few)) == len(few)
    assert workers.pid() != victim


def test_worker_count_is_a_setting() -> None:
    assert load_settings(environ={}).model_workers == 2
    assert load_settings(environ={"AUTOFIX_MODEL_WORKERS": "0"}).model_workers == 0
    with pytest.raises(ValueError, match="at least 1"):
        ModelWorkers(0)


def test_autofix_serve_gives_its_service_the_worker_processes() -> None:
    from autofix.cli.serve import _model_workers

    made = _model_workers(load_settings(environ={"AUTOFIX_MODEL_WORKERS": "3"}))
    assert isinstance(made, ModelWorkers)
    assert made.processes == 3
    made.close()  # never started: nothing to stop
    assert _model_workers(load_settings(environ={"AUTOFIX_MODEL_WORKERS": "0"})) is None
