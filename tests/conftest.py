"""Shared fixtures: a real SQLite data dir and a MemOS over it with the deterministic embedder.

Logic tests use :class:`memos.HashEmbedder` (fast, deterministic); tests marked ``slow`` use
the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from memos import HashEmbedder, MemOS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_EMBEDDER = "hash-64"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def mos(data_dir: Path) -> Iterator[MemOS]:
    client = MemOS.open(data_dir, embedder=HashEmbedder(64))
    yield client
    client.close()


@pytest.fixture
def cube(mos: MemOS) -> str:
    mos.create_cube("notes", owner="alice")
    return "notes"
