"""`autofix fix …` and `autofix actions` end to end: real subprocess, real store, exit codes."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.test_cli import ROOT, run

FIELDS = {"id", "action", "target", "state", "plan", "gate", "output", "error"}
REQUIRED_ACTIONS = {
    "service.restart", "process.signal", "redis.flushdb", "redis.delete_keys",
    "postgres.terminate_idle", "postgres.vacuum", "postgres.reindex", "files.rotate_logs",
    "files.clean_temp", "http.call", "command.run",
}  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    old = tmp / "old.tmp"
    old.write_bytes(b"stale bytes")
    stamp = time.time() - 3 * 86400
    os.utime(old, (stamp, stamp))
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"targets:\n  - {{name: tmp, kind: logdir, path: {tmp}, actions: [files.clean_temp]}}\n"
    )
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "data" / "autofix.duckdb"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "quarantine"),
        "AUTOFIX_FIX_VERIFY_WAIT": "0s",
        "COLUMNS": "200",
    }


def test_dry_run_then_approve_with_yes_then_rollback(env: dict[str, str]) -> None:
    old = Path(env["HOME"]) / "tmpdir" / "old.tmp"
    planned = json.loads(
        run(
            ["fix", "run", "files.clean_temp", "--target", "tmp", "--dry-run", "--json"], env
        ).stdout
    )
    assert set(planned) >= FIELDS
    assert (planned["state"], planned["gate"], planned["plan"][0]["op"]) == (
        "planned",
        None,
        "quarantine",
    )
    assert old.exists()

    done = json.loads(
        run(["fix", "run", "files.clean_temp", "--target", "tmp", "--yes", "--json"], env).stdout
    )
    assert done["state"] == "succeeded"
    assert not old.exists()

    rolled = json.loads(run(["fix", "rollback", str(done["id"]), "--json"], env).stdout)
    assert rolled["state"] == "rolled_back"
    assert old.read_bytes() == b"stale bytes"

    shown = json.loads(run(["fix", "show", str(done["id"]), "--json"], env).stdout)
    assert [e["state"] for e in shown["events"]] == ["running", "succeeded", "rolled_back"]
    listed = json.loads(run(["fix", "list", "--json"], env).stdout)
    assert [r["id"] for r in listed] == [done["id"], planned["id"]]


def test_pending_then_reject_and_cooldown_refusal(env: dict[str, str]) -> None:
    pending = json.loads(
        run(["fix", "run", "files.clean_temp", "--target", "tmp", "--json"], env).stdout
    )
    assert pending["state"] == "pending_approval"
    rejected = json.loads(run(["fix", "reject", str(pending["id"]), "--json"], env).stdout)
    assert (rejected["state"], rejected["gate"]) == ("refused", "approval")
    proc = run(["fix", "approve", str(pending["id"])], env, check=2)
    assert "not pending_approval" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--target", "; rm -rf /"],
        ["--target", "$(touch pwned)"],
        ["--target", "tmp", "--param", "subdir=../../etc"],
        ["--target", "tmp", "--param", "subdir=/etc"],
        ["--target", "tmp", "--param", "pattern=`id`\nx"],
        ["--target", "tmp", "--param", "no-equals-sign"],
    ],
)
def test_hostile_input_exits_2_with_one_line(env: dict[str, str], args: list[str]) -> None:
    proc = run(["fix", "run", "files.clean_temp", *args, "--yes", "--json"], env, check=2)
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("autofix: error:")
    assert (Path(env["HOME"]) / "tmpdir" / "old.tmp").exists()
    assert not (Path(env["HOME"]) / "pwned").exists()


def test_refusals_are_in_the_audit_log(env: dict[str, str]) -> None:
    run(["fix", "run", "files.clean_temp", "--target", "x\n; rm -rf /", "--json"], env, check=2)
    [record] = json.loads(run(["fix", "list", "--json"], env).stdout)
    assert (record["state"], record["gate"]) == ("refused", "allowlist")
    assert "not declared" in record["error"]


def test_unknown_action_exits_2(env: dict[str, str]) -> None:
    proc = run(["fix", "run", "nope.never", "--target", "tmp"], env, check=2)
    assert "unknown action" in proc.stderr


def test_actions_catalog(env: dict[str, str]) -> None:
    catalog = json.loads(run(["actions", "--json"], env).stdout)
    names = {entry["name"] for entry in catalog}
    assert names >= REQUIRED_ACTIONS
    by_name = {entry["name"]: entry for entry in catalog}
    assert by_name["files.clean_temp"]["rolls_back"] is True
    assert by_name["service.restart"]["rolls_back"] is False
    assert {p["name"] for p in by_name["redis.delete_keys"]["params"]} >= {"pattern", "batch"}


def test_make_run_dry_run_on_the_shipped_pipeline(env: dict[str, str]) -> None:
    env = {**env, "AUTOFIX_PIPELINE": str(ROOT / "pipelines" / "local.yaml")}
    proc = run(
        ["fix", "run", "files.clean_temp", "--target", "var-tmp", "--dry-run", "--json"], env
    )
    assert json.loads(proc.stdout)["state"] in {"planned", "noop"}


def test_command_params_reach_the_command_exactly_as_typed(
    env: dict[str, str], tmp_path: Path
) -> None:
    seen = tmp_path / "argv.json"
    script = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    pipeline = Path(env["AUTOFIX_PIPELINE"])
    pipeline.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "name": "cmd",
                        "kind": "command",
                        "argv": [sys.executable, "-c", script, str(seen), "{v}", "{w}", "{x}"],
                        "params": {"v": r"[0-9.]+", "w": r"[0-9]+", "x": r"\S+"},
                    }
                ]
            }
        )
    )
    done = json.loads(
        run(
            ["fix", "run", "command.run", "--target", "cmd", "--yes", "--json",
             "--param", "v=1.10", "--param", "w=007", "--param", "x=true"],
            env,
        ).stdout
    )  # fmt: skip
    assert done["state"] == "succeeded", done
    assert json.loads(seen.read_text()) == ["1.10", "007", "true"]
