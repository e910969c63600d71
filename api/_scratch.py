"""Scratch directories for the routes that move exports through files (export and import of
cubes and adapters), whose paths never reach a client."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memos.errors import MemosError


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A new temporary directory, removed after the block. An error leaving the block names
    what lies in it relative to it: where the server keeps its files is no client's business,
    and the SDK's messages (written for a caller who chose the directory) name full paths."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            yield Path(tmp)
        except MemosError as error:
            raise _relative_to(error, tmp) from error


def _relative_to(error: MemosError, directory: str) -> MemosError:
    def strip(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(directory + "/", "").replace(directory, ".")
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [strip(item) for item in value]
        return value

    return type(error)(strip(error.message), **strip(error.details))
