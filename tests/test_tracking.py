"""MLflow tracking in a local store: runs, versions, the champion gate, no network."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from autofix.errors import AutofixError
from autofix.models.prophet import ProphetForecaster
from autofix.tracking import PROMOTION_REASON_TAG, PROMOTION_TAG, Tracker

# A valid 1x1 PNG, enough to stand in for a plot.
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def _refuse_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"network access attempted: {args!r}")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracker]:
    """One store for the module (creating the SQLite schema takes seconds).

    Every test gets its own registered model name. Any attempt to resolve a host name
    or open an internet socket fails the test that makes it.
    """
    real_connect = socket.socket.connect

    def local_only(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            _refuse_network(address)
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", local_only)
        patch.setattr(socket, "getaddrinfo", _refuse_network)
        yield Tracker(tmp_path_factory.mktemp("models"))


class _Estimator:
    """Stands in for a fitted model: the registry only needs something picklable."""

    def __init__(self, weight: float) -> None:
        self.weight = weight


def _train(tracker: Tracker, name: str, ffr: float, recall: float) -> int:
    run = tracker.log_training_run(
        model_name=name,
        estimator=_Estimator(recall),
        params={"lookback": "6h"},
        metrics={"false_fix_rate": ffr, "recall_24h": recall},
        plots=None,
        tags=None,
    )
    return run.version


def test_store_is_local_sqlite_under_models_dir(
    tracker: Tracker, capfd: pytest.CaptureFixture[str]
) -> None:
    tracker.log_metrics_run("kpi", {"fix_success_ratio": 0.97})
    assert capfd.readouterr() == ("", "")  # creating the store logs nothing
    db = tracker.models_dir / "mlflow.db"
    assert tracker.tracking_uri == f"sqlite:///{db.resolve()}"
    assert db.is_file()
    assert tracker.artifact_root == (tracker.models_dir / "artifacts").resolve()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_promotion_gate(tracker: Tracker, capfd: pytest.CaptureFixture[str]) -> None:
    name = "gate"
    assert tracker.champion(name) is None

    first = tracker.promote_if_better(name, _train(tracker, name, ffr=0.005, recall=0.80))
    assert first.promoted
    assert first.previous_champion is None
    assert "first version" in first.reason

    worse_ffr = tracker.promote_if_better(name, _train(tracker, name, ffr=0.02, recall=0.95))
    assert not worse_ffr.promoted
    assert "false_fix_rate" in worse_ffr.reason

    worse_recall = tracker.promote_if_better(name, _train(tracker, name, ffr=0.001, recall=0.7))
    assert not worse_recall.promoted
    assert worse_recall.reason == "recall_24h 0.7 is below champion v1's 0.8"

    equal = tracker.promote_if_better(name, _train(tracker, name, ffr=0.001, recall=0.80))
    assert equal.promoted
    assert equal.previous_champion == 1

    champion = tracker.champion(name)
    assert champion is not None
    assert champion.version == equal.version == 4
    assert champion.metrics["false_fix_rate"] == 0.001
    assert champion.aliases == ("champion",)

    again = tracker.promote_if_better(name, 4)
    assert not again.promoted
    assert "already the champion" in again.reason

    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""


def test_the_false_fix_gate_is_strict(tracker: Tracker) -> None:
    name = "strict"
    at_kpi = tracker.promote_if_better(name, _train(tracker, name, ffr=0.01, recall=1.0))
    assert not at_kpi.promoted
    assert tracker.champion(name) is None
    nan = tracker.promote_if_better(name, _train(tracker, name, ffr=float("nan"), recall=1.0))
    assert not nan.promoted
    assert tracker.champion(name) is None


def test_decisions_are_tagged_on_versions(tracker: Tracker) -> None:
    name = "tagged"
    tracker.promote_if_better(name, _train(tracker, name, ffr=0.5, recall=0.9))
    rows = {row["version"]: row for row in tracker.list_models() if row["name"] == name}
    assert rows[1]["alias"] is None
    tags = _version_tags(tracker, name, 1)
    assert tags[PROMOTION_TAG] == "rejected"
    assert tags[PROMOTION_REASON_TAG] == "false_fix_rate 0.5 is not below 0.01"


def _version_tags(tracker: Tracker, name: str, version: int) -> dict[str, str]:
    # No public reader for tags yet; the client is the store's own.
    tags: dict[str, str] = tracker._client().get_model_version(name, str(version)).tags
    return tags


def test_training_run_logs_plots_and_round_trips_a_prophet_model(
    tracker: Tracker, tmp_path: Path
) -> None:
    ts = pd.date_range("2024-01-01", periods=96, freq="h")
    frame = pd.DataFrame({"series_id": "disk", "ts": ts, "value": 0.5 + 0.004 * pd.RangeIndex(96)})
    model = ProphetForecaster(uncertainty_samples=50).fit(frame)
    plot = tmp_path / "forecast.png"
    plot.write_bytes(_PNG)

    run = tracker.log_training_run(
        model_name="prophet",
        estimator=model,
        params=model.get_params(),
        metrics={"false_fix_rate": 0.0, "recall_24h": 1.0},
        plots={"forecast_vs_actual": plot},
        tags={"scenario": "unit"},
    )
    assert tracker.promote_if_better("prophet", run.version).promoted

    loaded, version = tracker.load_champion("prophet")
    assert version == run.version
    assert isinstance(loaded, ProphetForecaster)
    assert loaded.get_params()["uncertainty_samples"] == 50
    pd.testing.assert_frame_equal(loaded.predict(), model.predict())
    stored = list(tracker.artifact_root.rglob("plots/forecast_vs_actual.png"))
    assert len(stored) == 1
    assert stored[0].read_bytes() == _PNG


def test_model_pins_the_installed_versions_and_leaves_mlflow_s_module_map_alone(
    tracker: Tracker,
) -> None:
    from importlib.metadata import version

    from mlflow.utils import requirements_utils

    before = requirements_utils._MODULES_TO_PACKAGES
    run_id = tracker.log_training_run(
        model_name="pinned",
        estimator=_Estimator(1.0),
        params={},
        metrics={"false_fix_rate": 0.0},
    ).run_id
    # Filled for the save only: a later requirement inference still maps every package.
    assert requirements_utils._MODULES_TO_PACKAGES is before
    (requirements,) = tracker.artifact_root.rglob(f"{run_id}/artifacts/model/requirements.txt")
    pins = requirements.read_text().split()
    assert pins == [
        f"mlflow=={version('mlflow')}",
        *(f"{p}=={version(p)}" for p in ("scikit-learn", "pandas", "numpy", "cloudpickle")),
    ]


def test_load_champion_without_one_says_what_to_do(tracker: Tracker) -> None:
    with pytest.raises(AutofixError, match=r"no champion for nothing yet: run `autofix train`"):
        tracker.load_champion("nothing")


def test_missing_plot_is_a_clear_error(tracker: Tracker, tmp_path: Path) -> None:
    with pytest.raises(AutofixError, match="no such file"):
        tracker.log_training_run(
            model_name="plots",
            estimator=_Estimator(1.0),
            params={},
            metrics={"false_fix_rate": 0.0},
            plots={"missing": tmp_path / "missing.png"},
            tags=None,
        )


def test_list_models(tracker: Tracker) -> None:
    name = "listed"
    tracker.promote_if_better(name, _train(tracker, name, ffr=0.001, recall=0.6))
    _train(tracker, name, ffr=0.002, recall=0.7)
    rows = [row for row in tracker.list_models() if row["name"] == name]
    assert [row["version"] for row in rows] == [2, 1]
    assert [row["alias"] for row in rows] == [None, "champion"]
    assert rows[0]["false_fix_rate"] == 0.002
    assert rows[0]["recall"] == 0.7
    created = rows[0]["created"]
    assert isinstance(created, datetime)
    assert created.tzinfo is not None
    assert set(rows[0]) == {
        "name",
        "version",
        "alias",
        "created",
        "false_fix_rate",
        "recall",
        "run_id",
    }


def test_metrics_run_goes_to_its_own_experiment(tracker: Tracker) -> None:
    run_id = tracker.log_metrics_run("kpi", {"false_fix_rate": 0.0}, tags={"window": "7d"})
    run = tracker._client().get_run(run_id)
    assert run.data.metrics == {"false_fix_rate": 0.0}
    assert run.data.tags["window"] == "7d"
    experiment = tracker._client().get_experiment(run.info.experiment_id)
    assert experiment.name == "autofix-kpi"


def test_importing_mlflow_leaves_the_collector_on_and_the_modules_frozen() -> None:
    # The collector is paused for mlflow's import (``_mlflow`` is cached: a fresh process).
    script = (
        "import gc\n"
        "from autofix.tracking import _mlflow\n"
        "before = gc.get_freeze_count()\n"
        "_mlflow()\n"
        "print(gc.isenabled(), gc.get_freeze_count() > before + 100_000)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["True", "True"]


def test_telemetry_stays_off_outside_tests(tracker: Tracker) -> None:
    # mlflow turns telemetry off by itself under pytest or CI; check a plain process.
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from autofix.tracking import Tracker
        Tracker(Path({str(tracker.models_dir)!r})).list_models()
        from mlflow.telemetry import get_telemetry_client
        sys.exit(0 if get_telemetry_client() is None else 1)
        """
    )
    quiet_env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTEST_CURRENT_TEST", "CI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"}
    }
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        env=quiet_env,
        timeout=120,
        check=False,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_champion_loads_after_the_models_directory_moved(tmp_path: Path) -> None:
    """Train, move models/ elsewhere (another checkout, a restored backup), load the champion."""
    from autofix.models.envelope import EnvelopeTrendForecaster

    first = Tracker(tmp_path / "old" / "models")
    estimator = EnvelopeTrendForecaster(min_blocks=4)
    run = first.log_training_run(
        model_name="moved",
        estimator=estimator,
        params=estimator.get_params(),
        metrics={"false_fix_rate": 0.0, "recall_24h": 1.0},
    )
    assert first.promote_if_better("moved", run.version).promoted
    shutil.move(tmp_path / "old" / "models", tmp_path / "new-home")
    assert not (tmp_path / "old" / "models").exists()
    loaded, version = Tracker(tmp_path / "new-home").load_champion("moved")
    assert version == run.version
    assert isinstance(loaded, EnvelopeTrendForecaster)
    assert loaded.get_params()["min_blocks"] == 4


def test_two_processes_opening_a_new_models_dir_at_once_both_get_the_store(
    tmp_path: Path,
) -> None:
    """`train` and `remediate` in two model workers of a fresh service create the
    SQLite schema at the same moment: both must come up with one working store."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from autofix.tracking import Tracker
        print(Tracker(Path(sys.argv[1])).champion("exhaustion-forecaster"))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "models")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "None"
