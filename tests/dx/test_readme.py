"""The README is checked against what it describes: the Taskfile's tasks, the two commands
that open it, and Mermaid diagrams that render."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(f"\n## {heading}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None]


def _taskfile() -> dict[str, Any]:
    tasks: dict[str, Any] = yaml.safe_load((ROOT / "Taskfile.yml").read_text())["tasks"]
    return tasks


def test_the_readme_task_reference_lists_exactly_the_taskfile_tasks() -> None:
    rows = [line for line in _section(README, "Tasks").splitlines() if line.startswith("| `")]
    # "| `lint` / `lint-fix` | ..." names two tasks; "`migrate-new NAME=...`" names one.
    documented = {
        name.split()[0] for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])
    }

    assert documented == set(_taskfile()) - {"default"}


def test_every_task_says_what_it_does() -> None:
    assert all(task.get("desc") for name, task in _taskfile().items() if name != "default")


def test_the_readme_opens_with_the_run_and_test_commands() -> None:
    quick_start = _section(README, "Quick start")
    first_block = quick_start.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()

    assert [line.split("#")[0].strip() for line in first_block] == [
        "uv run task run",
        "uv run task test",
    ]
    assert "run" in _taskfile()
    assert "test" in _taskfile()


_QUOTED = re.compile(r'"[^"]*"')
# What is left of a node shape once quoted labels are removed: id[label], id(label), id{label}
_NODE_LABEL = re.compile(r"\w+[\[({]+([^\])}]*)[\])}]+")
_SPECIAL = re.compile(r"[^\w\s-]")


@pytest.mark.parametrize("document", DOCS, ids=lambda path: path.name)
def test_mermaid_labels_with_special_characters_are_quoted(document: Path) -> None:
    blocks = re.findall(r"```mermaid\n(.*?)```", document.read_text(), flags=re.DOTALL)
    unquoted = [
        match.group(0)
        for block in blocks
        for match in _NODE_LABEL.finditer(_QUOTED.sub('""', block))
        if match.group(1) != '""' and _SPECIAL.search(match.group(1))
    ]

    assert unquoted == []
