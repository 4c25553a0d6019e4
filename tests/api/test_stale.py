"""Series that stopped reporting are no risk in the API: /forecasts, a series' chart, /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.api.world import VIEWER, World, auth, body, make_world, serving


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[World, httpx.Client]]:
    with make_world(tmp_path) as w, serving(w) as c:
        c.headers.update(auth(VIEWER))
        yield w, c


def test_history_that_stopped_reporting_is_no_risk(fresh: tuple[World, httpx.Client]) -> None:
    """Imported 2024 history, forecast back then as running out within hours: not a risk
    now — not in /forecasts, without a forecast on its chart, not exported to /metrics."""
    from autofix.collect.importer import import_files
    from autofix.models.registry import make_forecaster
    from autofix.predict import predict_store

    world, client = fresh
    samples = Path(__file__).parents[2] / "data" / "samples" / "disk_fill_linear.parquet"
    import_files(world.store, samples)
    run = predict_store(
        world.store, make_forecaster("default"), model_name="default", model_version="1",
        now=pd.Timestamp("2024-03-18").to_pydatetime(),
    )  # fmt: skip
    assert run.written == 2
    old = world.store.query(
        "SELECT series_id FROM predictions WHERE made_at < '2025-01-01' AND p_24h > 0.9"
    )["series_id"]
    assert len(old) >= 1  # back then, it was filling up
    items = body(client.get("/api/v1/forecasts", params={"limit": 1000}))["items"]
    listed = {item["series_id"] for item in items}
    assert world.series["disk"] in listed  # the world's own series still reports
    assert not listed & set(int(i) for i in old)
    for item in items:
        assert item["eta"] is None or pd.Timestamp(item["eta"]) >= pd.Timestamp(
            world.now, tz="UTC"
        ) - pd.Timedelta(minutes=1)
    chart = body(client.get(f"/api/v1/series/{int(old.iloc[0])}/forecast"))
    assert chart["prediction"] is None
    assert chart["forecast"] == []
    assert chart["history"]  # the history itself is still shown
    metrics = client.get("/metrics").text
    for series_id in old:
        assert f'series_id="{int(series_id)}"' not in metrics
