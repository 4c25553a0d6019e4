"""`autofix config check` reports every mistake at once; `config schema` matches the files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import yaml

from autofix.configcheck import check_pipeline
from tests.clirun import run_autofix

ROOT = Path(__file__).parents[1]

FIVE_MISTAKES = """\
jobs:
  colect: {every: 15s}
targets:
  - name: web
    kind: supervisor
    program: web
    url: http://127.0.0.1:9001/RPC2
  - name: cache
    kind: tcp
    host: 127.0.0.1
    port: 70000
  - name: logs
    kind: logdir
    path: /var/log
rules:
  - name: r1
    when: {type: threshold, metric: probe_up, below: 1, for: 30s}
    actions:
      - {action: files.rotate_log, target: logs}
      - {action: service.restart, target: cache}
      - {action: service.restart, target: wbe}
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}


def test_five_mistakes_print_five_lines(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(FIVE_MISTAKES)
    proc = run_autofix(["config", "check", "--pipeline", str(file)], _env(tmp_path), check=2)
    lines = proc.stdout.splitlines()
    assert lines == [
        f"{file}:2: jobs.colect: unknown job 'colect' (did you mean 'collect'?)",
        f"{file}:11: targets[1].port: Input should be less than or equal to 65535",
        f"{file}:19: rules[0].actions[0].action: unknown action 'files.rotate_log' "
        "(did you mean 'files.rotate_logs'?)",
        f"{file}:20: rules[0].actions[1].action: service.restart cannot act on 'cache' "
        "(kind tcp); it acts on supervisor, systemd targets",
        f"{file}:21: rules[0].actions[2].target: no target named 'wbe' (did you mean 'web'?)",
    ]
    assert proc.stderr == ""
    as_json = run_autofix(
        ["config", "check", "--pipeline", str(file), "--json"], _env(tmp_path), check=2
    )
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert [p["line"] for p in report["problems"]] == [2, 11, 19, 20, 21]


def test_settings_mistakes_are_listed_with_the_pipeline_ones(tmp_path: Path) -> None:
    env = {
        **_env(tmp_path),
        "AUTOFIX_FIX_COLDOWN": "1m",
        "AUTOFIX_API_PORT": "99999",
        "AUTOFIX_PIPELINE": str(ROOT / "pipelines" / "local.yaml"),
    }
    proc = run_autofix(["config", "check"], env, check=2)
    assert proc.stdout.splitlines() == [
        "environment: AUTOFIX_FIX_COLDOWN: unknown setting (did you mean AUTOFIX_FIX_COOLDOWN?)",
        "environment: AUTOFIX_API_PORT: Input should be less than or equal to 65535",
    ]
    ok = run_autofix(
        ["config", "check"], {**_env(tmp_path), "AUTOFIX_PIPELINE": env["AUTOFIX_PIPELINE"]}
    )
    assert ok.stdout.startswith("ok: the settings and ")


def test_yaml_mistakes_name_their_line(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("targets: []\nrules: []\ntargets: []\n")
    assert [str(p) for p in check_pipeline(dup)] == [
        f"{dup}:3: targets: duplicate key (the later value would win)"
    ]
    broken = tmp_path / "broken.yaml"
    broken.write_text("targets:\n  - name: [\n")
    (problem,) = check_pipeline(broken)
    assert problem.line is not None
    assert "invalid YAML" in problem.message
    bomb = tmp_path / "bomb.yaml"
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    bomb.write_text("\n".join(levels) + "\n")
    (problem,) = check_pipeline(bomb)
    assert "alias bomb" in problem.message
    kind = tmp_path / "kind.yaml"
    kind.write_text("targets:\n  - {name: a, kind: supervisr, program: a}\n")
    assert [str(p) for p in check_pipeline(kind)] == [
        f"{kind}:2: targets[0].kind: unknown kind 'supervisr' (did you mean 'supervisor'?)"
    ]


def test_schema_is_current_and_the_shipped_files_use_it(tmp_path: Path) -> None:
    printed = run_autofix(["config", "schema"], _env(tmp_path)).stdout
    committed = (ROOT / "pipelines" / "pipelines.schema.json").read_text()
    assert printed == committed, "run `autofix config schema > pipelines/pipelines.schema.json`"
    schema = json.loads(committed)
    jsonschema.Draft202012Validator.check_schema(schema)
    for name in ("local.yaml", "news-delivery.yaml"):
        text = (ROOT / "pipelines" / name).read_text()
        assert text.startswith("# yaml-language-server: $schema=pipelines.schema.json\n")
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(text)))
        assert errors == [], (name, [e.message for e in errors])
        assert check_pipeline(ROOT / "pipelines" / name) == []
    bad = list(jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(FIVE_MISTAKES)))
    assert bad  # the editor sees the out-of-range port and the unknown job too
