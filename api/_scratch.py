"""Scratch directories for the routes that move exports through files (export and import of
cubes and adapters), whose paths never reach a client."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memos.errors import MemosError

from ._errors import redacted


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A new temporary directory, removed after the block. An error leaving the block names
    what lies in it relative to it: where the server keeps its files is no client's business,
    and the SDK's messages (written for a caller who chose the directory) name full paths."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            yield Path(tmp)
        except MemosError as error:
            raise redacted(error, {tmp + "/": "", tmp: "."}) from error
