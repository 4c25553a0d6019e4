"""Pipelines file: validated on load, errors name the file and the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from autofix.errors import ConfigError
from autofix.pipeline import HttpTarget, LogDirTarget, load_pipeline

ROOT = Path(__file__).parents[1]


def test_shipped_local_pipeline_loads() -> None:
    pipeline = load_pipeline(ROOT / "pipelines" / "local.yaml")
    assert any(isinstance(t, LogDirTarget) for t in pipeline.targets)


def test_valid_targets(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(
        "targets:\n"
        "  - {name: web, kind: http, url: 'http://127.0.0.1:8080/health'}\n"
        "  - {name: db, kind: tcp, host: 127.0.0.1, port: 5432}\n"
    )
    pipeline = load_pipeline(file)
    assert isinstance(pipeline.targets[0], HttpTarget)
    assert pipeline.targets[1].name == "db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("targets:\n  - {name: web, kind: http, url: 'ftp://x'}\n", "targets[0].url:"),
        ("targets:\n  - {name: web, kind: tcp, host: h, port: 70000}\n", "targets[0].port:"),
        ("targets:\n  - {name: 'a;rm -rf /', kind: tcp, host: h, port: 1}\n", "targets[0].name:"),
        ("targets:\n  - {name: p, kind: process}\n", "exactly one of pidfile"),
        ("targets:\n  - {name: x, kind: ufo}\n", "targets[0]:"),
        ("targets: [\n", "invalid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("targets: []\nrulez: []\n", "rulez"),
        (
            "targets:\n  - {name: a, kind: tcp, host: h, port: 1}\n"
            "  - {name: a, kind: tcp, host: h, port: 2}\n",
            "duplicate target 'a'",
        ),
    ],
)
def test_bad_pipeline_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(file)
    assert str(info.value).startswith(f"{file}:")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_pipeline(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline(tmp_path / "none.yaml")


def test_shipped_news_delivery_pipeline_has_the_seed_and_predictive_rules() -> None:
    pipeline = load_pipeline(ROOT / "pipelines" / "news-delivery.yaml")
    kinds = {rule.name: rule.when.type for rule in pipeline.rules}
    for reactive in (
        "cpu-high",
        "memory-high",
        "disk-high",
        "service-unresponsive",
        "db-connection-failed",
    ):
        assert kinds[reactive] == "threshold"
    assert kinds["disk-exhaustion-4h"] == "exhaustion"
    assert kinds["memory-exhaustion"] == "exhaustion"
    assert kinds["query-slowdown"] == "anomaly"
    assert kinds["query-performance"] == "baseline"
    assert kinds["log-growth"] == "threshold"
    assert kinds["security-patches"] == "threshold"
    web = pipeline.target("web")
    assert web is not None
    assert web.recovery is not None
    # Every rule has an ordered fix to try, and every named target is declared.
    for rule in pipeline.rules:
        assert rule.actions, rule.name
    local = load_pipeline(ROOT / "pipelines" / "local.yaml")
    assert {rule.mode for rule in local.rules} == {"shadow"}


# -- issue 11: what a hostile or careless file must not get through --------------------

_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "rules:\n  - name: r\n    when: {type: alert, alertname: x}\n"
    + "    actions: [{action: command.run, params: {v: *i}}]\n"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_BOMB, "line 6: invalid YAML: aliases expand this document past 100000 nodes"),
        ("a: &a [1]\nb: [" + ", ".join(["*a"] * 101) + "]\n", "more than 100 aliases"),
        ("a: &a [*a]\n", "recursive alias"),
        (
            "targets:\n  - name: t\n    kind: logdir\n    path: /safe\n    path: /\n",
            "line 5: invalid YAML: duplicate key 'path' (first on line 4)",
        ),
        ("targets: []\ntargets: []\n", "line 2: invalid YAML: duplicate key 'targets'"),
        (
            "targets:\n  - {name: t, kind: logdir, path: /x, actions: [files.rm_rf]}\n",
            "targets[0].actions[0]: unknown action 'files.rm_rf'",
        ),
        (
            "targets:\n  - {name: c, kind: command, argv: [/bin/true, '{v}'], "
            "params: {v: '[0-9'}}\n",
            "targets[0].params.v: invalid regular expression",
        ),
        (
            "targets:\n  - {name: p, kind: process, cmdline: '(unclosed'}\n",
            "targets[0].cmdline: invalid regular expression",
        ),
        ("jobs: {collect: {every: 2024-13-45}}\n", "invalid YAML value: month must be in 1..12"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_hostile_pipelines_are_refused_at_load(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_pipeline(file)
    assert str(info.value).startswith(f"{file}:")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_merge_keys_and_a_few_aliases_still_work(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(
        "targets:\n"
        "  - {name: a, kind: tcp, host: h, port: 1, gates: &slow {cooldown: 1h, mode: approve}}\n"
        "  - {name: b, kind: tcp, host: h, port: 2, gates: {<<: *slow, mode: auto}}\n"
    )
    a, b = load_pipeline(file).targets
    assert a.gates is not None
    assert b.gates is not None
    assert (a.gates.mode, b.gates.mode, b.gates.cooldown) == ("approve", "auto", a.gates.cooldown)


def test_a_pipelines_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_bytes(b"targets: []\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"p.yaml: line 2: not UTF-8 text \(byte 0xe9\)"):
        load_pipeline(file)
