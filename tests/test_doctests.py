"""Every docstring example in autofix/ runs as a doctest: an example that drifted from the
code fails the suite. Modules are found by their source (any `>>>`), so a new example is
picked up without listing it here."""

from __future__ import annotations

import doctest
import importlib
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "autofix"


def modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


MODULES = modules_with_examples()


def test_modules_with_examples_are_found() -> None:
    assert "autofix.executor" in MODULES
    assert len(MODULES) >= 20, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Examples that write files write them here, never into the checkout.
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("AUTOFIX_")]:
        monkeypatch.delenv(key)
    module = importlib.import_module(name)
    examples = [e for test in doctest.DocTestFinder().find(module) for e in test.examples]
    assert examples, f"{name}: `>>>` in its source, but no example doctest can find"
    result = doctest.testmod(module, report=True)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
    # An example that cannot run here (it needs a server or a full stack) says so itself.
    skipped = [e for e in examples if e.options.get(doctest.SKIP)]
    assert result.attempted + len(skipped) == len(examples), name
