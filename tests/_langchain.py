"""What the LangChain tests share: a principal's handle on a face, made once per test class
(a server starts in seconds, a cube in milliseconds), and a fresh cube for each test."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _backends import clients

# the embedded SDK and HTTP to a server, both on SQLite
FACES = ("sqlite", "sqlite-http")
_CUBES = itertools.count()


@contextlib.contextmanager
def principal(face: str, directory: Path, **handle: Any) -> Iterator[Any]:
    """Alice's handle on ``face`` over a fresh store in ``directory``; ``handle``: what
    ``MemOS`` takes (embedder, model)."""
    with clients(face, directory, **handle) as (_, connect):
        yield connect("alice")


def fresh_cube(alice: Any) -> str:
    """A new, empty cube of alice's (its full name)."""
    return str(alice.create_cube(f"cube-{next(_CUBES)}").name)
