"""Strict YAML for configuration files: safe types, no alias bombs, no duplicate keys.

``load_yaml(path)`` reads a file people write by hand and raises ConfigError naming the
file and line of anything wrong: bytes that are not UTF-8, invalid YAML, a value the
safe loader cannot build (a date like 2024-13-45), and what turns a small file into a
huge or ambiguous one — more than ``MAX_ALIASES`` aliases, aliases expanding past
``MAX_NODES`` nodes, recursive aliases, a key given twice in one mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autofix.errors import ConfigError

MAX_ALIASES = 100
MAX_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses what turns a small file into a huge or ambiguous one.

    An alias bomb (``&a [*a, *a …]`` nested) expands to gigabytes when the pipeline is
    validated and serialised; a duplicate key (``path: /safe`` then ``path: /``) silently
    keeps the last. Both are refused with the line, as are more than ``MAX_ALIASES``
    aliases and recursive ones.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name)", mark
                )
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node, MAX_NODES)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may be overridden: that is what merging means
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: the base class says so
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {first.line + 1})",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep)


def _check_expansion(root: Any, limit: int) -> None:
    """Refuse a node graph that expands (aliases followed) past ``limit`` nodes, or loops."""
    if root is None:
        return
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > limit:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"aliases expand this document past {limit} nodes (an alias bomb?)",
                    node.start_mark,
                )
            continue
        if key in sizes:
            continue
        if key in active:
            raise yaml.composer.ComposerError(
                None, None, "a recursive alias (an anchor used inside itself)", node.start_mark
            )
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    line = f" line {mark.line + 1}:" if mark is not None else ""
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    problem = " ".join(str(problem).split())
    return ConfigError(f"{path}:{line} invalid YAML: {problem}")


def load_yaml(path: Path, what: str = "file") -> Any:
    """The document in ``path`` (None when empty), or ConfigError with file and line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})"
        ) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise _yaml_problem(path, exc) from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-13-45
        raise ConfigError(f"{path}: invalid YAML value: {' '.join(str(exc).split())}") from None
