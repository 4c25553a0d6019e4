"""deploy/prometheus: the alert rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), name only metrics autofix exports, and link runbooks that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from autofix.api.metrics import _families
from tests.conftest import _under_ci

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "autofix-rules.yml"
TESTS = ROOT / "deploy" / "prometheus" / "autofix-rules.test.yml"
#: Metrics the rules use that another part exports (Prometheus, the process, pause).
OTHERS = {"up", "process_start_time_seconds", "autofix_paused"}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if _under_ci():
            pytest.fail("CI=true but promtool is missing (apt-get install prometheus)")
        pytest.skip("promtool not installed")
    return found


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = _run("check", "rules", str(RULES), cwd=RULES.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in done.stdout


def test_promtool_unit_tests_pass_and_can_fail(tmp_path: Path) -> None:
    done = _run("test", "rules", TESTS.name, cwd=TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    # The unit tests bite: a weaker threshold in the rule makes them fail.
    (tmp_path / RULES.name).write_text(RULES.read_text().replace(">= 0.8", ">= 0.9"))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    broken = _run("test", "rules", TESTS.name, cwd=tmp_path)
    assert broken.returncode != 0
    assert "AutofixExhaustionPredicted" in broken.stdout + broken.stderr


def test_every_alert_is_tested_and_links_a_runbook_section() -> None:
    tested = set(re.findall(r"alertname: (\w+)", TESTS.read_text()))
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    headings = {line.lstrip("#").strip().lower() for line in deploy_doc.splitlines()
                if line.startswith("#")}  # fmt: skip
    for rule in _alerts():
        name = str(rule["alert"])
        assert name in tested, name
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        anchor = str(annotations["runbook_url"]).rsplit("#", 1)[1]
        assert anchor == name.lower()
        assert anchor in headings, f"docs/deploy.md has no section {name}"


def test_rules_use_only_exported_metrics() -> None:
    exported = {family.name for family in _families().values()}
    exported |= {f"{name}_total" for name in exported}  # counters are exposed with _total
    used = set()
    for rule in _alerts():
        expr = re.sub(r"\b(on|by|ignoring|group_left)\s*\([^)]*\)", "", str(rule["expr"]))
        used |= set(re.findall(r"\b([a-z_]+)(?=\{|\s|\)|$)", expr))  # label lists dropped
    metrics = {name for name in used if name.startswith(("autofix_", "process_", "up"))}
    assert metrics - OTHERS <= exported, metrics - OTHERS - exported
