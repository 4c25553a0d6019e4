"""Screenshot of the dashboard: mid-`make run`, or after a realistic operator's run.

    .venv/bin/python benchmarks/dashboard.py --demo [--at TEXT] [--after 4] [--out PNG]
    .venv/bin/python benchmarks/dashboard.py [--serve 90] [--out benchmarks/results/dashboard.png]

``--demo`` (the README's picture): runs ``autofix demo --dashboard`` as ``make run`` does
and, when the demo's feed prints ``--at`` (default: the hung worker's fault starting —
the disk fill and the leak are fixed by then), waits ``--after`` seconds and screenshots
the dashboard the demo serves, signed in with the token it wrote for this run.

Without it, a realistic operator's run on the sample data:

Nothing here writes the store directly; every step is what an operator runs:

1. a pipelines file like the shipped ``pipelines/local.yaml`` (its rules and targets; the
   log and temp directories are directories of a temp dir with real old files, and the
   disk-exhaustion rule is switched from shadow to ``approve``, as the file suggests once
   its shadow record convinces you);
2. ``autofix import data/samples --shift-to-now``: the shipped sample history (disks
   filling, log-rotation sawtooth, memory, latency) moved to end now;
3. ``autofix run remediate`` (predictions with the default forecaster, decisions, a fix
   waiting for approval), ``autofix run kpi``, ``autofix fix run --yes`` of a clean-up an
   operator asks for, ``autofix silence add`` for a maintenance on one target;
4. ``autofix serve`` with the API (its scheduled jobs collect this host's real metrics and
   run remediate, health, kpi …) and, through it, ``autofix pause`` for a migration;
5. headless Chromium (Debian's, driven by Playwright) signs in with an operator token,
   hovers the first chart, and takes a full-page screenshot.

Prints a table of what the page showed and writes benchmarks/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
AUTOFIX = [str(Path(sys.executable).parent / "autofix")]  # the console script beside Python
OPERATOR = "dashboard-operator-token-0123456789"
VIEWER = "dashboard-viewer-token-0123456789"
CHROMIUM = Path("/usr/bin/chromium")

PIPELINE = """\
# yaml-language-server: $schema=pipelines.schema.json
# pipelines/local.yaml on a temp dir, with the disk-exhaustion rule asking for approval.
targets:
  - name: system-logs
    kind: logdir
    path: {logs}
  - name: var-tmp
    kind: logdir
    path: {tmp}
    actions: [files.clean_temp]

rules:
  - name: disk-high
    description: Root disk above 85 % for 5 minutes — rotate logs, then clean the temp dir.
    when: {{type: threshold, metric: node_filesystem_avail_bytes, match: {{mountpoint: /}},
           of_capacity: true, below: 0.15, for: 5m}}
    actions:
      - {{action: files.rotate_logs, target: system-logs}}
      - {{action: files.clean_temp, target: var-tmp}}
    mode: shadow
  - name: disk-exhaustion-24h
    description: A disk is predicted full within a day.
    when: {{type: exhaustion, metric: node_filesystem_avail_bytes, within: 24h,
           probability: 0.8}}
    actions:
      - {{action: files.clean_temp, target: var-tmp}}
    mode: approve
  - name: memory-high
    description: Memory above 95 % for 2 minutes — nothing safe to do on a bare host; escalate.
    when: {{type: threshold, metric: node_memory_available_bytes, of_capacity: true,
           below: 0.05, for: 2m}}
    mode: shadow
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _old_files(directory: Path, count: int, days: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    for i in range(count):
        path = directory / f"export-{i}.tmp"
        path.write_bytes(os.urandom(64 * 1024))
        os.utime(path, (stamp, stamp))


def _autofix(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [*AUTOFIX, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    shown = "\n".join(done.stdout.strip().splitlines()[:6])
    print(f"$ autofix {' '.join(args)}  (exit {done.returncode})\n{shown}", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"autofix {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def _wait_api(url: str, serve: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise SystemExit(f"autofix serve exited {serve.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the API on {url} did not become ready in {timeout:.0f}s")


def _screenshot(url: str, out: Path, token: str = OPERATOR) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(url)
            page.fill("#token", token)
            page.click("#login button[type=submit]")
            page.wait_for_selector("body[data-loaded]")
            page.wait_for_timeout(500)  # uPlot draws in the next task
            seen = {
                "paused_banner": page.locator("#paused-banner").is_visible(),
                "charts": page.locator("#series .uplot").count(),
                "pending_approvals": page.locator("#approvals tbody tr").count(),
                "decisions": page.locator("#decisions tbody tr").count(),
                "escalations": page.locator("#escalations tbody tr").count(),
                "silences": page.locator("#silences tbody tr").count(),
                "jobs": page.locator("#jobs tbody tr").count(),
                "fixes": page.locator("#fixes li").count(),
            }
            over = page.locator("#series .u-over").first
            box = over.bounding_box() if seen["charts"] else None
            if box is not None:  # hover values in the first chart's legend
                page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] / 2)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            return seen
        finally:
            browser.close()


def _mid_demo(at: str, after: float, out: Path) -> dict[str, Any]:
    """The dashboard of `autofix demo --dashboard` when its feed prints ``at``."""
    with tempfile.TemporaryDirectory(prefix="autofix-demo-shot-") as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AUTOFIX_")},
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "160",
        }
        demo = subprocess.Popen(
            [*AUTOFIX, "demo", "--no-live", "--dashboard", "--report-dir", str(Path(tmp))],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert demo.stdout is not None
        url, token, seen = "", "", {}
        for line in demo.stdout:
            print(line, end="", flush=True)
            found = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)/ .* token in (\S+)\)", line)
            if found:
                url, token = found.group(1), Path(found.group(2)).read_text().strip()
            if url and at in line and not seen:
                time.sleep(after)
                seen = _screenshot(url + "/", out, token)
        if demo.wait() != 0:
            raise SystemExit(f"autofix demo exited {demo.returncode}")
        if not seen:
            raise SystemExit(f"the demo never printed {at!r} with its dashboard up")
        return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=float, default=60.0, help="Seconds the service runs "
                        "before the screenshot (its scheduled jobs).")  # fmt: skip
    results = Path(__file__).parent / "results"
    parser.add_argument("--out", type=Path, default=results / "dashboard.png")
    parser.add_argument("--demo", action="store_true", help="Mid-`make run` instead.")
    parser.add_argument("--at", default="fault hung-worker: running")
    parser.add_argument("--after", type=float, default=4.0)
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} not found (apt-get install chromium)")

    from rich.console import Console

    started = time.perf_counter()
    if args.demo:
        seen = _mid_demo(args.at, args.after, args.out)
        _summary(Console(width=100), "dashboard mid-`make run`", seen, args.out, started)
        return
    with tempfile.TemporaryDirectory(prefix="autofix-dashboard-") as tmp:
        base = Path(tmp)
        logs, scratch = base / "logs", base / "tmp"
        _old_files(logs, 3, 1)
        _old_files(scratch, 40, 5)
        (base / "pipeline.yaml").write_text(PIPELINE.format(logs=logs, tmp=scratch))
        port = _free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AUTOFIX_")},
            "AUTOFIX_DB_PATH": str(base / "autofix.duckdb"),
            "AUTOFIX_PIPELINE": str(base / "pipeline.yaml"),
            "AUTOFIX_MODELS_DIR": str(base / "models"),
            "AUTOFIX_QUARANTINE_DIR": str(base / "quarantine"),
            "AUTOFIX_REPORT_DIR": str(base / "reports"),
            "AUTOFIX_FIX_VERIFY_WAIT": "1s",
            "AUTOFIX_API_PORT": str(port),
            "AUTOFIX_API_TOKENS": f"sre-ann:operator:{OPERATOR},noc-vic:viewer:{VIEWER}",
            "AUTOFIX_LOG_FORMAT": "console",
            "AUTOFIX_LOG_LEVEL": "WARNING",
        }
        _autofix(env, "import", str(ROOT / "data" / "samples"), "--shift-to-now")
        _autofix(env, "run", "remediate")
        _autofix(env, "fix", "run", "files.clean_temp", "--target", "var-tmp", "--yes")
        _autofix(env, "run", "kpi")
        _autofix(env, "silence", "add", "target=system-logs", "--for", "4h",
                 "--comment", "log shipping migration (ask noc-vic)")  # fmt: skip
        serve_log = (base / "serve.log").open("w")
        serve = subprocess.Popen(
            [*AUTOFIX, "serve", "--duration", str(int(args.serve) + 600)],
            env=env,
            cwd=ROOT,
            stdout=serve_log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_api(url, serve)
            time.sleep(args.serve)  # the service's own jobs run (collect, remediate, …)
            # Through the running service, as an operator on this host would.
            _autofix(env, "run", "remediate")
            _autofix(env, "pause", "--for", "2h", "--reason", "database migration window")
            seen = _screenshot(url + "/", args.out)
        except BaseException:
            serve_log.flush()
            print((base / "serve.log").read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            serve.terminate()
            try:
                serve.wait(60)
            except subprocess.TimeoutExpired:
                serve.kill()

    _summary(Console(width=100), "dashboard after a realistic run", seen, args.out, started)


def _summary(console: Any, title: str, seen: dict[str, Any], out: Path, started: float) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("shown")
    table.add_column("count", justify="right")
    for key, value in seen.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    console.print(f"wrote {out} in {time.perf_counter() - started:.0f}s")
    result = {
        "benchmark": "dashboard",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "of": title,
        "screenshot": str(out),
        "shown": seen,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out.parent / "dashboard.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
