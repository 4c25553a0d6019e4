"""Model tracking on MLflow: the only module that imports mlflow.

Everything lives under ``models_dir``: runs and the model registry in a SQLite file
(``sqlite:///<models_dir>/mlflow.db``), artifacts in ``<models_dir>/artifacts``. There is
no server and nothing goes over the network: telemetry is switched off before mlflow is
imported. mlflow is imported lazily (it takes seconds) so ``import autofix`` stays fast.

A training run logs params, backtest metrics (``false_fix_rate`` among them), plots and
the fitted estimator, and registers a new version of the model. ``promote_if_better``
moves the ``champion`` alias only through the gate: false_fix_rate below the KPI and
recall not below the current champion's.

>>> tracker = Tracker(Path("models"))
>>> tracker.tracking_uri.startswith("sqlite:///")
True
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from autofix import __version__
from autofix._gc import collector_paused
from autofix.config import disable_library_telemetry
from autofix.errors import AutofixError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_EXPERIMENT = "autofix-forecast"
KPI_EXPERIMENT = "autofix-kpi"
CHAMPION = "champion"
FALSE_FIX_RATE = "false_fix_rate"

#: Model version tags recording the last promotion decision.
PROMOTION_TAG = "autofix.promotion"
PROMOTION_REASON_TAG = "autofix.promotion_reason"

_MODEL_ARTIFACT = "model"
_MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values
#: The model's pip requirements, pinned to the installed versions: package -> its module.
_REQUIREMENTS = {
    "scikit-learn": "sklearn",
    "pandas": "pandas",
    "numpy": "numpy",
    "cloudpickle": "cloudpickle",
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRun:
    """What ``log_training_run`` created: the run and the registered version."""

    run_id: str
    model_name: str
    version: int


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered model version with the metrics of the run that made it."""

    name: str
    version: int
    run_id: str
    metrics: dict[str, float]
    aliases: tuple[str, ...]
    created: datetime


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict for one version; ``reason`` is one line for humans."""

    model_name: str
    version: int
    promoted: bool
    reason: str
    previous_champion: int | None


@functools.cache
def _mlflow() -> ModuleType:
    """Import mlflow once, with telemetry off and its logging at WARNING."""
    # mlflow sends usage telemetry over HTTP unless told not to; autofix never talks to
    # the network from here. The variable is read when mlflow decides, so set it first.
    disable_library_telemetry()
    with _quiet_warnings(), collector_paused():
        import mlflow
        import mlflow.sklearn

        # The store behind every tracking URI here (sqlite:///): imported on the first
        # client otherwise, as long again as mlflow itself.
        import mlflow.store.model_registry.sqlalchemy_store
        import mlflow.store.tracking.sqlalchemy_store
        from mlflow.telemetry import set_telemetry_client

    # Re-reads the switch, in case something imported mlflow before us.
    set_telemetry_client()  # type: ignore[no-untyped-call]
    # mlflow logs "Creating initial MLflow database tables" and the like at INFO on
    # stderr through its own handler.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def load_mlflow() -> None:
    """Import mlflow now (it takes seconds), for a caller loading its modules up front."""
    _mlflow()


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    # mlflow's SQL store trips SQLAlchemy deprecations (SADeprecationWarning on the
    # ``noload`` strategy) and mlflow itself raises FutureWarnings about its own API
    # changes; neither is actionable here, and tests turn warnings into errors. Only
    # warnings attributed to these packages are dropped.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"(mlflow|sqlalchemy|alembic)(\.|$)")
        yield


def _requirements() -> list[str]:
    pins = []
    for package in _REQUIREMENTS:
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{package}=={version(package)}")
    return pins


@contextlib.contextmanager
def _pins_from_this_environment() -> Iterator[None]:
    """Spare ``save_model`` its scan of every installed distribution (~1 s a training run).

    Given pip requirements, mlflow checks each against the environment, first mapping
    every module of every installed distribution (``packages_distributions()`` reads all
    their RECORD files). Ours are read from the installed versions (``_requirements``), so
    the check cannot fail; mlflow only needs the packages it is asked about. Its private
    map is filled with those for the save and reset afterwards, so a later requirement
    inference in this process still maps everything. Should mlflow drop the map, this
    does nothing and the scan runs as before.
    """
    from mlflow.utils import requirements_utils

    if getattr(requirements_utils, "_MODULES_TO_PACKAGES", False) is not None:
        yield  # already built (nothing to spare) or no longer there
        return
    mlflow_pin = {"mlflow": ["mlflow"]}
    requirements_utils._MODULES_TO_PACKAGES = mlflow_pin | {  # type: ignore[assignment]
        module: [package] for package, module in _REQUIREMENTS.items()
    }
    try:
        yield
    finally:
        requirements_utils._MODULES_TO_PACKAGES = None


class Tracker:
    """Runs, registered versions and the champion alias in a local MLflow store.

    ``models_dir`` usually comes from ``Settings.models_dir``; it is created on first use.
    """

    def __init__(self, models_dir: Path, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.models_dir = Path(models_dir)
        self.experiment = experiment

    @property
    def tracking_uri(self) -> str:
        """SQLite file under ``models_dir``: runs and the model registry."""
        return f"sqlite:///{(self.models_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        """Where run artifacts (models, plots) are stored."""
        return (self.models_dir / "artifacts").resolve()

    # -- plumbing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _store(self) -> Iterator[MlflowClient]:
        """The client, with mlflow's warnings muted and its errors made ours."""
        mlflow = _mlflow()
        with _quiet_warnings():
            try:
                yield self._client()
            except mlflow.exceptions.MlflowException as exc:
                raise AutofixError(f"model store {self.tracking_uri}: {exc.message}") from exc
            except OSError as exc:  # models_dir not writable, disk full
                raise AutofixError(f"model store under {self.models_dir}: {exc}") from exc

    @functools.cached_property
    def _client_instance(self) -> MlflowClient:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        # The client creates the SQLite schema when its tables are missing. Two processes
        # doing that at once (`train` and `remediate` in two model workers on a new
        # models dir) run the migrations twice and one fails half-way: one at a time.
        with open(self.models_dir / ".mlflow-schema.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            client: MlflowClient = _mlflow().MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return client

    def _client(self) -> MlflowClient:
        return self._client_instance

    def _experiment_id(self, client: MlflowClient, name: str) -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = (self.artifact_root / name).as_uri()
        return str(client.create_experiment(name, artifact_location=location))

    def _start_run(
        self, client: MlflowClient, experiment: str, run_name: str, tags: Mapping[str, str]
    ) -> str:
        run = client.create_run(
            self._experiment_id(client, experiment),
            run_name=run_name,
            tags={"autofix.version": __version__, **tags},
        )
        return str(run.info.run_id)

    def _version_info(self, client: MlflowClient, model_version: Any) -> ModelVersionInfo:
        run = client.get_run(model_version.run_id)
        return ModelVersionInfo(
            name=str(model_version.name),
            version=int(model_version.version),
            run_id=str(model_version.run_id),
            metrics={k: float(v) for k, v in run.data.metrics.items()},
            aliases=tuple(model_version.aliases or ()),
            created=datetime.fromtimestamp(model_version.creation_timestamp / 1000, UTC),
        )

    def _is_missing(self, exc: Exception) -> bool:
        code = getattr(exc, "error_code", "")
        return code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}

    # -- public API ----------------------------------------------------------------

    def log_training_run(
        self,
        *,
        model_name: str,
        estimator: object,
        params: Mapping[str, object],
        metrics: Mapping[str, float],
        plots: Mapping[str, Path] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> TrainingRun:
        """Log one training run and register its estimator as a new version.

        ``metrics`` should hold the backtest metrics, ``false_fix_rate`` among them
        (without it the version can never become champion). ``plots`` maps a name to an
        image file, stored as ``plots/<name><suffix>``.
        """
        for name, path in (plots or {}).items():
            if not Path(path).is_file():
                raise AutofixError(f"plot {name!r}: no such file {path}")
        mlflow = _mlflow()
        entities = mlflow.entities
        with self._store() as client:
            run_id = self._start_run(
                client,
                self.experiment,
                model_name,
                {"autofix.model": model_name, "autofix.kind": "training", **(tags or {})},
            )
            try:
                client.log_batch(
                    run_id,
                    metrics=[
                        entities.Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()
                    ],
                    params=[
                        entities.Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items()
                    ],
                )
                self._log_plots(client, run_id, plots or {})
                self._log_estimator(client, run_id, estimator)
            except BaseException:
                client.set_terminated(run_id, "FAILED")
                raise
            client.set_terminated(run_id, "FINISHED")
            try:
                client.get_registered_model(model_name)
            except mlflow.exceptions.MlflowException as exc:
                if not self._is_missing(exc):
                    raise
                client.create_registered_model(model_name)
            artifact_uri = client.get_run(run_id).info.artifact_uri
            created = client.create_model_version(
                model_name, source=f"{artifact_uri}/{_MODEL_ARTIFACT}", run_id=run_id
            )
        return TrainingRun(run_id=run_id, model_name=model_name, version=int(created.version))

    def _log_plots(self, client: MlflowClient, run_id: str, plots: Mapping[str, Path]) -> None:
        if not plots:
            return
        with tempfile.TemporaryDirectory(prefix="autofix-plots-") as tmp:
            for name, path in plots.items():
                shutil.copyfile(path, Path(tmp) / f"{name}{Path(path).suffix}")
            client.log_artifacts(run_id, tmp, "plots")

    def _log_estimator(self, client: MlflowClient, run_id: str, estimator: object) -> None:
        mlflow = _mlflow()
        with tempfile.TemporaryDirectory(prefix="autofix-model-") as tmp:
            path = Path(tmp) / _MODEL_ARTIFACT
            # The sklearn flavour warns on every pickle save that skops is safer; skops
            # cannot hold a Prophet model, and these artifacts are only ever loaded from
            # our own local store.
            sklearn_logger = logging.getLogger("mlflow.sklearn")
            level = sklearn_logger.level
            sklearn_logger.setLevel(logging.ERROR)
            try:
                with _pins_from_this_environment():
                    mlflow.sklearn.save_model(
                        estimator,
                        str(path),
                        serialization_format="cloudpickle",
                        pip_requirements=_requirements(),
                    )
            finally:
                sklearn_logger.setLevel(level)
            client.log_artifacts(run_id, str(path), _MODEL_ARTIFACT)

    def log_metrics_run(
        self,
        name: str,
        metrics: Mapping[str, float],
        *,
        tags: Mapping[str, str] | None = None,
        experiment: str = KPI_EXPERIMENT,
    ) -> str:
        """Log a run that holds only metrics (KPIs); returns its run id."""
        mlflow = _mlflow()
        with self._store() as client:
            run_id = self._start_run(
                client, experiment, name, {"autofix.kind": "metrics", **(tags or {})}
            )
            client.log_batch(
                run_id,
                metrics=[
                    mlflow.entities.Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()
                ],
            )
            client.set_terminated(run_id, "FINISHED")
        return run_id

    def champion(self, model_name: str) -> ModelVersionInfo | None:
        """The version holding the ``champion`` alias, or None."""
        mlflow = _mlflow()
        with self._store() as client:
            try:
                found = client.get_model_version_by_alias(model_name, CHAMPION)
            except mlflow.exceptions.MlflowException as exc:
                if self._is_missing(exc):
                    return None
                raise
            return self._version_info(client, found)

    def promote_if_better(
        self,
        model_name: str,
        version: int,
        *,
        recall_metric: str = "recall_24h",
        max_false_fix_rate: float = 0.01,
    ) -> PromotionDecision:
        """Move ``champion`` to ``version`` only if it passes the gate; tag the decision.

        The gate: ``false_fix_rate < max_false_fix_rate`` and ``recall_metric`` not below
        the current champion's (the first version needs only the false-fix gate).
        """
        current = self.champion(model_name)
        with self._store() as client:
            candidate = self._version_info(
                client, client.get_model_version(model_name, str(version))
            )
            promoted, reason = _gate(
                candidate, current, recall_metric=recall_metric, max_ffr=max_false_fix_rate
            )
            if promoted:
                client.set_registered_model_alias(model_name, CHAMPION, str(version))
            verdict = "promoted" if promoted else "rejected"
            client.set_model_version_tag(model_name, str(version), PROMOTION_TAG, verdict)
            client.set_model_version_tag(model_name, str(version), PROMOTION_REASON_TAG, reason)
        log.info("%s v%s %s: %s", model_name, version, verdict, reason)
        return PromotionDecision(
            model_name=model_name,
            version=int(version),
            promoted=promoted,
            reason=reason,
            previous_champion=current.version if current else None,
        )

    def load_champion(self, model_name: str) -> tuple[Any, int]:
        """The champion's fitted estimator and its version number."""
        info = self.champion(model_name)
        if info is None:
            raise AutofixError(f"no champion for {model_name} yet: run `autofix train`")
        mlflow = _mlflow()
        with self._store() as client:
            source = client.get_model_version(model_name, str(info.version)).source
            estimator = mlflow.sklearn.load_model(self._relocate(str(source)))
        return estimator, info.version

    def _relocate(self, uri: str) -> str:
        """An artifact URI under this ``models_dir``, wherever the store was written.

        MLflow records absolute artifact paths; a ``models/`` directory that was moved or
        copied (another checkout, a backup restored elsewhere) still holds its artifacts
        below ``artifacts/``, so a path that no longer exists is rebased onto ours.
        """
        path = Path(unquote(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)
        if path.exists() or "artifacts" not in path.parts:
            return uri
        parts = path.parts
        # Run artifacts are <root>/<experiment>/<run>/artifacts/...: try each "artifacts"
        # in the path as the old root, outermost first.
        for i, part in enumerate(parts):
            moved = self.artifact_root.joinpath(*parts[i + 1 :])
            if part == "artifacts" and moved.exists():
                log.info("model artifacts moved: %s -> %s", path, moved)
                return str(moved)
        return uri

    def list_models(self, recall_metric: str = "recall_24h") -> list[dict[str, object]]:
        """Every registered version, newest first per model, for ``autofix models list``."""
        rows: list[dict[str, object]] = []
        with self._store() as client:
            for registered in client.search_registered_models(order_by=["name ASC"]):
                name = str(registered.name)
                escaped = name.replace("'", "\\'")
                versions = client.search_model_versions(f"name = '{escaped}'")
                # Version search results leave aliases empty; the registered model has them.
                aliases: dict[int, list[str]] = {}
                for alias, number in (registered.aliases or {}).items():
                    aliases.setdefault(int(number), []).append(alias)
                infos = [self._version_info(client, v) for v in versions]
                for info in sorted(infos, key=lambda i: i.version, reverse=True):
                    rows.append(
                        {
                            "name": info.name,
                            "version": info.version,
                            "alias": ",".join(sorted(aliases.get(info.version, []))) or None,
                            "created": info.created,
                            "false_fix_rate": info.metrics.get(FALSE_FIX_RATE),
                            "recall": info.metrics.get(recall_metric),
                            "run_id": info.run_id,
                        }
                    )
        return rows


def _gate(
    candidate: ModelVersionInfo,
    current: ModelVersionInfo | None,
    *,
    recall_metric: str,
    max_ffr: float,
) -> tuple[bool, str]:
    """The promotion rule, pure: (promote?, one-line reason)."""
    ffr = candidate.metrics.get(FALSE_FIX_RATE)
    if ffr is None or not math.isfinite(ffr):
        return False, f"no {FALSE_FIX_RATE} logged for v{candidate.version}"
    if ffr >= max_ffr:
        return False, f"{FALSE_FIX_RATE} {ffr:.4g} is not below {max_ffr:g}"
    if current is None:
        return True, f"first version to pass the gate ({FALSE_FIX_RATE} {ffr:.4g} < {max_ffr:g})"
    if current.version == candidate.version:
        return False, f"v{candidate.version} is already the champion"
    recall = candidate.metrics.get(recall_metric)
    if recall is None or not math.isfinite(recall):
        return False, f"no {recall_metric} logged for v{candidate.version}"
    best = current.metrics.get(recall_metric)
    if best is None or not math.isfinite(best):
        return True, (
            f"{FALSE_FIX_RATE} {ffr:.4g} < {max_ffr:g}; champion v{current.version} has no "
            f"{recall_metric} to compare"
        )
    if recall < best:
        return False, (
            f"{recall_metric} {recall:.4g} is below champion v{current.version}'s {best:.4g}"
        )
    return True, (
        f"{FALSE_FIX_RATE} {ffr:.4g} < {max_ffr:g} and {recall_metric} {recall:.4g} "
        f">= champion v{current.version}'s {best:.4g}"
    )


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
