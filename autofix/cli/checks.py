"""``autofix config check`` (every mistake at once) and ``autofix config schema``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from autofix.cli._app import _local, client_path, out, print_json
from autofix.cli.metrics import config_app


@config_app.command("check")
def config_check(
    pipeline: Annotated[
        Path | None,
        typer.Option(
            "--pipeline",
            help="Pipelines file to check (else AUTOFIX_PIPELINE).",
            parser=client_path,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the problems as JSON.")] = False,
) -> None:
    """Check the settings and the pipelines file; print every mistake (file:line: field:
    what), exit 2 if there is any. Run it before a deploy."""
    from autofix.config import settings_problems
    from autofix.configcheck import Problem, check_pipeline

    current, found, named = settings_problems(_local().config_file)
    problems = [Problem(where, None, setting, message) for where, setting, message in found]
    file = pipeline or (Path(named) if named is not None else None)
    if file is not None:
        problems += check_pipeline(file)
    if as_json:
        print_json(
            {
                "ok": not problems,
                "pipeline": str(file) if file is not None else None,
                "problems": [p.as_dict() for p in problems],
            }
        )
    else:
        for problem in problems:
            out.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        if not problems:
            out.print(f"ok: the settings and {file} are valid", markup=False, highlight=False)
    if problems:
        raise typer.Exit(2)
    del current


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the pipelines file (for editors: yaml-language-server)."""
    import json

    from autofix.pipeline import Pipeline

    schema = _durations(Pipeline.model_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "autofix pipelines file"
    out.file.write(json.dumps(schema, indent=2, sort_keys=True) + "\n")


#: How a duration is written in a pipelines file (``autofix.config.parse_duration``).
DURATION = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)?\s*$"
#: A number written as text that autofix reads as one (``100e6``).
NUMBER = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"


def _durations(node: Any) -> Any:
    """pydantic describes a duration as ISO 8601 (``PT15M``); the file says ``15m`` or a
    number of seconds, and an editor must accept what autofix accepts."""
    from datetime import timedelta

    from pydantic import TypeAdapter

    from autofix.config import format_duration

    if isinstance(node, list):
        return [_durations(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "duration":
        shown = {k: v for k, v in node.items() if k not in {"format", "type", "default"}}
        if isinstance(node.get("default"), str):
            default = TypeAdapter(timedelta).validate_python(node["default"])
            shown["default"] = format_duration(default) if default else "0s"
        shown["anyOf"] = [
            {"type": "string", "pattern": DURATION},
            {"type": "number", "minimum": 0},
        ]
        return shown
    if node.get("type") == "number":
        # YAML 1.1 reads `100e6` (no dot) as text; autofix reads it as the number it is.
        return {
            **{k: v for k, v in node.items() if k in {"description", "title", "default"}},
            "anyOf": [
                {k: v for k, v in node.items() if k not in {"description", "title", "default"}},
                {"type": "string", "pattern": NUMBER},
            ],
        }
    return {key: _durations(value) for key, value in node.items()}
