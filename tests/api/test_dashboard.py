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

from autofix.api.app import create_app
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

    @property
    def store(self) -> MetricStore:
        return self.service.store


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


def _confirm(page: Page, expected: str, *, ok: bool = True) -> None:
    """The confirmation step: a modal dialog that names what is about to happen."""
    dialog = page.locator("dialog#confirm")
    dialog.wait_for(state="visible")
    assert expected in dialog.locator("#confirm-text").inner_text()
    page.click("#confirm-ok" if ok else "#confirm-cancel")
    dialog.wait_for(state="hidden")


ASSETS = ["dashboard/charts.js", "dashboard/dashboard.css", "dashboard/dashboard.js",
          "dashboard/uplot.iife.min.js", "dashboard/uplot.min.css"]  # fmt: skip


def test_the_page_and_its_assets_are_served_from_the_package() -> None:
    app = create_app(load_settings(environ={}), MetricStore(":memory:"), pipeline=Pipeline())
    with serving(app) as url, httpx.Client(base_url=url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assets = [link for link in linked if not link.startswith("data:")]
        assert sorted(assets) == ASSETS
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200, asset
            assert response.headers["x-content-type-options"] == "nosniff"
        # The chart library is uPlot's built file, shipped with its licence.
        assert client.get("dashboard/uplot.iife.min.js").text.startswith(
            "/*! https://github.com/leeoniya/uPlot"
        )
        assert "MIT License" in client.get("dashboard/uplot.LICENSE").text
        assert client.get("/dashboard/dashboard.py").status_code == 404
        assert client.get("/dashboard/..%2F__init__.py").status_code == 404


def test_charts_have_units_hover_values_and_a_range_per_series(
    world: World, browser: Browser
) -> None:
    with serving(_app(world)) as url, dashboard(browser, url, OPERATOR) as page:
        cards = page.locator("#series article.card")
        assert cards.count() == len(DISKS)
        assert page.locator("#series .uplot canvas").count() >= len(DISKS)
        # Riskiest first, and a hostile label is shown as text, never parsed.
        assert "web-1" in cards.nth(0).locator("h3").inner_text()
        assert HOSTILE in page.locator("#series").inner_text()
        assert page.locator("#series img").count() == 0
        assert page.evaluate("window.pwned") is None
        first = cards.nth(0)
        axes = page.evaluate(
            """el => { const c = AutofixCharts.chartOf(el);
                       return [c.axes[1].label, c.axes[1]._values, c.series.map(s => s.label),
                               c.data[0].length]; }""",
            first.locator(".chart-box").element_handle(),
        )
        label, ticks, series, points_24h = axes
        assert label == "left (bytes)"
        assert ticks
        assert all(t.endswith(("GiB", "MiB", " B")) for t in ticks), ticks
        assert series == ["time", "history", "forecast", "80 % low", "80 % high", "capacity"]
        # Hover: the legend shows the values under the cursor, with units, and the time.
        over = first.locator(".u-over")
        box = over.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
        legend = first.locator(".u-legend").inner_text()
        assert re.search(r"history\s*[\d.]+ GiB", legend), legend
        assert re.search(r"capacity\s*93.1 GiB", legend), legend  # 100e9 bytes
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", legend), legend
        # Each card has its own history range: 6 h shows fewer points, the others stay.
        first.locator("select.range").select_option("6h")
        page.wait_for_selector("#series article.card[data-range='6h']")
        points_6h = page.evaluate(
            "el => AutofixCharts.chartOf(el).data[0].length",
            first.locator(".chart-box").element_handle(),
        )
        assert points_6h < points_24h
        assert cards.nth(1).get_attribute("data-range") == "24h"


def test_the_time_axis_says_the_year_where_it_changes(world: World, browser: Browser) -> None:
    with serving(_app(world)) as url, dashboard(browser, url, VIEWER) as page:
        ticks = page.evaluate(
            """async () => {
                const el = document.createElement("div");
                el.style.width = "640px";
                document.body.append(el);
                const t0 = Date.UTC(2026, 11, 29), history = [];
                for (let i = 0; i < 6 * 24; i++) history.push([t0 + i * 3600e3, 5e10 - i * 1e8]);
                const c = AutofixCharts.forecast(el, {history, forecast: [], band: [],
                    capacity: [[t0, 1e11]], eta: null, unit: "bytes", label: "left (bytes)"});
                await new Promise((done) => setTimeout(done, 50));  // uPlot draws in a task
                const out = c.axes[0]._values.slice();
                c.destroy(); el.remove();
                return out;
            }"""
        )
        years = [t for t in ticks if re.search(r"\b20\d\d\b", t)]
        assert any("2026" in t for t in years), ticks
        assert any("2027" in t for t in years), ticks
        assert len(years) < len(ticks)  # only where it changes (and on the first tick)


def test_approve_asks_first_and_then_runs_the_fix(world: World, browser: Browser) -> None:
    first, second = world.pending
    with serving(_app(world)) as url, dashboard(browser, url, OPERATOR) as page:
        assert "ann (operator)" in page.locator("#who").inner_text()
        tile = page.locator("[data-kpi=auto_fix_success_rate]")
        assert tile.locator(".value").inner_text() == "100 %"
        assert page.locator("[data-kpi=pending_approvals] .value").inner_text() == "2"
        assert _state(page, first) == "pending_approval"

        # Cancel: nothing happens.
        page.locator(f"#approvals tr[data-fix='{first}'] button.approve").click()
        _confirm(page, f"Approve fix #{first}?", ok=False)
        page.wait_for_timeout(300)
        assert world.ex.get(first).state == "pending_approval"

        page.locator(f"#approvals tr[data-fix='{first}'] button.approve").click()
        dialog_text = page.locator("dialog#confirm").inner_text()
        assert "files.clean_temp on web-1-tmp" in dialog_text
        _confirm(page, f"Approve fix #{first}?")
        page.wait_for_function(
            "id => document.querySelector(`#fixes li[data-fix='${id}'] .state`)"
            "?.textContent === 'succeeded'",
            arg=first,
        )
        assert world.ex.get(first).state == "succeeded"
        assert world.ex.get(first).approved_by == "api:ann"
        assert f"#{first}" in page.locator("#notice").inner_text()

        page.locator(f"#approvals tr[data-fix='{second}'] button.reject").click()
        _confirm(page, f"Reject fix #{second}?")
        page.wait_for_function(
            "id => document.querySelector(`#fixes li[data-fix='${id}'] .state`)"
            "?.textContent === 'refused'",
            arg=second,
        )
        assert world.ex.get(second).state == "refused"
        assert page.locator("#approvals-empty").is_visible()
        # A succeeded fix can be rolled back, after a confirmation.
        page.locator(f"#fixes li[data-fix='{first}'] button.rollback").click()
        _confirm(page, f"Roll back fix #{first}?")
        page.wait_for_function(
            "id => document.querySelector(`#fixes li[data-fix='${id}'] .state`)"
            "?.textContent === 'rolled_back'",
            arg=first,
        )
        assert world.ex.get(first).state == "rolled_back"
        assert page.locator("#timeline .uplot").count() == 1


def test_pause_from_the_page_shows_the_paused_banner(world: World, browser: Browser) -> None:
    from autofix import pause as pausing

    with serving(_app(world)) as url, dashboard(browser, url, OPERATOR) as page:
        assert page.locator("#paused-banner").is_hidden()
        page.fill("#pause-reason", "database migration")
        page.select_option("#pause-for", "2h")
        page.click("#pause-form button[type=submit]")
        _confirm(page, "Pause autofix?")
        page.wait_for_selector("#paused-banner:not([hidden])")
        banner = page.locator("#paused-banner").inner_text()
        for part in ("database migration", "api:ann", "UTC"):
            assert part in banner
        held = pausing.current(world.store, utcnow())
        assert held is not None
        assert held.reason == "database migration"
        assert held.until is not None
        assert page.locator("#pause-form").is_hidden()

        page.click("#resume")
        _confirm(page, "Resume autofix?")
        page.wait_for_selector("#paused-banner[hidden]", state="attached")
        assert pausing.current(world.store, utcnow()) is None
        assert page.locator("#pause-form").is_visible()


def test_silences_decisions_and_jobs_are_shown(world: World, browser: Browser) -> None:
    world.service.run_job("kpi")
    with serving(_app(world)) as url, dashboard(browser, url, OPERATOR) as page:
        kpi = page.locator("#jobs tr[data-job='kpi']")
        assert "ok" in kpi.locator(".health").inner_text()
        page.select_option("#silence-name", "target")
        page.fill("#silence-value", "web-2-tmp")
        page.fill("#silence-comment", "disk swap tonight")
        page.click("#silence-form button[type=submit]")
        _confirm(page, "Add this silence?")
        row = page.locator("#silences tbody tr")
        row.first.wait_for()
        assert 'target="web-2-tmp"' in row.first.inner_text()
        assert "api:ann" in row.first.inner_text()
        row.first.locator("button.expire").click()
        _confirm(page, "Expire silence")
        page.wait_for_selector("#silences-empty:not([hidden])")


def test_a_viewer_sees_no_approve_button(world: World, browser: Browser) -> None:
    fix_id = world.pending[0]
    with (
        serving(_app(world)) as url,
        dashboard(browser, url, VIEWER, fake_clock=True) as page,
    ):
        assert "vic (viewer)" in page.locator("#who").inner_text()
        row = page.locator(f"#approvals tr[data-fix='{fix_id}']")
        assert row.count() == 1
        assert "an operator decides" in row.inner_text()
        for button in ("approve", "reject", "rollback", "expire"):
            assert page.locator(f"button.{button}").count() == 0, button
        assert page.locator("#pause-form").is_hidden()
        assert page.locator("#silence-form").is_hidden()
        assert page.locator("#resume").is_hidden()
        assert _state(page, fix_id) == "pending_approval"

        # The page refreshes itself every 30 s: a fix requested meanwhile shows up.
        later = world.ex.run("files.clean_temp", "db-1-tmp")  # refused: cooldown
        page.wait_for_timeout(200)
        assert page.locator(f"#fixes li[data-fix='{later.id}']").count() == 0
        page.clock.fast_forward(31_000)
        page.wait_for_selector(f"#fixes li[data-fix='{later.id}']")
        assert _state(page, later.id) == later.state
        assert page.locator("button.approve").count() == 0


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
