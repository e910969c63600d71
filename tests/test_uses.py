"""Uses of memories, the scheduler's input: each search's hits and each chat's prompt are one
use, recorded in batches (never a write per read) with the pairs retrieved together, on every
face and store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _backends import FACES, Connect, clients
from _contract import T0

from memos import HashEmbedder, MemOS
from memos.core._access import Use
from memos.core._store import Store
from memos.engine._uses import UseRecorder

FACTS = [
    "alice moved to lisbon in may",
    "the capital of france is paris",
    "alice moved to porto in june",
    "paris is where alice moved in june",
]


@pytest.fixture(params=FACES)
def faced(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[MemOS, Connect]]:
    with clients(request.param, tmp_path / "data", embedder=HashEmbedder(64)) as made:
        yield made


def test_each_search_is_one_use_of_its_hits(faced: tuple[MemOS, Connect]) -> None:
    root, connect = faced
    alice: Any = connect("alice")
    cube = alice.create_cube("notes").name
    items = alice.add_many(FACTS, cube=cube)
    hits = [h.item.id for h in alice.search("where did alice move", cube=cube, k=3)]
    alice.search("where did alice move", cube=cube, k=3)
    stats = alice.access_stats([i.id for i in items])
    assert set(stats) == set(hits)
    assert all(stats[i].count == 2 for i in hits)
    root._engine.uses.flush()  # an HTTP face's server is this process: what it has pending
    pairs = root.store.co_access(cube)
    assert set(pairs) == {(a, b) if a < b else (b, a) for a in hits for b in hits if a != b}
    assert all(p.count == 2 for p in pairs.values())
    assert set(root.store.cube_access(cube)) == set(hits)


def test_a_search_that_finds_nothing_is_no_use(faced: tuple[MemOS, Connect]) -> None:
    root, connect = faced
    alice: Any = connect("alice")
    cube = alice.create_cube("empty").name
    assert alice.search("anything", cube=cube, k=3) == []
    root._engine.uses.flush()
    assert root.store.cube_access(cube) == {}


class CountingStore:
    """A store whose ``record_uses`` calls are counted (every other call goes through)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.writes: list[tuple[str, int]] = []

    def record_uses(self, cube: str, uses: list[Use], half_life_s: float) -> None:
        self.writes.append((cube, len(uses)))
        self._store.record_uses(cube, uses, half_life_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_uses_reach_the_store_in_batches(tmp_path: Path) -> None:
    with MemOS.open(tmp_path / "data", embedder=HashEmbedder(64)) as mos:
        store = CountingStore(mos.store)
        now = [0.0]
        recorder = UseRecorder(store, batch=3, max_age_s=60.0, clock=lambda: now[0])  # type: ignore[arg-type]
        recorder.add("c1", ["a", "b"], T0)
        recorder.add("c2", ["x"], T0)
        assert (store.writes, recorder.pending) == ([], 2)
        recorder.add("c1", ["b"], T0 + timedelta(seconds=1))  # the third: the batch is full
        assert sorted(store.writes) == [("c1", 2), ("c2", 1)]
        assert recorder.pending == 0
        recorder.add("c1", ["a"], T0)
        now[0] = 61.0  # old enough by the next use
        recorder.add("c1", ["a"], T0)
        assert store.writes[-1] == ("c1", 2)
        recorder.add("c1", [], T0)  # no memory: no use
        assert recorder.pending == 0
        assert mos.store.cube_access("c1")["a"].count == 3


def test_closing_the_engine_writes_the_pending_uses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with MemOS.open(data, embedder=HashEmbedder(64)) as mos:
        mos.create_cube("notes")
        items = mos.add_many(FACTS, cube="notes")
        mos.search("paris", cube="notes", k=2)
        assert mos._engine.uses.pending == 1
    with MemOS.open(data, create=False, embedder=HashEmbedder(64)) as again:
        assert again.store.access_stats([i.id for i in items])  # written at close
