"""The README stays true: CI runs its test command, and its code examples are valid."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import motorpool
from motorpool.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def console_commands() -> list[str]:
    blocks = re.findall(r"```console\n(.*?)```", README, flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command() -> None:
    commands = [c for c in console_commands() if not c.startswith("$")]
    assert len(commands) == 2, "the README has exactly two set-up commands"
    test_command = next(c for c in commands if c.endswith("pytest"))
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()


def test_python_examples_parse_and_import_real_names() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "motorpool":
                for alias in node.names:
                    assert hasattr(motorpool, alias.name), alias.name


def test_cli_commands_in_the_readme_exist() -> None:
    used = {c.split()[2] for c in console_commands() if c.startswith("$ motorpool")}
    assert used <= set(main.commands)
