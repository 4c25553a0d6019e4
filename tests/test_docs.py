"""The manual in docs/: it builds with `mkdocs build --strict` (no broken link or anchor, no
page left out of the navigation), and every shell block marked runnable runs as written,
command by command, in a fresh directory — the way datasette tests its documentation."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
#: The line that marks the shell block right after it as runnable.
MARKER = "<!-- runnable -->"
#: What a fresh checkout holds that the examples may name.
CHECKOUT = ("pipelines", "data/samples", "data/examples", "data/real")
ENV_WORD = re.compile(r"[A-Z][A-Z0-9_]*=")


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    commands: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def runnable_examples() -> list[Example]:
    examples = []
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if line.strip() != MARKER:
                continue
            fence = lines[number + 1] if number + 1 < len(lines) else ""
            assert fence.strip() in {"```sh", "```console", "```bash"}, (
                f"{page.name}:{number + 1}: {MARKER} must stand right before a ```sh block"
            )
            end = next(i for i in range(number + 2, len(lines)) if lines[i].startswith("```"))
            commands = []
            for text in lines[number + 2 : end]:
                command = text.split("  #", 1)[0].strip()
                commands.extend(part.strip() for part in command.split(" ; ") if part.strip())
            examples.append(Example(page.name, number + 1, tuple(commands)))
    return examples


EXAMPLES = runnable_examples()


def test_the_manual_has_runnable_examples() -> None:
    assert len(EXAMPLES) >= 5, EXAMPLES
    assert all(example.commands for example in EXAMPLES), EXAMPLES


@pytest.mark.timeout(600)
@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_runnable_example(example: Example, tmp_path: Path) -> None:
    fresh = tmp_path / "checkout"
    fresh.mkdir()
    for part in CHECKOUT:
        shutil.copytree(ROOT / part, fresh / part)
    bin_dir = Path(sys.executable).parent
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTOFIX_")}
    base.update({"HOME": str(tmp_path), "PATH": f"{bin_dir}:{base.get('PATH', '/usr/bin:/bin')}",
                 "COLUMNS": "160"})  # fmt: skip
    for command in example.commands:
        words = shlex.split(command)
        env = dict(base)
        while words and ENV_WORD.match(words[0]):
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        # Only autofix itself: a runnable block is no way to run arbitrary shell.
        assert words, f"{example}: {command}"
        assert words[0] == "autofix", f"{example}: {command}"
        done = subprocess.run(
            words, cwd=fresh, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        output = (done.stdout[-2000:], done.stderr[-2000:])
        assert done.returncode == 0, (str(example), command, *output)
        assert done.stdout.strip() or done.stderr.strip(), f"{example}: {command} printed nothing"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = [next(iter(entry.values())) for entry in config["nav"]]
    assert sorted(pages) == sorted(p.name for p in DOCS.glob("*.md")), "nav and docs/ differ"
    for page in pages:
        built = site / ("index.html" if page == "index.md" else f"{page[:-3]}/index.html")
        assert built.is_file(), page
    # The home page includes the README's quick start (pymdownx.snippets), not a copy.
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "--shift-to-now" in home
    assert "--8&lt;--" not in home


def test_broken_links_fail_the_build(tmp_path: Path) -> None:
    """The strict build is a check that can fail: a link to a missing anchor aborts it."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, symlinks=True)
    (docs / "results").unlink()
    (docs / "results").symlink_to(ROOT / "benchmarks" / "results")
    with (docs / "cli.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [calibration](forecasting.md#no-such-section).\n")
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text(config, encoding="utf-8")
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text(encoding="utf-8"))
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=tmp_path,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert "no-such-section" in done.stderr


def _cog_check(page: Path) -> int:
    from cogapp import Cog

    return int(Cog().main(["cog", "--check", str(page)]))


def test_the_cli_reference_is_current() -> None:
    page = DOCS / "cli-reference.md"
    assert "## autofix fix run" in page.read_text(encoding="utf-8")
    stale = "docs/cli-reference.md is stale: run `make docs` (cog -r docs/cli-reference.md)"
    assert _cog_check(page) == 0, stale


def test_a_stale_cli_reference_is_caught(tmp_path: Path) -> None:
    text = (DOCS / "cli-reference.md").read_text(encoding="utf-8")
    page = tmp_path / "cli-reference.md"
    page.write_text(text.replace("  --dry-run ", "  --dry-plan ", 1), encoding="utf-8")
    assert _cog_check(page) != 0
