"""Shared fixtures: a real SQLite data dir and a MemOS over it with the deterministic embedder.

Logic tests use :class:`memos.HashEmbedder` (fast, deterministic); tests marked ``slow`` use
the real all-MiniLM-L6-v2. Chat and KV tests use a tiny random Llama (``tiny_model``); a few
marked ``slow`` use the real SmolLM2 (``smollm2``, converted once into pytest's cache).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _backends import STORES
from _backends import store_url as backend_url
from _contract import StoreFactory
from _models import model_cache, tiny_model_dir
from _outside import check as check_reads_outside
from _outside import install as refuse_reads_outside

from memos import HashEmbedder, MemOS, Store, open_store
from memos.llm import LocalModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_EMBEDDER = "hash-64"

refuse_reads_outside()  # a fresh clone has only the repository: tests read nothing beside it


@pytest.fixture(autouse=True)
def _reads_stay_in_the_repository() -> Iterator[None]:
    check_reads_outside()  # what the fixtures set up for this test read
    yield
    check_reads_outside()


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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> LocalModel:
    root = tmp_path_factory.mktemp("tiny-model")
    return LocalModel.load(tiny_model_dir(root), cache_dir=root / "cache")


@pytest.fixture(scope="session")
def smollm2(pytestconfig: pytest.Config) -> LocalModel:
    return LocalModel.load(None, cache_dir=model_cache(pytestconfig))


@pytest.fixture
def chat_mos(data_dir: Path, tiny_model: LocalModel) -> Iterator[MemOS]:
    """A MemOS whose chat and KV caches run on the tiny model."""
    client = MemOS.open(data_dir, embedder=HashEmbedder(64), model=tiny_model)
    yield client
    client.close()


# the stores of the contract suites (tests/test_contract_*.py), one per backend --------------


@pytest.fixture(params=STORES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of fresh, empty, independent stores of one backend."""
    numbers = itertools.count()
    with contextlib.ExitStack() as made:

        def make() -> Store:
            directory = tmp_path / f"store-{next(numbers)}"
            url = made.enter_context(backend_url(request.param, directory))
            return made.enter_context(contextlib.closing(open_store(url)))

        yield make


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()
