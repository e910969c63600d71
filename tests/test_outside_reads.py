"""The harness refuses reads beside the repository (``tests/_outside.py``): a test that would
pass only where a sibling data folder exists fails everywhere instead."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import pytest
from _outside import GUARD, PARENT, REPO, check

# LoCoMo's file where this team's machines keep it: refused whether or not it exists here
BESIDE = Path(PARENT) / "shared" / "data" / "locomo" / "locomo_dev.json"


def test_reading_beside_the_repository_is_refused() -> None:
    climbing = os.path.join(REPO, "tests", os.pardir, os.pardir, "shared", "notes.txt")
    look_alike = Path(f"{REPO}-old") / "pyproject.toml"  # a sibling whose name starts alike
    with pytest.raises(PermissionError, match="tests must not read outside the repository"):
        BESIDE.read_text(encoding="utf-8")
    with pytest.raises(PermissionError):
        open(os.path.relpath(BESIDE), "rb")  # noqa: SIM115
    with pytest.raises(PermissionError):
        open(climbing, "rb")  # noqa: SIM115
    with pytest.raises(PermissionError):
        open(os.fsencode(look_alike), "rb")  # noqa: SIM115
    with pytest.raises(PermissionError):
        os.listdir(BESIDE.parent)
    with pytest.raises(PermissionError):
        os.scandir(Path(PARENT) / "shared")
    assert GUARD.take() == [
        str(BESIDE),
        str(BESIDE),
        os.path.join(PARENT, "shared", "notes.txt"),
        str(look_alike),
        str(BESIDE.parent),
        os.path.join(PARENT, "shared"),
    ]


def test_a_refusal_caught_on_the_way_still_fails_the_test() -> None:
    with contextlib.suppress(OSError):
        BESIDE.read_bytes()
    with pytest.raises(pytest.fail.Exception, match="read outside the repository"):
        check()  # what the autouse fixture of conftest runs after each test
    check()  # and the refusal is reported once


def test_the_repository_and_the_system_folders_stay_open(tmp_path: Path) -> None:
    assert "[project]" in (Path(REPO) / "pyproject.toml").read_text(encoding="utf-8")
    assert "tests" in os.listdir(REPO)
    (tmp_path / "note.txt").write_text("kept", encoding="utf-8")
    assert (tmp_path / "note.txt").read_text(encoding="utf-8") == "kept"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "x").write_bytes(b"x")
        assert os.listdir(folder) == ["x"]
    with tempfile.NamedTemporaryFile() as file:
        file.write(b"x")
    with open(sys.executable, "rb") as interpreter:
        assert interpreter.read(1)
    assert GUARD.take() == []
