"""The documentation runs as written and stays in step with the code."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from smtpcore._commands import PARSERS
from smtpcore._params import PARAMETERS

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize(
    ("path", "index"),
    [(path, index) for path in DOCS for index in range(len(python_blocks(path)))],
    ids=lambda value: value.name if isinstance(value, Path) else str(value),
)
def test_python_examples_compile_and_the_readme_runs(path: Path, index: int) -> None:
    # Every example must at least be valid Python; the README's must also run as
    # written (the docs show servers on port 25 with certificates, which cannot).
    code = compile(python_blocks(path)[index], f"{path.name}[{index}]", "exec")
    if path.name == "README.md":
        exec(code, {"__name__": "docs_example"})


def test_readme_example_exists() -> None:
    assert python_blocks(ROOT / "README.md"), "the README must show a runnable example"


def test_state_diagram_is_generated_from_the_table() -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from make_state_diagram import diagram  # type: ignore[import-not-found]  # docs/, on sys.path only here
    finally:
        sys.path.pop(0)
    text = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    current = text.split("<!-- state-diagram -->\n", 1)[1].split("\n<!-- /state-diagram -->", 1)[0]
    assert current == diagram(), "run: python docs/make_state_diagram.py and paste it into docs/server.md"


def test_features_page_lists_every_parameter_and_command() -> None:
    text = (ROOT / "docs" / "features.md").read_text(encoding="utf-8")
    for spec in PARAMETERS:
        assert f"`{spec.keyword}" in text, f"docs/features.md does not list the {spec.keyword} parameter"
    for verb in PARSERS:
        assert f"`{verb}`" in text, f"docs/features.md does not list the {verb} command"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in readme
    assert "<!-- test-command -->" in ci, ".ci/run must read the test command from the README"


def test_readme_serve_command_runs_the_console_script_this_project_installs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = readme.split("<!-- serve-command -->\n```\n", 1)[1].split("\n", 1)[0]
    assert command.endswith("&& smtpcore serve")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'smtpcore = "adapters.cli:main"' in pyproject
