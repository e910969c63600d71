"""Every command's --help reads as a person writes options: ``--cube CUBE``, ``-k K``, flags
with no value after them, never typer's ``<bool>`` or ``<list[str]>`` type labels."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from memos.cli import app


def _commands() -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found[" ".join(path)] = command
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = _commands()


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: p or "memos")
def test_help_shows_no_type_labels_on_options(path: str) -> None:
    result = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert not re.search(r"<(bool|str|int|float|path|list\[[^]]*\])>", result.output)
    assert "--k " not in result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage  # a required argument reads TEXT, not {TEXT}


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: p or "memos")
def test_flags_take_no_metavar_and_values_are_named(path: str) -> None:
    for param in COMMANDS[path].params:
        if getattr(param, "is_flag", False):
            assert param.metavar == "", (path, param.opts)
        elif param.metavar is not None:
            assert re.fullmatch(r"[A-Z][A-Z0-9_=]*", param.metavar), (path, param.metavar)


def test_a_flag_and_a_value_read_as_written() -> None:
    result = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "200"})
    rows = [" ".join(row.strip("│ ").split()) for row in result.output.splitlines()]
    assert any(row.startswith("--json Print") for row in rows)
    assert any(row.startswith("-k K How many") for row in rows)
    assert any(row.startswith("--tag -t TAG Only") for row in rows)
