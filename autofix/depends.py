"""Dependencies between targets: which decisions a troubled dependency inhibits.

Targets declare what they need (``depends_on: [news-db, cache]``). When a web worker's
database has run out of connections, the worker answers 503 and its health check fails:
that is a *symptom*, and restarting the worker is a false fix that can use up the gates
a real fault on it will need. So, like Alertmanager's inhibition rules, a decision about
a symptom is **inhibited by** a dependency that is itself in trouble — unhealthy, in a
planned stop, with a resource condition of its own holding (a rule that is not about a
symptom fires on it: its role's connections used up, its memory filling — even while
that rule's fix waits for a cooldown), waiting for or running a fix, or fixed so recently
that its dependents may still be recovering (``AUTOFIX_FIX_SETTLE``). The inhibited
decision is recorded, not executed, and is evaluated again on the next run: once the
dependency's fix has settled the symptom is either gone or the target's own, and then it
gets its own fix.

A dependency whose own check passes is in trouble all the same when two of its dependents
that do not depend on each other name it in their failures (both web workers answer 503
``"failing": ["redis"]`` while Redis still answers PING but refuses writes):
``named_failing``. One dependent alone naming it may be its own broken connection pool.

A target's own state inhibits too: nothing is done to a target in a planned stop or
start, or while a fix on it is pending, running or still settling.

Pure: ``TargetStates`` is built by the service from the store and the latest health
checks; ``inhibitor`` answers from it.

>>> from autofix.pipeline import Pipeline
>>> p = Pipeline.model_validate({"targets": [
...     {"name": "db", "kind": "tcp", "host": "h", "port": 5432},
...     {"name": "web", "kind": "http", "url": "http://w/", "depends_on": ["db"]}]})
>>> states = TargetStates(unhealthy={"db": "connection refused"})
>>> inhibitor(p, symptom="web", acting_on=["web"], states=states)
Inhibitor(target='db', reason='db is unhealthy: connection refused')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from autofix.pipeline import Pipeline


@dataclass(frozen=True)
class TargetStates:
    """What is known about each target now (target name → why)."""

    unhealthy: Mapping[str, str] = field(default_factory=dict)
    planned: Mapping[str, str] = field(default_factory=dict)
    running: Mapping[str, str] = field(default_factory=dict)
    pending: Mapping[str, str] = field(default_factory=dict)
    settling: Mapping[str, str] = field(default_factory=dict)
    #: Targets a resource condition (a rule that is not about a symptom) holds on now.
    firing: Mapping[str, str] = field(default_factory=dict)

    def without_unhealthy(self, name: str) -> TargetStates:
        """These states, except that ``name`` is not counted as unhealthy."""
        return TargetStates(
            {k: v for k, v in self.unhealthy.items() if k != name},
            self.planned,
            self.running,
            self.pending,
            self.settling,
            self.firing,
        )


@dataclass(frozen=True)
class Inhibitor:
    """The target whose state explains a symptom, and how."""

    target: str
    reason: str


def dependencies(pipeline: Pipeline, name: str) -> list[str]:
    """Every target ``name`` depends on, directly or through others, nearest first.

    >>> from autofix.pipeline import Pipeline
    >>> p = Pipeline.model_validate({"targets": [
    ...     {"name": "db", "kind": "tcp", "host": "h", "port": 1},
    ...     {"name": "app", "kind": "tcp", "host": "h", "port": 2, "depends_on": ["db"]},
    ...     {"name": "web", "kind": "http", "url": "http://w/", "depends_on": ["app"]}]})
    >>> dependencies(p, "web")
    ['app', 'db']
    """
    seen: list[str] = []
    queue = [name]
    while queue:
        current = pipeline.target(queue.pop(0))
        if current is None:
            continue
        for dep in current.depends_on:
            if dep not in seen and dep != name:
                seen.append(dep)
                queue.append(dep)
    return seen


def dependents(pipeline: Pipeline, name: str) -> list[str]:
    """Every target that depends on ``name``, directly or through others."""
    return [t.name for t in pipeline.targets if name in dependencies(pipeline, t.name)]


def named_failing(pipeline: Pipeline, reports: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """The dependencies named failing by at least two independent dependents, with who
    named them. ``reports`` are (dependent, the dependency its failure names) pairs;
    dependents where one depends on the other (a worker and its HTTP endpoint) count once.

    >>> from autofix.pipeline import Pipeline
    >>> p = Pipeline.model_validate({"targets": [
    ...     {"name": "cache", "kind": "tcp", "host": "h", "port": 6379},
    ...     {"name": "web-1", "kind": "tcp", "host": "h", "port": 1, "depends_on": ["cache"]},
    ...     {"name": "web-1-http", "kind": "http", "url": "http://w/",
    ...      "depends_on": ["web-1", "cache"]},
    ...     {"name": "web-2", "kind": "tcp", "host": "h", "port": 2, "depends_on": ["cache"]}]})
    >>> named_failing(p, [("web-1", "cache"), ("web-1-http", "cache")])
    {}
    >>> named_failing(p, [("web-1", "cache"), ("web-2", "cache")])
    {'cache': ['web-1', 'web-2']}
    """
    by_dependency: dict[str, set[str]] = {}
    for dependent, dependency in reports:
        by_dependency.setdefault(dependency, set()).add(dependent)
    out: dict[str, list[str]] = {}
    for dependency, names in by_dependency.items():
        groups: list[set[str]] = []
        for name in sorted(names):
            related = [
                g
                for g in groups
                if any(
                    other in dependencies(pipeline, name) or name in dependencies(pipeline, other)
                    for other in g
                )
            ]
            merged = {name}.union(*related)
            groups = [g for g in groups if g not in related] + [merged]
        if len(groups) >= 2:
            out[dependency] = sorted(names)
    return out


def inhibitor(
    pipeline: Pipeline,
    *,
    symptom: str | None,
    acting_on: Sequence[str],
    states: TargetStates,
    symptom_only: bool = True,
) -> Inhibitor | None:
    """Why a decision about ``symptom`` that would act on ``acting_on`` must wait, or None.

    The targets acted on must not be in a planned stop or start, nor have a fix running
    or settling (a fix waiting for approval does not hold them: a real fault must not
    wait for a human's answer to another question). When ``symptom_only`` (the condition
    is a symptom: a failed health check, a probe error, latency), every dependency of the
    symptom's target and of the targets acted on — other than those targets themselves —
    must be out of trouble too. Resource conditions (a disk filling, a leak) are not symptoms of a
    dependency and pass ``symptom_only=False``.
    """
    for name in acting_on:
        if name in states.planned:
            return Inhibitor(name, f"{name}: {states.planned[name]}")
        if name in states.running:
            return Inhibitor(name, f"{name}: {states.running[name]}")
        if name in states.settling:
            return Inhibitor(name, f"{name}: {states.settling[name]}")
    if not symptom_only:
        return None
    return explained_by(pipeline, symptom=symptom, acting_on=acting_on, states=states)


def explained_by(
    pipeline: Pipeline, *, symptom: str | None, acting_on: Sequence[str], states: TargetStates
) -> Inhibitor | None:
    """The dependency in trouble that explains a symptom of ``symptom`` (or of the targets
    acted on), other than those targets themselves; None when no dependency does."""
    own = set(acting_on)
    for dep in _deps_of([*([symptom] if symptom else []), *acting_on], pipeline):
        if dep in own:
            continue
        why = _trouble(dep, states)
        if why is not None:
            return Inhibitor(dep, f"{dep} {why}")
    return None


def _deps_of(names: Iterable[str], pipeline: Pipeline) -> list[str]:
    out: list[str] = []
    for name in names:
        for dep in dependencies(pipeline, name):
            if dep not in out:
                out.append(dep)
    return out


def _trouble(name: str, states: TargetStates) -> str | None:
    if name in states.unhealthy:
        return f"is unhealthy: {states.unhealthy[name]}"
    if name in states.planned:
        return f"is in a planned stop/start: {states.planned[name]}"
    if name in states.running:
        return f"is being fixed: {states.running[name]}"
    if name in states.pending:
        return f"has a fix waiting: {states.pending[name]}"
    if name in states.firing:
        return f"has a condition of its own: {states.firing[name]}"
    if name in states.settling:
        return f"was just fixed: {states.settling[name]}"
    return None


__all__ = [
    "Inhibitor",
    "TargetStates",
    "dependencies",
    "dependents",
    "explained_by",
    "inhibitor",
    "named_failing",
]
