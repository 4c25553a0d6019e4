"""The dashboard in a real headless Chromium (Debian's) against the real app on loopback.

The app runs under uvicorn in a thread over a real store with forecasts and fixes waiting
for approval, made by the real executor. Chromium is driven by Playwright; its bundled
browsers are never downloaded. Without /usr/bin/chromium the tests skip, except under CI
(CI=true), where they fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
import pytest
from fastapi import FastAPI

from autofix.api import create_app
from autofix.api.server import ApiServer
from autofix.collect.base import format_labels
from autofix.config import load_settings
from autofix.executor import Executor
from autofix.jobs import Service
from autofix.pipeline import Pipeline
from autofix.store import MetricStore
from tests.conftest import _under_ci

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "dashboard.png"
OPERATOR = "operator-token-0123456789"
VIEWER = "viewer-token-0123456789"
HOSTILE = '<img src=x onerror="window.pwned=1">'  # a label value that must stay text
DISKS = (("web-1", "/var/log", 9.0), ("web-2", "/srv/spool", 30.0), ("db-1", HOSTILE, 60.0))


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass
class World:
    service: Service
    pending: list[int]

    @property
    def ex(self) -> Executor:
        return self.service.executor


def _write_disks(store: MetricStore, now: datetime) -> None:
    """Six hours of a filling disk per host, then a forecast that it fills up."""
    rows: list[dict[str, Any]] = []
    for host, mountpoint, hours_left in DISKS:
        labels = format_labels({"mountpoint": mountpoint, "fstype": "ext4"})
        per_hour = 40e9 / (6 + hours_left)  # from 40 GB free to empty at the ETA
        for step in range(73):
            ts = now - timedelta(minutes=5 * (72 - step))
            avail = 40e9 - per_hour * step / 12
            rows.append(
                {"ts": ts, "host": host, "metric": "node_filesystem_avail_bytes",
                 "labels": labels, "unit": "bytes", "capacity": 100e9, "value": avail}
            )  # fmt: skip
    assert store.write(pd.DataFrame(rows)).stored == len(rows)
    ids = store.series().set_index("host")["series_id"]
    predictions = []
    for host, _, hours_left in DISKS:
        eta = now + timedelta(hours=hours_left)
        predictions.append(
            {"series_id": int(ids[host]), "origin": now, "eta": eta,
             "eta_lo": eta - timedelta(hours=hours_left / 4),
             "eta_hi": eta + timedelta(hours=hours_left / 3),
             "p_1h": 0.0, "p_4h": 0.1, "p_24h": 0.95 if hours_left < 24 else 0.3,
             "p_4d": 0.99, "threshold": 1.0, "model": "linear", "model_version": "3"}
        )  # fmt: skip
    store.write_predictions(pd.DataFrame(predictions), now)


def _stale_file(directory: Path, now: datetime) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / "old.tmp"
    file.write_bytes(b"x" * 4096)
    stamp = (now - timedelta(days=3)).replace(tzinfo=UTC).timestamp()
    os.utime(file, (stamp, stamp))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    now = utcnow()
    names = ("web-1-tmp", "web-2-tmp", "db-1-tmp")
    for name in names:
        _stale_file(tmp_path / name, now)
    pipeline = Pipeline.model_validate(
        {"targets": [{"name": n, "kind": "logdir", "path": str(tmp_path / n)} for n in names]}
    )
    settings = load_settings(
        environ={
            "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "quarantine"),
            "AUTOFIX_FIX_VERIFY_WAIT": "0s",
            "AUTOFIX_FIX_MODE": "approve",
            "AUTOFIX_API_TOKENS": f"ann:operator:{OPERATOR},vic:viewer:{VIEWER}",
        }
    )
    with MetricStore(tmp_path / "autofix.duckdb") as store:
        _write_disks(store, now)
        service = Service(settings, pipeline, store)
        ex = service.executor
        done = ex.run("files.clean_temp", "db-1-tmp", approved_by="ann")  # KPIs get data
        assert done.state == "succeeded"
        pending = [ex.run("files.clean_temp", name) for name in names[:2]]
        assert [p.state for p in pending] == ["pending_approval"] * 2
        yield World(service, [p.id for p in pending])


def _app(world: World) -> FastAPI:
    return create_app(world.service.settings, world.service.store, service=world.service)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """The app as ``autofix serve`` runs it: uvicorn on a thread, a port the kernel picks."""
    server = ApiServer(app, "127.0.0.1", 0, graceful=1)
    server.start()
    try:
        yield f"{server.url}/"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is None and not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (apt-get install chromium)"
    if reason is not None:
        if _under_ci():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def dashboard(
    browser: Browser, url: str, token: str, *, fake_clock: bool = False, status: int = 0
) -> Iterator[Page]:
    """A fresh page signed in with ``token``.

    Script errors and console errors (a CSP violation, a failed request) fail the test,
    except a request failing with the ``status`` the test expects.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    if fake_clock:
        page.clock.install()
    try:
        page.goto(url)
        page.fill("#token", token)
        page.click("#login button[type=submit]")
        page.wait_for_selector("body[data-loaded]")
        yield page
        expected = f"the server responded with a status of {status}"
        assert [e for e in errors if not (status and expected in e)] == []
    finally:
        context.close()


def _state(page: Page, fix_id: int) -> str:
    return page.locator(f"#fixes li[data-fix='{fix_id}'] .state").inner_text()


def test_the_page_and_its_assets_are_served_from_the_package() -> None:
    app = create_app(load_settings(environ={}), MetricStore(":memory:"), pipeline=Pipeline())
    with serving(app) as url, httpx.Client(base_url=url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assets = [link for link in linked if not link.startswith("data:")]
        assert sorted(assets) == ["dashboard/chart.js", "dashboard/dashboard.css",
                                  "dashboard/dashboard.js"]  # fmt: skip
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200, asset
            assert response.headers["x-content-type-options"] == "nosniff"
        assert client.get("/dashboard/dashboard.py").status_code == 404
        assert client.get("/dashboard/..%2F__init__.py").status_code == 404


def test_charts_render_and_an_approve_click_runs_the_fix(world: World, browser: Browser) -> None:
    first, second = world.pending
    with serving(_app(world)) as url, dashboard(browser, url, OPERATOR) as page:
        # Every forecast card draws history, forecast, the 80 % band and the capacity.
        cards = page.locator("#series article.card")
        assert cards.count() == len(DISKS)
        for part in ("history", "forecast", "band", "capacity"):
            page.wait_for_selector(f"#series svg.chart path.{part}", state="attached")
        assert page.locator("#series svg.chart").count() == len(DISKS)
        for part in ("history", "forecast", "band", "capacity"):
            d = page.locator(f"#series article.card >> nth=0 >> svg path.{part}").get_attribute("d")
            assert d is not None
            assert re.match(r"M[\d.]+,[\d.-]+[LH]", d), (part, d)
        # Riskiest first, and a hostile label is shown as text, never parsed.
        assert "web-1" in cards.nth(0).locator("h3").inner_text()
        assert HOSTILE in page.locator("#series").inner_text()
        assert page.locator("#series img").count() == 0
        assert page.evaluate("window.pwned") is None
        # KPI tiles show numbers: one fix applied and verified.
        tile = page.locator("[data-kpi=auto_fix_success_rate]")
        assert tile.locator(".value").inner_text() == "100 %"
        assert "meets_goal" in (tile.get_attribute("class") or "")
        assert page.locator("[data-kpi=pending_approvals] .value").inner_text() == "2"
        assert _state(page, first) == "pending_approval"

        page.locator(f"#approvals tr[data-fix='{first}'] button.approve").click()
        page.wait_for_function(
            "id => document.querySelector(`#fixes li[data-fix='${id}'] .state`)"
            "?.textContent === 'succeeded'",
            arg=first,
        )
        assert world.ex.get(first).state == "succeeded"
        assert world.ex.get(first).approved_by == "api:ann"
        assert f"#{first}" in page.locator("#notice").inner_text()
        assert page.locator(f"#approvals tr[data-fix='{first}']").count() == 0

        page.locator(f"#approvals tr[data-fix='{second}'] button.reject").click()
        page.wait_for_function(
            "id => document.querySelector(`#fixes li[data-fix='${id}'] .state`)"
            "?.textContent === 'refused'",
            arg=second,
        )
        assert world.ex.get(second).state == "refused"
        assert page.locator("#approvals-empty").is_visible()
        assert page.locator("#timeline circle.succeeded").count() == 2
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_a_viewer_sees_the_403_and_the_fix_stays_pending(world: World, browser: Browser) -> None:
    fix_id = world.pending[0]
    with (
        serving(_app(world)) as url,
        dashboard(browser, url, VIEWER, fake_clock=True, status=403) as page,
    ):
        page.locator(f"#approvals tr[data-fix='{fix_id}'] button.approve").click()
        page.wait_for_selector("#notice.error")
        assert "403" in page.locator("#notice").inner_text()
        assert world.ex.get(fix_id).state == "pending_approval"
        page.wait_for_selector(f"#approvals tr[data-fix='{fix_id}'] button.approve:enabled")
        assert _state(page, fix_id) == "pending_approval"

        # The page refreshes itself every 30 s: a fix requested meanwhile shows up.
        later = world.ex.run("files.clean_temp", "db-1-tmp")  # refused: cooldown
        page.wait_for_timeout(200)
        assert page.locator(f"#fixes li[data-fix='{later.id}']").count() == 0
        page.clock.fast_forward(31_000)
        page.wait_for_selector(f"#fixes li[data-fix='{later.id}']")
        assert _state(page, later.id) == later.state


def test_a_wrong_token_asks_again(world: World, browser: Browser) -> None:
    with serving(_app(world)) as url:
        context = browser.new_context()
        try:
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(url)
            page.fill("#token", "not-a-token")
            page.click("#login button[type=submit]")
            page.wait_for_selector("#login:not([hidden])")
            assert "401" in page.locator("#notice").inner_text()
            assert page.evaluate("sessionStorage.getItem('autofix.token')") is None
        finally:
            context.close()
