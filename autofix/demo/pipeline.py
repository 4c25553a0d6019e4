"""The demo's pipeline: ``pipelines/news-delivery.yaml`` pointed at the demo stack, on a fast clock.

``render_pipeline`` reads the shipped file as YAML and changes it structurally, never as
text, so whatever rules the file holds (and their modes) are the rules the demo runs:

- **endpoints by target kind**: supervisor targets get the demo's supervisord URL, their
  worker's program and health URL; http targets of the web group the worker's host and
  port (the path is kept); process targets a command-line pattern matching exactly their
  worker; postgres the demo's DSN (``canary``, ``applications``, ``tables`` are kept);
  redis the demo's URL (the database index is kept); the log directory target whose path
  holds ``log`` the demo's log directory (with its quota when it is not a tmpfs), every
  other log directory an empty directory of its own;
- **memory limits**: a supervisor target's ``memory_limit`` becomes the demo worker's
  memory budget (the RSS at which it dies, as the OOM killer would end it);
- **workers**: the file's web group (the targets sharing the supervisor target's
  ``group``) is cloned per demo worker when the file declares one supervisor target —
  ``web`` becomes ``web-1`` and ``web-2``, ``web-http`` becomes ``web-1-http`` … — and a
  rule naming one of them (an action's ``target``, a ``match`` on ``target``) is cloned
  per worker as ``RULE.web-1`` …; a file declaring one supervisor target per worker is
  mapped in order;
- **the clock**: every duration an operator sets — job intervals (at least 1 s), rule
  holds (``for``), ``window``, ``baseline``, ``repeat`` (set or default), ``horizon``,
  gate overrides (not ``timeout``), duration parameters of actions — is divided by
  ``speedup``.
  Crontab jobs and the maintenance job (real-clock maintenance windows) are switched
  off; forecast horizons (``within: 4h``) stay real: a disk that fills in a minute is
  due within the hour.

Every change is listed in ``RenderedPipeline.notes`` (the demo prints them).
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from autofix.config import Settings, parse_duration
from autofix.errors import ConfigError
from autofix.pipeline import Pipeline, Rule, load_pipeline
from autofix.targets import GateOverrides

#: Shortest job interval the demo schedules (a 2-core machine runs it beside the stack).
MIN_INTERVAL = timedelta(seconds=1)
#: Gate overrides that are physical time, not policy: never compressed.
_PHYSICAL_GATES = {"timeout"}
#: Durations that must not drop below what a real restart or re-read needs.
_FLOORED_GATES = {"verify_wait": timedelta(seconds=1)}
#: Settings (AUTOFIX_*) the demo compresses like the file's durations.
COMPRESSED_SETTINGS = (
    "fix_cooldown",
    "fix_backoff_base",
    "fix_backoff_max",
    "fix_healthy_reset",
    "fix_runs_window",
    "fix_flap_window",
    "fix_unhealthy_window",
    "fix_breaker_hold",
    "fix_approval_ttl",
    "fix_verify_wait",
    "fix_settle",
    "fix_outcome_window",
    "kpi_manual_mttr",
    "predict_lookback",
)


@dataclass(frozen=True)
class WorkerEndpoint:
    """One web worker of the demo, as the pipeline sees it."""

    name: str  # target name, e.g. web-1
    program: str  # supervisord program
    health_url: str
    cmdline: str  # regular expression matching its argv only
    memory_limit: float | None = None  # RSS at which the worker dies (its OOM point)


@dataclass(frozen=True)
class Endpoints:
    """Where the demo's components listen and live."""

    supervisor_url: str
    workers: list[WorkerEndpoint]
    postgres_dsn: str
    redis_url: str
    logs: Path
    logs_quota: float | None
    scratch: Path  # parent of the empty directories other log-directory targets get


@dataclass
class RenderedPipeline:
    """The demo's pipeline document, where it came from, and what was changed."""

    source: Path
    document: dict[str, Any]
    speedup: float
    notes: list[str] = field(default_factory=list)

    def write(self, path: Path) -> Pipeline:
        """Write the document to ``path`` and load it (validated, as `autofix serve` would)."""
        path.write_text(
            f"# Rendered by `autofix demo` from {self.source}; do not edit.\n"
            + yaml.safe_dump(self.document, sort_keys=False),
            encoding="utf-8",
        )
        return load_pipeline(path)


def fmt(span: timedelta) -> str:
    """A duration the pipelines file reads back: ``2s``, ``500ms``."""
    ms = round(span.total_seconds() * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def compress(value: object, speedup: float, floor: timedelta = timedelta(0)) -> str:
    """A duration divided by ``speedup`` (at least ``floor``), spelled for YAML."""
    span = parse_duration(value) / speedup
    return fmt(max(span, floor))


def compressed_settings(speedup: float) -> dict[str, str]:
    """``AUTOFIX_*`` values for the demo: the default of each compressed setting / speedup.

    The forecast lookback is the exception: the history is read in buckets of
    lookback / 2016 (5 minutes for the default week), and 7 days / 60 would read the
    demo's 1-second samples in 5-second buckets — a leak that kills a worker in 30 s would
    be six points. The demo runs for minutes, so a lookback of 2016 collection intervals
    (34 minutes) holds all of it and reads it at the resolution it was collected at.
    """
    from autofix.predict import LOOKBACK_BUCKETS

    out = {}
    for name in COMPRESSED_SETTINGS:
        default = Settings.model_fields[name].default
        floor = _FLOORED_GATES.get(name.removeprefix("fix_"), timedelta(0))
        value = max(default / speedup, floor)
        if name == "predict_lookback":
            value = min(value, LOOKBACK_BUCKETS * MIN_INTERVAL)
        out[f"AUTOFIX_{name.upper()}"] = fmt(value)
    return out


def _duration_fields(model: type[Any]) -> set[str]:
    names = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        args = typing.get_args(annotation)
        if annotation is timedelta or timedelta in args:
            names.add(name)
    return names


def _compress_gates(gates: Any, speedup: float) -> Any:
    if not isinstance(gates, dict):
        return gates
    out = dict(gates)
    for name in _duration_fields(GateOverrides) - _PHYSICAL_GATES:
        if out.get(name) is not None:
            out[name] = compress(out[name], speedup, _FLOORED_GATES.get(name, timedelta(0)))
    return out


def _compress_params(action: dict[str, Any], speedup: float) -> None:
    from autofix.actions.registry import ACTIONS

    cls = ACTIONS.get(str(action.get("action")))
    params = action.get("params")
    if cls is None or not isinstance(params, dict):
        return
    for name in _duration_fields(cls.params_model) & set(params):
        params[name] = compress(params[name], speedup)


def _with_host(url: str, netloc_of: str) -> str:
    """``url`` with the scheme, host and port of ``netloc_of`` (path and query kept)."""
    mine, theirs = urlsplit(url), urlsplit(netloc_of)
    return urlunsplit((theirs.scheme, theirs.netloc, mine.path, mine.query, mine.fragment))


def render_pipeline(source: Path, endpoints: Endpoints, speedup: float = 60.0) -> RenderedPipeline:
    """The shipped pipelines file, pointed at ``endpoints``, its clock ``speedup`` × faster."""
    load_pipeline(source)  # a broken file is reported as such, not as a demo failure
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    doc: dict[str, Any] = copy.deepcopy(raw)
    rendered = RenderedPipeline(source, doc, speedup)
    notes = rendered.notes
    targets: list[dict[str, Any]] = list(doc.get("targets") or [])

    web = _web_group(targets, endpoints)
    renamed: dict[str, list[str]] = {}  # a file target → the demo targets standing for it
    out_targets: list[dict[str, Any]] = []
    worker_of: dict[str, int] = {}  # a clone's name → its worker's index
    for target in targets:
        name = str(target["name"])
        worker_targets = web.get(name)
        if worker_targets is None:
            mapped = _point(target, None, endpoints, notes)
            if mapped is not None:
                out_targets.append(mapped)
            continue
        renamed[name] = []
        for index, (worker, new_name) in enumerate(worker_targets):
            worker_of[new_name] = index
            clone = copy.deepcopy(target)
            clone["name"] = new_name
            mapped = _point(clone, worker, endpoints, notes)
            if mapped is not None:
                out_targets.append(mapped)
                renamed[name].append(new_name)
    for target in out_targets:
        _expand_references(target, renamed, worker_of.get(str(target["name"])))
        if "gates" in target:
            target["gates"] = _compress_gates(target["gates"], speedup)
        recovery = target.get("recovery")
        if isinstance(recovery, dict):
            if "gates" in recovery:
                recovery["gates"] = _compress_gates(recovery["gates"], speedup)
            for action in recovery.get("actions") or []:
                _compress_params(action, speedup)
    doc["targets"] = out_targets
    clones = {old: new for old, new in renamed.items() if new != [old]}
    if clones:
        notes.append(
            "web group cloned per worker: "
            + ", ".join(f"{old} → {', '.join(new)}" for old, new in clones.items())
        )

    doc["rules"] = _rules(list(doc.get("rules") or []), clones, endpoints, speedup, notes)
    doc["gates"] = {a: _compress_gates(g, speedup) for a, g in (doc.get("gates") or {}).items()}
    doc["jobs"] = _jobs(doc.get("jobs") or {}, speedup, notes)
    notes.append(
        f"clock ×{speedup:g}: rule holds, repeats, horizons, gate windows and action "
        "durations divided by it; forecast horizons (within: 1h/4h/24h/4d) stay real"
    )
    return rendered


def _web_group(
    targets: list[dict[str, Any]], endpoints: Endpoints
) -> dict[str, list[tuple[WorkerEndpoint, str]]]:
    """File target name → [(worker, demo target name)] for the web group."""
    supervised = [t for t in targets if t.get("kind") == "supervisor"]
    workers = endpoints.workers
    if not supervised:
        return {}
    if len(supervised) == len(workers) and len(workers) > 1:
        out: dict[str, list[tuple[WorkerEndpoint, str]]] = {}
        for target, worker in zip(supervised, workers, strict=True):
            out[str(target["name"])] = [(worker, str(target["name"]))]
            program = str(target.get("program", ""))
            port = urlsplit(str(target.get("health_url", ""))).port
            for other in targets:
                if (
                    other.get("kind") == "http"
                    and port
                    and urlsplit(str(other["url"])).port == port
                ):
                    out[str(other["name"])] = [(worker, str(other["name"]))]
                if (
                    other.get("kind") == "process"
                    and program
                    and program in str(other.get("cmdline", ""))
                ):
                    out[str(other["name"])] = [(worker, str(other["name"]))]
        return out
    if len(supervised) != 1:
        raise ConfigError(
            f"the demo runs {len(workers)} web workers; the pipelines file declares "
            f"{len(supervised)} supervisor targets (give one, or one per worker)"
        )
    lead = supervised[0]
    group = lead.get("group")
    members = [t for t in targets if t is lead or (group is not None and t.get("group") == group)]
    lead_name = str(lead["name"])
    out = {}
    for member in members:
        name = str(member["name"])
        clones = []
        for worker in workers:
            suffix = name[len(lead_name) :] if name.startswith(lead_name) else f"-{name}"
            clones.append((worker, worker.name + suffix))
        out[name] = clones
    return out


def _point(
    target: dict[str, Any], worker: WorkerEndpoint | None, ep: Endpoints, notes: list[str]
) -> dict[str, Any] | None:
    """The target pointed at the demo's component, or None when the demo has none."""
    kind, name = target.get("kind"), target.get("name")
    if kind == "supervisor" and worker is not None:
        target["url"] = ep.supervisor_url
        target["program"] = worker.program
        target["health_url"] = _with_host(
            str(target.get("health_url", "/health")), worker.health_url
        )
        if worker.memory_limit is not None and "memory_limit" in target:
            # The file's limit is its workers' OOM point; the demo's workers die at theirs.
            notes.append(
                f"target {target.get('name')}: memory_limit {target['memory_limit']} → "
                f"{worker.memory_limit / 1e6:.0f} MB (where the demo's worker dies)"
            )
            target["memory_limit"] = int(worker.memory_limit)
    elif kind == "http" and worker is not None:
        target["url"] = _with_host(str(target["url"]), worker.health_url)
    elif kind == "process" and worker is not None:
        for key in ("pidfile", "process_name"):
            target.pop(key, None)
        target["cmdline"] = worker.cmdline
    elif kind == "postgres":
        target["dsn"] = ep.postgres_dsn
    elif kind == "redis":
        db = urlsplit(str(target.get("url", ""))).path or "/0"
        target["url"] = ep.redis_url.rsplit("/", 1)[0] + db
    elif kind == "tcp":
        port = int(target.get("port", 0))
        found = {5432: ep.postgres_dsn, 6379: ep.redis_url}.get(port)
        if found is None:
            notes.append(f"target {name} (tcp :{port}) left out: nothing like it in the demo")
            return None
        target["host"], target["port"] = "127.0.0.1", urlsplit(found).port
    elif kind == "logdir":
        if "log" in str(name) or "/log" in str(target.get("path", "")):
            target["path"] = str(ep.logs)
            if ep.logs_quota is not None:
                target["capacity"] = ep.logs_quota
        else:
            scratch = ep.scratch / str(name)
            scratch.mkdir(parents=True, exist_ok=True)
            target["path"] = str(scratch)
    elif kind == "command":
        pass  # declared commands run only through their rules' modes (approve in the file)
    else:
        notes.append(f"target {name} ({kind}) left out: nothing like it in the demo")
        return None
    return target


def _expand_references(
    target: dict[str, Any], renamed: dict[str, list[str]], worker: int | None
) -> None:
    """Lists of target names (``depends_on`` …) naming a cloned target: every clone, or
    the same worker's clone when ``target`` is itself one worker's (``web-1-http``
    depends on ``web-1``, not on every worker)."""
    for key, value in list(target.items()):
        if key in {"name", "actions"} or not isinstance(value, list):
            continue
        if all(isinstance(v, str) for v in value) and any(v in renamed for v in value):
            target[key] = [
                n
                for v in value
                for n in (
                    [renamed[v][worker]]
                    if v in renamed and worker is not None and worker < len(renamed[v])
                    else renamed.get(v, [v])
                )
            ]


def _references(rule: dict[str, Any], names: set[str]) -> set[str]:
    found = set()
    match = (rule.get("when") or {}).get("match") or {}
    if match.get("target") in names:
        found.add(str(match["target"]))
    for action in rule.get("actions") or []:
        if action.get("target") in names:
            found.add(str(action["target"]))
    return found


def _rules(
    rules: list[dict[str, Any]],
    clones: dict[str, list[str]],
    ep: Endpoints,
    speedup: float,
    notes: list[str],
) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        copies = [rule]
        if _references(rule, set(clones)):
            copies = []
            for index, worker in enumerate(ep.workers):
                clone = copy.deepcopy(rule)
                clone["name"] = f"{rule['name']}.{worker.name}"
                when = clone.get("when") or {}
                match = when.get("match") or {}
                if match.get("target") in clones:
                    match["target"] = clones[match["target"]][index]
                for action in clone.get("actions") or []:
                    if action.get("target") in clones:
                        action["target"] = clones[action["target"]][index]
                copies.append(clone)
            notes.append(
                f"rule {rule['name']} cloned per worker: "
                + ", ".join(str(c["name"]) for c in copies)
            )
        for rule_copy in copies:
            when = rule_copy.get("when") or {}
            for key in ("for", "window", "baseline"):
                if key in when:
                    when[key] = compress(when[key], speedup)
            # An unset repeat is the default's 15 minutes, which must shrink too.
            rule_copy["repeat"] = compress(
                rule_copy.get("repeat", Rule.model_fields["repeat"].default), speedup
            )
            if "horizon" in rule_copy:
                rule_copy["horizon"] = compress(rule_copy["horizon"], speedup)
            if "gates" in rule_copy:
                rule_copy["gates"] = _compress_gates(rule_copy["gates"], speedup)
            for action in rule_copy.get("actions") or []:
                _compress_params(action, speedup)
            out.append(rule_copy)
    return out


def _jobs(jobs: dict[str, Any], speedup: float, notes: list[str]) -> dict[str, Any]:
    from autofix.pipeline import DEFAULT_JOBS, JOB_NAMES

    out: dict[str, Any] = {}
    off = []
    for name in JOB_NAMES:
        spec = dict(jobs.get(name) or {})
        default = DEFAULT_JOBS[name]
        every = spec.get("every", None if "cron" in spec else default.every)
        if name == "maintenance" or every is None:
            # Maintenance windows and crontab lines are wall-clock times: no compressing.
            out[name] = {"every": "1h", "enabled": False}
            off.append(name)
            continue
        out[name] = {"every": compress(every, speedup, MIN_INTERVAL)}
        if spec.get("enabled") is False:
            out[name]["enabled"] = False
    notes.append(
        "jobs every "
        + ", ".join(f"{n} {s['every']}" for n, s in out.items() if s.get("enabled", True))
        + f"; off (wall-clock schedules): {', '.join(off)}"
    )
    return out


__all__ = [
    "COMPRESSED_SETTINGS",
    "MIN_INTERVAL",
    "Endpoints",
    "RenderedPipeline",
    "WorkerEndpoint",
    "compress",
    "compressed_settings",
    "render_pipeline",
]
