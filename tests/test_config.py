"""Settings: documented, typed, env over file over default, clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from autofix.config import Settings, describe, format_duration, load_settings, parse_duration
from autofix.errors import ConfigError


def test_every_setting_has_help_text() -> None:
    undocumented = [
        name for name, field in Settings.model_fields.items() if not (field.description or "")
    ]
    assert undocumented == []


def test_every_setting_is_in_the_settings_table() -> None:
    """docs/settings.md has one row per setting: `| `AUTOFIX_NAME` | default | meaning |`."""
    page = (Path(__file__).parents[1] / "docs" / "settings.md").read_text(encoding="utf-8")
    rows = {line.split("`")[1] for line in page.splitlines() if line.startswith("| `AUTOFIX_")}
    expected = {f"AUTOFIX_{name.upper()}" for name in Settings.model_fields}
    assert sorted(expected - rows) == [], "settings missing from docs/settings.md"
    assert sorted(rows - expected) == [], "docs/settings.md documents settings that do not exist"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15s", 15),
        ("2m", 120),
        ("1.5h", 5400),
        ("14d", 14 * 86400),
        ("1w", 604800),
        (30, 30),
        ("250ms", 0.25),
        ("45", 45),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 parsecs", "-1s", "1y"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_env_overrides_file_overrides_default(tmp_path: Path) -> None:
    config = tmp_path / "autofix.toml"
    config.write_text('[autofix]\nraw_retention = "3d"\ncollect_interval = "30s"\n')
    env = {"AUTOFIX_CONFIG": str(config), "AUTOFIX_COLLECT_INTERVAL": "5s"}
    settings = load_settings(environ=env)
    assert settings.collect_interval == timedelta(seconds=5)
    assert settings.raw_retention == timedelta(days=3)
    assert settings.rollup_retention == timedelta(days=400)
    sources = {row.name: row.source for row in describe(settings, env)}
    assert sources["collect_interval"] == "env"
    assert sources["raw_retention"] == f"file:{config}"
    assert sources["rollup_retention"] == "default"


def test_bad_env_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="'raw_retention'"):
        load_settings(environ={"AUTOFIX_RAW_RETENTION": "forever"})


def test_unknown_env_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="AUTOFIX_RAW_RETENSION"):
        load_settings(environ={"AUTOFIX_RAW_RETENSION": "3d"})


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("raw_retention = [\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        load_settings(config_file=config, environ={})


def test_unknown_file_setting_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "x.toml"
    config.write_text('dbpath = "x"\n')
    with pytest.raises(ConfigError, match=r"x\.toml: unknown setting 'dbpath'"):
        load_settings(config_file=config, environ={})


@pytest.mark.parametrize("text", ["15s", "2m", "14d", "250ms", "90s", "36h", "400d"])
def test_format_duration_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


# -- issue 11: secrets never printed, token lists that cannot be read one way, bad files --


def test_config_describe_masks_every_secret() -> None:
    from autofix.config import describe

    environ = {
        "AUTOFIX_NOTIFY_SLACK_URL": "https://hooks.slack.com/services/T0AAA/B0BBB/s3cr3tS3CR3Ts3cr3t",
        "AUTOFIX_NOTIFY_WEBHOOK_URL": "https://bob:hunter2@hooks.example.com/in?token=t0k3n&x=1",
        "AUTOFIX_NOTIFY_SMTP_PASSWORD": "smtp-pass-word",
        "AUTOFIX_API_TOKENS": "ops:operator:abcdefghijklmnopqrstuv",
    }
    rows = {r.name: r.value for r in describe(load_settings(environ=environ), environ)}
    text = repr(rows)
    for secret in ("s3cr3t", "hunter2", "bob", "t0k3n", "smtp-pass-word", "abcdefghijklmnop"):
        assert secret not in text
    assert rows["notify_slack_url"] == "https://hooks.slack.com/services/***"
    assert rows["notify_webhook_url"] == "https://***@hooks.example.com/in?token=***&x=***"
    assert rows["notify_smtp_password"] == rows["api_tokens"] == "***"


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("ops:s3cr3t-token-value-123", "entry 1: give name:role:token (1 ':' found, need 2)"),
        ("s3cr3t-token-value-123", "entry 1: give name:role:token (0 ':' found, need 2)"),
        ("ops:admin:s3cr3t-token-value-123", "entry 1 (ops): the role must be viewer or operator"),
        (
            "a:viewer:s3cr3t-token-value-123,b:operator:s3cr3t-token-value-123",
            "b: the same token as a; give each its own",
        ),
    ],
)
def test_token_errors_never_echo_a_token(tokens: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"AUTOFIX_API_TOKENS": tokens})
    assert message in str(info.value)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"db_path = 'a'\n# caf\xe9\n", "line 2: not UTF-8 text (byte 0xe9)"),
        (b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested too deeply"),
        (None, "a directory, not a TOML file"),
    ],
)
def test_bad_toml_files_are_one_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "autofix.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300, "99999999999999999999d"])
def test_a_duration_out_of_range_is_bad_input_not_a_crash(value: object) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_duration(value)
