"""What the routes share: the service's store and executor, the clock, the tokens, caches.

One ``ApiContext`` per app, kept in ``app.state.autofix`` and handed to a route by the
``context`` dependency. The API reads and writes through the objects of the process
that owns the store (DuckDB allows one writer), never a second connection.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from fastapi import Request

from autofix.api.auth import Tokens
from autofix.api.models import Forecast
from autofix.api.snapshot import HEAD_FIELDS, TAIL_FIELDS, Selectable, encode_rows, splice
from autofix.collect.base import parse_labels
from autofix.config import Settings
from autofix.executor import Executor
from autofix.heartbeat import Heartbeat
from autofix.jobs import Service
from autofix.maintenance import Maintenance
from autofix.models.base import HORIZONS
from autofix.pipeline import Pipeline
from autofix.predict import current_predictions
from autofix.store import MetricStore

log = logging.getLogger(__name__)


def utc(value: Any) -> datetime | None:
    """A store timestamp (naive UTC, pandas or ISO text) as an aware UTC datetime; None for null."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def number(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


_TIMES = ("made_at", "origin", "eta", "eta_lo", "eta_hi")


@dataclass(frozen=True)
class ForecastTable(Selectable):
    """The newest prediction of every series, ready to filter, sort and page without SQL.

    Columns stay arrays; a row becomes a dict (and its JSON) the first time it is served,
    so a rebuild after a prediction run costs the query and a sort, not 10,000 dicts.
    """

    columns: Mapping[str, np.ndarray]
    probability: Mapping[str, np.ndarray]  # horizon -> p per row (NaN: unknown)
    order: Mapping[str, np.ndarray]  # horizon -> rows by p desc, then ETA
    eta_epoch: np.ndarray  # ETA in Unix seconds per row (NaN: none)
    series_index: Mapping[int, int]
    _rows: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)
    _fragments: dict[int, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)
    _json: dict[tuple[int, str], bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, frame: pd.DataFrame) -> ForecastTable:
        n = len(frame)
        columns = {
            name: frame[name].to_numpy(dtype=object)
            for name in ("host", "metric", "labels", "model", "model_version")
        }
        columns["series_id"] = frame["series_id"].to_numpy("int64")
        columns["capacity"] = frame["capacity"].to_numpy("float64")
        columns["threshold"] = frame["threshold"].to_numpy("float64")
        for name in _TIMES:
            columns[name] = frame[name].to_numpy("datetime64[ns]")
        eta = np.full(n, np.nan)
        known = ~np.isnat(columns["eta"])
        eta[known] = columns["eta"][known].astype("int64") / 1e9
        probability: dict[str, np.ndarray] = {}
        order: dict[str, np.ndarray] = {}
        for h in HORIZONS:
            p = frame[f"p_{h}"].to_numpy("float64")
            probability[h] = p
            # lexsort: the last key is the primary one; unknown probabilities sort last.
            order[h] = np.lexsort((np.nan_to_num(eta, nan=np.inf), -np.nan_to_num(p, nan=-1.0)))
        ids = columns["series_id"].tolist()
        return cls(columns, probability, order, eta, dict(zip(ids, range(n), strict=True)))

    def __len__(self) -> int:
        return len(self.eta_epoch)

    def _base(self, index: int) -> dict[str, Any]:
        row = self._rows.get(index)
        if row is None:
            c = self.columns
            row = self._rows[index] = {
                "series_id": int(c["series_id"][index]),
                "host": str(c["host"][index]),
                "metric": str(c["metric"][index]),
                "labels": parse_labels(c["labels"][index]),
                "capacity": number(c["capacity"][index]),
                **{name: utc(pd.Timestamp(c[name][index])) for name in _TIMES},
                "probabilities": {h: number(self.probability[h][index]) for h in HORIZONS},
                "threshold": float(c["threshold"][index]),
                "model": str(c["model"][index]),
                "model_version": str(c["model_version"][index]),
            }
        return row

    def row(self, index: int, within: str, now: datetime | None = None) -> dict[str, Any]:
        """Row ``index`` as a ``Forecast`` body for the horizon ``within``.

        With ``now``, an ETA (or interval bound) that has passed since the table was
        built reads ``now``: due, never a time in the past.
        """
        p = number(self.probability[within][index])
        out = {**self._base(index), "within": within, "p_within": p}
        if now is not None:
            moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now
            for name in ("eta", "eta_lo", "eta_hi"):
                if out[name] is not None and out[name] < moment:
                    out[name] = moment
        return out

    def row_json(self, index: int, within: str, now: datetime | None = None) -> bytes:
        """A row as the JSON of a ``Forecast``: serialized once, then reused (a row whose
        ETA has passed since the build is serialized anew, with the ETA at ``now``)."""
        if now is not None:
            moment = (now.replace(tzinfo=UTC) if now.tzinfo is None else now).timestamp()
            if self.eta_epoch[index] < moment or self._passed(index, moment):
                return Forecast(**self.row(index, within, now)).model_dump_json().encode()
        key = (index, within)
        out = self._json.get(key)
        if out is None:
            head, tail = self.fragments(index)
            p = number(self.probability[within][index])
            out = self._json[key] = splice(head, within, p, tail)
        return out

    def fragments(self, index: int) -> tuple[bytes, bytes]:
        """The row's ``Forecast`` JSON before ``within`` and after ``p_within``."""
        out = self._fragments.get(index)
        if out is None:
            model = Forecast(**self.row(index, "24h"))
            out = self._fragments[index] = (
                model.model_dump_json(include=set(HEAD_FIELDS)).encode(),
                model.model_dump_json(include=set(TAIL_FIELDS)).encode(),
            )
        return out

    @functools.cached_property
    def snapshot(self) -> bytes:
        """The table for the API front process (``autofix.api.snapshot``), made once."""
        pairs = [self.fragments(i) for i in range(len(self))]
        etas = np.full((3, len(self)), np.nan)
        for row, name in enumerate(("eta", "eta_lo", "eta_hi")):
            times = self.columns[name]
            known = ~np.isnat(times)
            etas[row, known] = times[known].astype("datetime64[ns]").astype("int64") / 1e9
        return encode_rows(
            heads=[head for head, _ in pairs],
            tails=[tail for _, tail in pairs],
            hosts=[str(h) for h in self.columns["host"]],
            metrics=[str(m) for m in self.columns["metric"]],
            probability=self.probability,
            order=self.order,
            etas=etas,
        )

    def _passed(self, index: int, moment: float) -> bool:
        low = self.columns["eta_lo"][index]
        return not np.isnat(low) and low.astype("int64") / 1e9 < moment

    def metric_labels(self, index: int) -> list[str]:
        """series_id, host, metric: the labels of the row's /metrics samples."""
        c = self.columns
        return [str(c["series_id"][index]), str(c["host"][index]), str(c["metric"][index])]

    def matching(self, column: str, value: str) -> np.ndarray:
        found: np.ndarray = self.columns[column] == value
        return found


class PredictionCache:
    """The current predictions (``autofix.predict.current_predictions``), built once per
    prediction run, keyed on ``max(made_at)`` and the ``REFRESH``-second period.

    The predict job appends a whole run in one statement, so a new ``max(made_at)`` (or
    row count) is exactly a new run; the period makes a series that stopped reporting
    drop out even when no run comes any more (a stopped service, imported history).
    ``get`` checks the key (one small aggregate instead of a window over the whole
    predictions table) and rebuilds on a change; ``fresh`` answers without touching the
    store when the last check is under ``recheck`` seconds old, so a busy route stays on
    the event loop (runs come a minute apart).
    """

    #: Seconds after which the table is rebuilt even without a new prediction run.
    REFRESH = 30.0

    def __init__(
        self,
        store: MetricStore,
        recheck: float = 1.0,
        clock: Callable[[], datetime] | None = None,
        lookback: timedelta = timedelta(days=7),
    ) -> None:
        self.store = store
        self.recheck = recheck
        self.clock = clock or (lambda: datetime.now(UTC).replace(tzinfo=None))
        self.lookback = lookback
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._table: ForecastTable | None = None
        self._checked = -math.inf
        self._rebuilding: threading.Thread | None = None
        self._wait_next = False
        self.builds = 0

    def fresh(self) -> ForecastTable | None:
        """The table when it was checked lately, else None (then call ``get``)."""
        if time.monotonic() - self._checked < self.recheck:
            return self._table
        return None

    def get(self) -> ForecastTable:
        """The current table (blocking: reads the store's newest run).

        After a new run, the table is rebuilt on a thread of its own while every caller
        keeps getting the previous one: a request never waits for a rebuild (unless there
        is no table yet). ``wait_rebuilt`` waits for it (tests, benchmarks).
        """
        now = self.clock()
        period = int(now.replace(tzinfo=UTC).timestamp() // self.REFRESH)
        key = (*self.store._run("SELECT max(made_at), count(*) FROM predictions")[0], period)
        if self._table is None or (self._wait_next and key != self._key):
            self._wait_next = False
            with self._lock:
                if self._table is None or key != self._key:
                    self._rebuild(key, now)
        elif key != self._key and self._lock.acquire(blocking=False):
            self._rebuilding = threading.Thread(
                target=self._rebuild_released, args=(key, now), name="autofix-api-forecasts",
                daemon=True,
            )  # fmt: skip
            self._rebuilding.start()
        self._checked = time.monotonic()
        table = self._table
        assert table is not None
        return table

    def _rebuild(self, key: tuple[Any, ...], now: datetime) -> None:
        current = current_predictions(self.store, now, self.lookback)
        self._table = ForecastTable.build(current)
        self._key = key
        self.builds += 1

    def _rebuild_released(self, key: tuple[Any, ...], now: datetime) -> None:
        try:
            self._rebuild(key, now)
        except Exception:  # the previous table stays; the next check tries again
            log.exception("rebuilding the forecasts table failed")
        finally:
            self._lock.release()

    def wait_rebuilt(self, timeout: float = 30.0) -> None:
        """Wait for a rebuild in progress to finish."""
        thread = self._rebuilding
        if thread is not None:
            thread.join(timeout)

    def forget(self) -> None:
        """Check the store on the next ``fresh``, and let that ``get`` wait for a rebuild
        (tests, and after writing predictions)."""
        self._checked = -math.inf
        self._wait_next = True


@dataclass
class TtlCache:
    """One value recomputed at most every ``ttl`` seconds (the /metrics page, KPIs).

    ``get`` waits for a fresh value. ``get_stale`` returns a value older than ``ttl``
    but younger than ``stale`` at once and recomputes it on a background thread (one at
    a time), so under a flood of requests a slow recomputation stalls none of them; an
    occasional caller (older than ``stale``) waits for a fresh value as with ``get``.
    """

    ttl: float
    stale: float = math.inf
    _value: Any = None
    _at: float = -math.inf
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _refreshing: threading.Lock = field(default_factory=threading.Lock)

    def fresh(self) -> Any:
        """The value when it is younger than ``ttl``, else None (no waiting, no work)."""
        return self._value if time.monotonic() - self._at < self.ttl else None

    def get(self, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                self._value = compute()
                self._at = time.monotonic()
            return self._value

    def get_stale(self, compute: Callable[[], Any]) -> Any:
        value, age = self._value, time.monotonic() - self._at
        if value is None or age >= self.stale:
            return self.get(compute)
        if age >= self.ttl and self._refreshing.acquire(blocking=False):

            def refresh() -> None:
                try:
                    self.get(compute)
                except Exception:  # the next scrape tries again; the old value stays
                    log.exception("background refresh failed")
                finally:
                    self._refreshing.release()

            threading.Thread(target=refresh, name="autofix-api-refresh", daemon=True).start()
        return value


@dataclass
class ApiContext:
    """Everything a route may use; built once by ``create_app``."""

    settings: Settings
    store: MetricStore
    service: Service
    pipeline: Pipeline
    tokens: Tokens
    clock: Callable[[], datetime]
    scheduler: Any | None = None
    heartbeat: Heartbeat | None = None
    predictions: PredictionCache = field(init=False)
    maintenance: Maintenance = field(init=False)
    # Operator actions one at a time: two approvals of one fix must not both run it.
    operator_lock: threading.Lock = field(default_factory=threading.Lock)
    #: The /metrics page (text, gzip), set by ``autofix.api.metrics.router``; the API
    #: front process asks for it through ``autofix.api.front.Feed``.
    metrics_page: Callable[[], tuple[bytes, bytes]] | None = None

    def __post_init__(self) -> None:
        self.predictions = PredictionCache(
            self.store, clock=self.clock, lookback=self.settings.predict_lookback
        )
        self.maintenance = Maintenance(
            self.store, self.pipeline, self.settings, self.executor, clock=self.clock
        )

    @property
    def executor(self) -> Executor:
        return self.service.executor


async def context(request: Request) -> ApiContext:
    """The app's context (a FastAPI dependency; async: no thread for a lookup)."""
    ctx = request.app.state.autofix
    assert isinstance(ctx, ApiContext)
    return ctx
