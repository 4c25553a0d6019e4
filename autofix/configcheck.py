"""``autofix config check``: every mistake in the settings and the pipelines file at once.

Loading a pipelines file stops at the first error; before a deploy an operator wants
them all, each naming the file, the line and the field path:

    pipelines/prod.yaml:14: rules[0].actions[1].action: unknown action 'files.rotate_log'
        (did you mean 'files.rotate_logs'?)

Checked: YAML syntax and duplicate keys; every field (pydantic, all errors, not only the
first); names that must refer to something — actions, targets, jobs, dependencies —
with "did you mean" from the names that exist; and whether an action can act on the
target it names (a ``service.restart`` on a ``tcp`` target can never run: the action
classes declare their target kinds). The file's cross-checks (dependency cycles,
overlapping recoveries) are reported too once the rest is clean.

Lines come from the YAML node tree (``yaml.compose``), so the data checked is built
here from those nodes; aliases are expanded within a node budget (no alias bombs).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

#: Most YAML nodes built from one file (aliases included): a bomb is refused, not built.
NODE_BUDGET = 200_000

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One mistake: where (file and line), which field, what is wrong."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def field_path(key: Sequence[str | int]) -> str:
    """``("rules", 0, "actions", 1)`` → ``rules[0].actions[1]``."""
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


class _Builder:
    """Python data from a YAML node tree, with the line of every path, and duplicate keys."""

    def __init__(self) -> None:
        self.lines: dict[PathKey, int] = {}
        self.duplicates: list[tuple[PathKey, int]] = []
        self._nodes = 0
        self._scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node, at: PathKey = ()) -> Any:
        self._nodes += 1
        if self._nodes > NODE_BUDGET:
            raise _TooBigError
        self.lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self._scalars.flatten_mapping(node)  # `<<: *base` merge keys, as safe_load does
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalars.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    key = str(key)
                if key in out:
                    self.duplicates.append(((*at, key), key_node.start_mark.line + 1))
                self.lines[(*at, key)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, (*at, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*at, i)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node, deep=True)

    def line(self, key: Sequence[str | int]) -> int | None:
        """The line of ``key``, or of the nearest enclosing path that has one."""
        parts = tuple(key)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get(())


class _TooBigError(Exception):
    pass


def check_pipeline(path: Path) -> list[Problem]:
    """Every problem of the pipelines file at ``path`` (empty: it loads and is consistent)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [Problem(name, None, "", "pipelines file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem(name, None, "", f"cannot read: {getattr(exc, 'strerror', exc)}")]
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return [Problem(name, line, "", f"invalid YAML: {getattr(exc, 'problem', exc)}")]
    builder = _Builder()
    try:
        data = builder.build(root) if root is not None else {}
    except _TooBigError:
        return [Problem(name, None, "", f"more than {NODE_BUDGET} YAML nodes (an alias bomb?)")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return [Problem(name, line, "", f"invalid YAML: {getattr(exc, 'problem', exc)}")]
    problems = [
        Problem(name, line, field_path(key), "duplicate key (the later value would win)")
        for key, line in builder.duplicates
    ]
    if not isinstance(data, dict):
        return [*problems, Problem(name, builder.line(()), "", "top level must be a mapping")]
    fields, cross_check = _validate(data)
    reported: set[str] = set()
    for key, message in fields:
        where = field_path(key)
        reported.add(where)
        problems.append(Problem(name, builder.line(key), where, message))
    for key, message in _references(data):
        where = field_path(key)
        if any(where == r or where.startswith(f"{r}.") for r in reported):
            continue  # the field itself is already reported as invalid
        reported.add(where)
        problems.append(Problem(name, builder.line(key), where, message))
    if cross_check is not None and not problems:
        key, message = cross_check
        problems.append(Problem(name, builder.line(key), field_path(key), message))
    return sorted(problems, key=lambda p: p.line or 0)


_CROSS = re.compile(r"^([a-z_]+(?:\[\d+\]|\.[A-Za-z_]+)*): (.*)$", re.DOTALL)


def _parse_path(text: str) -> PathKey:
    parts: list[str | int] = []
    for name, index in re.findall(r"([A-Za-z_]+)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _validate(data: dict[str, Any]) -> tuple[list[tuple[PathKey, str]], tuple[PathKey, str] | None]:
    """Field errors (all of them), and the first cross-check error when fields are valid."""
    from autofix.jobnames import JOB_NAMES
    from autofix.pipeline import _CONDITION_TYPES, Pipeline
    from autofix.targets import TARGET_KINDS

    try:
        Pipeline.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    except RecursionError:
        return [((), "nested too deeply")], None
    else:
        return [], None
    fields: list[tuple[PathKey, str]] = []
    for error in errors:
        loc = tuple(error["loc"])
        message = " ".join(str(error["msg"]).removeprefix("Value error, ").split())
        if loc and loc[-1] == "[key]" and len(loc) >= 2 and loc[0] == "jobs":
            job = str(loc[-2])
            fields.append((loc[:-1], f"unknown job {job!r}{suggest(job, JOB_NAMES)}"))
            continue
        if error["type"] == "union_tag_invalid":
            tag = str((error.get("ctx") or {}).get("tag", ""))
            known = TARGET_KINDS if loc and loc[0] == "targets" else _CONDITION_TYPES
            what = "kind" if loc and loc[0] == "targets" else "type"
            key = tuple(p for p in loc if p not in TARGET_KINDS and p not in _CONDITION_TYPES)
            fields.append(((*key, what), f"unknown {what} {tag!r}{suggest(tag, known)}"))
            continue
        if not loc or (len(loc) == 0):
            match = _CROSS.match(message)
            if match:  # a cross-check names its own path: "targets[1].name: duplicate …"
                if len(errors) == 1:
                    return [], (_parse_path(match.group(1)), match.group(2))
                fields.append((_parse_path(match.group(1)), match.group(2)))
                continue
        key = tuple(p for p in loc if p not in TARGET_KINDS and p not in _CONDITION_TYPES)
        fields.append((key, message))
    return fields, None


def _references(data: Mapping[str, Any]) -> list[tuple[PathKey, str]]:
    """Names that must refer to something, and actions on targets they cannot act on."""
    from autofix.actions.base import kind_names
    from autofix.actions.registry import ACTIONS

    targets = _list(data.get("targets"))
    kinds: dict[str, str] = {}
    for t in targets:
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            kinds.setdefault(t["name"], str(t.get("kind", "")))
    found: list[tuple[PathKey, str]] = []

    def action(at: PathKey, name: Any, on: Any) -> None:
        if not isinstance(name, str):
            return
        cls = ACTIONS.get(name)
        if cls is None:
            found.append((at, f"unknown action {name!r}{suggest(name, ACTIONS)}"))
            return
        if isinstance(on, str) and on in kinds:
            allowed = kind_names(cls.target_kinds)
            if kinds[on] and kinds[on] not in allowed:
                found.append(
                    (
                        at,
                        f"{name} cannot act on {on!r} (kind {kinds[on]}); it acts on "
                        f"{', '.join(allowed)} targets",
                    )
                )

    def target(at: PathKey, name: Any) -> None:
        if isinstance(name, str) and name not in kinds:
            found.append((at, f"no target named {name!r}{suggest(name, kinds)}"))

    for i, t in enumerate(targets):
        if not isinstance(t, dict):
            continue
        own = t.get("name")
        for j, allowed in enumerate(_list(t.get("actions"))):
            action(("targets", i, "actions", j), allowed, own)
        for j, dep in enumerate(_list(t.get("depends_on"))):
            target(("targets", i, "depends_on", j), dep)
        recovery = t.get("recovery")
        if isinstance(recovery, dict):
            for j, spec in enumerate(_list(recovery.get("actions"))):
                if isinstance(spec, dict):
                    at: PathKey = ("targets", i, "recovery", "actions", j)
                    target((*at, "target"), spec.get("target"))
                    action((*at, "action"), spec.get("action"), spec.get("target") or own)
    for i, rule in enumerate(_list(data.get("rules"))):
        if not isinstance(rule, dict):
            continue
        for j, spec in enumerate(_list(rule.get("actions"))):
            if isinstance(spec, dict):
                at = ("rules", i, "actions", j)
                target((*at, "target"), spec.get("target"))
                action((*at, "action"), spec.get("action"), spec.get("target"))
    maintenance = data.get("maintenance")
    if isinstance(maintenance, dict):
        target(("maintenance", "patch_target"), maintenance.get("patch_target"))
    return found


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


__all__ = ["NODE_BUDGET", "Problem", "check_pipeline", "field_path", "suggest"]
