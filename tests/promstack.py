"""A real Prometheus stack on loopback: Prometheus, node-exporter, Alertmanager.

Debian's binaries (``apt-get install prometheus prometheus-node-exporter
prometheus-alertmanager``), each on a free 127.0.0.1 port with its own temp config and
data dir, started here and stopped after; nothing touches the system daemons' ports or
files. Prometheus scrapes itself and the node exporter every second.

    with node_exporter() as node, prometheus({"node": [node.address]}) as prom:
        ...  # prom.url is the API's base URL

A test module shares one stack through a module-scoped fixture:

    @pytest.fixture(scope="module")
    def stack() -> Iterator[PromStack]:
        yield from stack_or_skip(lambda: prometheus_stack(wait_for_targets=False))

``stack_or_skip`` skips when a binary is missing, except under CI (``CI=true``), where it
fails. Prometheus' first scrape comes ~5 s after start (its discovery tick): start
without waiting and call ``wait_for_scrapes`` in the first test that needs data.

End-to-end alerting: ``prometheus_stack(rule_files=[...], webhook_url=hook.url)`` runs an
Alertmanager that posts to ``hook``, a ``webhook_receiver()``; ``hook.wait(predicate)``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import _under_ci
from tests.servers import ServerUnavailableError, _terminate, _which, free_port

T = TypeVar("T")

PROMETHEUS = "prometheus"
NODE_EXPORTER = "prometheus-node-exporter"
ALERTMANAGER = "prometheus-alertmanager"

# Enough of the node exporter to look like a host, fast enough to scrape every second.
_NODE_COLLECTORS = ("meminfo", "loadavg", "cpu", "filesystem", "netdev", "time", "textfile")


@dataclass(frozen=True)
class NodeExporter:
    """``textfile_dir``: write ``*.prom`` files here to publish any gauge (NaN, Inf too)."""

    url: str
    address: str
    textfile_dir: Path


@dataclass(frozen=True)
class Alertmanager:
    url: str
    address: str


@dataclass(frozen=True)
class Prometheus:
    """``url`` is the base URL of the HTTP API; ``jobs`` the scrape jobs it was given."""

    url: str
    address: str
    config_file: Path
    jobs: tuple[str, ...] = ("prometheus",)


@dataclass(frozen=True)
class PromStack:
    prometheus: Prometheus
    node: NodeExporter
    alertmanager: Alertmanager | None = None


def _binary(name: str) -> str:
    return _which(name, name)


def _wait(
    proc: subprocess.Popen[bytes],
    url: str,
    name: str,
    log: Path,
    timeout: float,
    ready: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
) -> str:
    """Empty once ``url`` answers ready, else why it never did (with the log's tail)."""
    deadline = time.monotonic() + timeout
    error = "timed out"
    with httpx.Client(timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                error = f"exited with {proc.returncode}"
                break
            try:
                if ready(client.get(url)):
                    return ""
                error = "not ready"
            except httpx.HTTPError as exc:
                error = str(exc)
            time.sleep(0.05)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    return f"{name} did not become ready at {url}: {error}\n{tail}"


@contextlib.contextmanager
def _serve(
    name: str,
    binary: str,
    argv: Callable[[int, Path], list[str]],
    ready_path: str,
    timeout: float,
    ready: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
) -> Iterator[tuple[str, str, Path]]:
    """Start ``binary argv(port, dir)`` on a free port (3 tries); yield url, address, dir."""
    base = Path(tempfile.mkdtemp(prefix=f"autofix-{name}-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        problem = ""
        for _attempt in range(3):  # the free port can be taken in between: try another
            port = free_port()
            log = base / f"{name}.log"
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [binary, *argv(port, base)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=base,
                )
            address = f"127.0.0.1:{port}"
            problem = _wait(proc, f"http://{address}{ready_path}", name, log, timeout, ready)
            if not problem:
                yield f"http://{address}", address, base
                return
            _terminate(proc)
            proc = None
        raise RuntimeError(problem)
    finally:
        if proc is not None:
            _terminate(proc)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def node_exporter(
    textfiles: Mapping[str, str] | None = None, *, startup_timeout: float = 20.0
) -> Iterator[NodeExporter]:
    """Debian's node exporter with a few collectors and a textfile directory of our own.

    ``textfiles`` maps ``name.prom`` to exposition text, published from the first scrape
    (later files can be written into ``textfile_dir``).
    """
    binary = _binary(NODE_EXPORTER)

    def argv(port: int, base: Path) -> list[str]:
        (base / "textfile").mkdir(exist_ok=True)
        for name, text in (textfiles or {}).items():
            (base / "textfile" / name).write_text(text)
        return [
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            *(f"--collector.{name}" for name in _NODE_COLLECTORS),
            f"--collector.textfile.directory={base / 'textfile'}",
        ]

    with _serve(NODE_EXPORTER, binary, argv, "/metrics", startup_timeout) as (url, addr, base):
        yield NodeExporter(url, addr, base / "textfile")


def alertmanager_config(webhook_url: str | None) -> str:
    """One route to one receiver: a webhook when given, else nowhere; fast grouping."""
    receiver: dict[str, Any] = {"name": "default"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    config = {
        "route": {
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [receiver],
    }
    return json.dumps(config, indent=2)  # JSON is YAML


@contextlib.contextmanager
def alertmanager(
    webhook_url: str | None = None, *, config: str | None = None, startup_timeout: float = 20.0
) -> Iterator[Alertmanager]:
    """Debian's Alertmanager, clustering off; ``config`` (YAML) replaces the default one."""
    binary = _binary(ALERTMANAGER)
    text = config if config is not None else alertmanager_config(webhook_url)

    def argv(port: int, base: Path) -> list[str]:
        (base / "alertmanager.yml").write_text(text)
        return [
            f"--config.file={base / 'alertmanager.yml'}",
            f"--storage.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port, no peers
        ]

    with _serve(ALERTMANAGER, binary, argv, "/-/ready", startup_timeout) as (url, addr, _):
        yield Alertmanager(url, addr)


def prometheus_config(
    targets: Mapping[str, Sequence[str]],
    *,
    rule_files: Sequence[Path | str] = (),
    alertmanagers: Sequence[str] = (),
    interval: str = "1s",
) -> str:
    """Scrape every ``job: [host:port, ...]`` every ``interval``; rules; alertmanagers."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
            for job, addresses in targets.items()
        ],
    }
    if rule_files:
        config["rule_files"] = [str(Path(f).resolve()) for f in rule_files]
    if alertmanagers:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
        }
    return json.dumps(config, indent=2)


@contextlib.contextmanager
def prometheus(
    targets: Mapping[str, Sequence[str]] | None = None,
    *,
    rule_files: Sequence[Path | str] = (),
    alertmanagers: Sequence[str] = (),
    interval: str = "1s",
    wait_for_targets: bool = True,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 30.0,
) -> Iterator[Prometheus]:
    """Debian's Prometheus scraping itself (job ``prometheus``) and ``targets``.

    Ready means ``/-/ready`` answers (~0.1 s). Prometheus hands static targets to its
    scrapers only on a 5 s discovery tick, so the first scrape comes ~5-6 s after
    start: with ``wait_for_targets`` this waits for it; without, call
    ``wait_for_scrapes`` before the first test that needs scraped data.
    """
    binary = _binary(PROMETHEUS)
    scrape = dict(targets or {})

    def argv(port: int, base: Path) -> list[str]:
        config = base / "prometheus.yml"
        jobs = {"prometheus": [f"127.0.0.1:{port}"], **scrape}
        config.write_text(
            prometheus_config(
                jobs, rule_files=rule_files, alertmanagers=alertmanagers, interval=interval
            )
        )
        return [
            f"--config.file={config}",
            f"--storage.tsdb.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            # An alert fired before the Alertmanager is discovered (the same 5 s tick) is
            # dropped and only re-sent after this delay: the default 1m is too slow here.
            "--rules.alert.resend-delay=1s",
            "--log.level=warn",
            *extra_args,
        ]

    with _serve(PROMETHEUS, binary, argv, "/-/ready", startup_timeout) as (url, addr, base):
        server = Prometheus(url, addr, base / "prometheus.yml", ("prometheus", *scrape))
        if wait_for_targets:
            wait_for_scrapes(server, timeout=startup_timeout)
        yield server


def wait_for_scrapes(server: Prometheus, samples: int = 1, timeout: float = 30.0) -> None:
    """Block until every job has ``samples`` scrapes stored and all its targets are up."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    query = f"count_over_time(up[1h]) >= {samples} and up == 1"
    with httpx.Client(timeout=2, trust_env=False) as client:
        while time.monotonic() < deadline:
            body = client.get(f"{server.url}/api/v1/query", params={"query": query}).json()
            seen = {r["metric"]["job"]: float(r["value"][1]) for r in body["data"]["result"]}
            if set(server.jobs) <= set(seen):
                return
            time.sleep(0.1)
    raise RuntimeError(
        f"prometheus at {server.url}: jobs {server.jobs} not all scraped {samples}x and up "
        f"after {timeout}s (ready: {sorted(seen)})"
    )


@contextlib.contextmanager
def prometheus_stack(
    *,
    rule_files: Sequence[Path | str] = (),
    webhook_url: str | None = None,
    with_alertmanager: bool = False,
    textfiles: Mapping[str, str] | None = None,
    wait_for_targets: bool = True,
) -> Iterator[PromStack]:
    """Node exporter, Alertmanager when asked (posting to ``webhook_url``), Prometheus.

    Prometheus scrapes itself and the node exporter (job ``node``) every second, loads
    ``rule_files`` and sends alerts to the Alertmanager.
    """
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(node_exporter(textfiles))
        manager = (
            stack.enter_context(alertmanager(webhook_url))
            if with_alertmanager or webhook_url
            else None
        )
        prom = stack.enter_context(
            prometheus(
                {"node": [node.address]},
                rule_files=rule_files,
                alertmanagers=[manager.address] if manager else [],
                wait_for_targets=wait_for_targets,
            )
        )
        yield PromStack(prom, node, manager)


def stack_or_skip(factory: Callable[[], contextlib.AbstractContextManager[T]]) -> Iterator[T]:
    """For fixtures: yield the server; skip when a binary is missing, fail under CI."""
    try:
        with factory() as server:
            yield server
    except ServerUnavailableError as exc:
        if _under_ci():
            pytest.fail(f"CI=true but {exc}")
        pytest.skip(str(exc))


# --- a webhook receiver (what Alertmanager posts to) -------------------------------------


@dataclass
class WebhookReceiver:
    """``url`` accepts JSON POSTs; ``posts`` holds each body; ``wait`` blocks for one."""

    url: str
    posts: list[Any] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def wait(self, predicate: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        """The first post that satisfies ``predicate``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for post in list(self.posts):
                if predicate(post):
                    return post
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching webhook post in {timeout}s: {self.posts}")
            self.arrived.wait(min(left, 0.2))
            self.arrived.clear()


class _HookServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver


class _HookHandler(BaseHTTPRequestHandler):
    server: _HookServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body: Any = json.loads(raw or b"null")
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        self.server.receiver.posts.append(body)
        self.server.receiver.arrived.set()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    server = _HookServer(("127.0.0.1", 0), _HookHandler)
    server.receiver = WebhookReceiver(f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.receiver
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
