"""Log lines: JSON objects with context, console lines, chatter at DEBUG, and the log of a
real ``autofix run health`` that fixes something (decision, gate refusal, fix states)."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autofix.logs import configure, context, file_handler, reset, resolve_format
from tests.clirun import run_autofix


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    reset()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_event_and_context(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream)
    log = logging.getLogger("autofix.test")
    with context(job="remediate"):
        log.info("fix %s", "running", extra={"fix_id": 3, "target": "web", "gate": None})
    log.warning("after the job")
    first, second = _lines(stream)
    assert first["event"] == "fix running"
    assert (first["level"], first["logger"], first["job"]) == ("info", "autofix.test", "remediate")
    assert (first["fix_id"], first["target"]) == (3, "web")
    assert first["time"].endswith("Z")
    assert first["time"][:4].isdigit()
    assert "job" not in second  # the context ended with the block
    assert second["level"] == "warning"


def test_context_is_per_thread(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream)
    log = logging.getLogger("autofix.test")

    def other() -> None:
        log.info("other thread")

    with context(job="collect"):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        log.info("this thread")
    lines = {line["event"]: line for line in _lines(stream)}
    assert lines["this thread"]["job"] == "collect"
    assert "job" not in lines["other thread"]


def test_untrusted_text_stays_one_escaped_line(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream)
    evil = "disk\nfull\x1b[2J\x1b]0;owned\x07 \u2028end"
    logging.getLogger("autofix.test").info(evil, extra={"target": evil})
    raw = stream.getvalue()
    assert raw.count("\n") == 1
    assert "\x1b" not in raw
    assert "\u2028" not in raw
    (line,) = _lines(stream)
    assert line["event"] == evil
    assert line["target"] == evil


def test_exceptions_stay_inside_one_json_line(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("autofix.test").exception("job failed")
    (line,) = _lines(stream)
    assert "ValueError: boom" in line["exception"]


def test_console_lines_escape_control_characters(stream: io.StringIO) -> None:
    configure("INFO", "console", stream=stream)
    logging.getLogger("autofix.test").info("rotated", extra={"target": "a\x1b[31mred"})
    text = stream.getvalue()
    assert "\x1b" not in text  # no colours off a TTY, and the label's ESC is escaped
    assert "rotated" in text
    assert "target=" in text
    assert "\\x1b[31mred" in text


def test_library_chatter_is_debug(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream)
    logging.getLogger("apscheduler.executors.default").info('Running job "collect"')
    logging.getLogger("httpx").info("HTTP Request: GET http://x")
    logging.getLogger("uvicorn.access").info("GET /metrics 200")
    logging.getLogger("apscheduler.scheduler").warning("job missed")
    assert [line["event"] for line in _lines(stream)] == ["job missed"]
    reset()
    debug = io.StringIO()
    configure("DEBUG", "json", stream=debug)
    logging.getLogger("httpx").info("HTTP Request: GET http://x")
    (line,) = _lines(debug)
    assert line["level"] == "debug"


def test_a_file_of_the_service_log_leaves_chatter_out(tmp_path: Path) -> None:
    handler = file_handler(tmp_path / "autofix.log")
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        logging.getLogger("httpx").info("HTTP Request: GET http://x")
        logging.getLogger("apscheduler.executors.default").info('Running job "collect"')
        logging.getLogger("autofix.jobs").info("decision", extra={"decision_id": 3})
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
    lines = [json.loads(line) for line in (tmp_path / "autofix.log").read_text().splitlines()]
    assert [(line["event"], line["decision_id"]) for line in lines] == [("decision", 3)]


def test_level_setting_is_honoured(stream: io.StringIO) -> None:
    configure("WARNING", "json", stream=stream)
    logging.getLogger("autofix.test").info("quiet")
    logging.getLogger("autofix.test").error("loud")
    assert [line["event"] for line in _lines(stream)] == ["loud"]


def test_auto_is_console_on_a_tty_and_json_elsewhere() -> None:
    assert resolve_format("auto", io.StringIO()) == "json"
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as tty:
            assert resolve_format("auto", tty) == "console"
            assert resolve_format("json", tty) == "json"
    finally:
        os.close(leader)
        os.close(follower)


def _env(tmp_path: Path) -> dict[str, str]:
    spool = tmp_path / "spool"
    spool.mkdir()
    old = spool / "old.tmp"
    old.write_bytes(b"x" * 100)
    os.utime(old, (1_000_000_000, 1_000_000_000))
    flag = tmp_path / "healthy"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        json.dumps(
            {
                "targets": [
                    {"name": "spool", "kind": "logdir", "path": str(spool), "health": False},
                    {
                        "name": "app",
                        "kind": "command",
                        "argv": ["touch", str(flag)],
                        "check_argv": ["test", "-e", str(flag)],
                        "idempotent": True,
                        "recovery": {
                            "after": 1,
                            "mode": "auto",
                            "actions": [
                                {"action": "files.clean_temp", "target": "spool"},
                                {"action": "command.run"},
                            ],
                        },
                    },
                ],
                # The first candidate is refused by a gate; the second one fixes it.
                "gates": {"files.clean_temp": {"max_runs": 0}},
            }
        )
    )
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AUTOFIX_DB_PATH": str(tmp_path / "autofix.duckdb"),
        "AUTOFIX_PIPELINE": str(pipeline),
        "AUTOFIX_MODELS_DIR": str(tmp_path / "models"),
        "AUTOFIX_QUARANTINE_DIR": str(tmp_path / "quarantine"),
        "AUTOFIX_FIX_VERIFY_WAIT": "0s",
        "AUTOFIX_LOG_FORMAT": "json",
    }


def test_the_log_of_a_run_with_a_fix(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = run_autofix(["run", "health", "--json"], env)
    assert (tmp_path / "healthy").exists()  # the command really ran
    lines = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    assert all({"time", "level", "logger", "event"} <= line.keys() for line in lines)
    ours = [line for line in lines if line["level"] == "info"]
    (decision,) = [line for line in ours if line["event"] == "decision"]
    assert decision["rule"] == "recovery:app"
    assert decision["target"] == "app"
    assert decision["job"] == "health"
    assert decision["mode"] == "auto"
    assert decision["candidates"] == ["files.clean_temp", "command.run"]
    fixes = [line for line in ours if line["event"].startswith("fix ")]
    assert [(f["event"], f["action"]) for f in fixes] == [
        ("fix refused", "files.clean_temp"),
        ("fix running", "command.run"),
        ("fix succeeded", "command.run"),
    ]
    refused = fixes[0]
    assert refused["gate"] == "max_runs"
    assert "max 0" in refused["reason"]
    for line in fixes:
        assert line["decision_id"] == decision["decision_id"]
        assert (line["rule"], line["job"]) == ("recovery:app", "health")
        assert isinstance(line["fix_id"], int)
    assert fixes[1]["fix_id"] == fixes[2]["fix_id"] != refused["fix_id"]
    assert fixes[1]["target"] == "app"
    assert refused["target"] == "spool"
    # No scheduler or HTTP-client chatter at INFO.
    assert not [line for line in lines if line["logger"].split(".")[0] in {"apscheduler", "httpx"}]


def test_module_example() -> None:
    import doctest

    import autofix.logs

    assert doctest.testmod(autofix.logs).failed == 0


def test_event_lines_can_be_kept_to_debug(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream, events=False)  # `autofix fix run` prints its own
    logging.getLogger("autofix.audit").info("fix refused", extra={"gate": "params"})
    logging.getLogger("autofix.audit").warning("audit trouble")
    assert [line["event"] for line in _lines(stream)] == ["audit trouble"]
