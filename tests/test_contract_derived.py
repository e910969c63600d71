"""The contract of ``DerivedArtifacts``: the standing artifacts built from a cube's items (KV
caches, adapters), written and dropped by ``commit`` with the events that name them, on every
backend.
"""

from __future__ import annotations

import pytest
from _contract import (
    T0,
    build,
    check_chain,
    create,
    cube_info,
    derived_entry,
    make_item,
    revise,
    state,
)

from memos import Change, EventOp, Store
from memos.core._types import ItemStatus
from memos.errors import ItemNotFound, NotFound, VersionConflict


def test_a_derived_entry_is_listed_until_dropped(store: Store) -> None:
    store.create_cube(cube_info("c"), actor="alice")
    a, b = make_item("a", "c"), make_item("b", "c")
    store.commit([create(a), create(b)])
    first, second = derived_entry("kv-1", "c", a, b), derived_entry("kv-2", "c", b)
    store.commit([build(first), build(second)])
    assert store.derived_entries("c") == [first, second]
    assert store.derived_entries("c", "adapter") == []
    drop = Change(op=EventOp.KV_DROP, cube="c", actor="alice", ts=T0, dropped="kv-1")
    [event] = store.commit([drop])
    assert event.payload is not None
    assert event.payload["dropped"] == "kv-1"
    assert store.derived_entries("c") == [second]
    check_chain(store, "c")


def test_a_new_version_of_a_source_drops_its_entries_in_the_same_commit(store: Store) -> None:
    store.create_cube(cube_info("c"), actor="alice")
    a, b = make_item("a", "c"), make_item("b", "c")
    store.commit([create(a), create(b)])
    store.commit([build(derived_entry("kv-a", "c", a)), build(derived_entry("kv-b", "c", b))])
    change, _ = revise(a, text="new text")
    events = store.commit([change])
    assert [e.op for e in events] == [EventOp.UPDATE, EventOp.KV_DROP]
    assert events[1].payload is not None
    assert events[1].payload["dropped"] == "kv-a"
    assert events[1].reason is not None
    assert "a" in events[1].reason
    assert [e.id for e in store.derived_entries("c")] == ["kv-b"]
    check_chain(store, "c")


def test_a_build_from_a_stale_or_missing_source_writes_nothing(store: Store) -> None:
    store.create_cube(cube_info("c"), actor="alice")
    store.create_cube(cube_info("other"), actor="alice")
    a, elsewhere = make_item("a", "c"), make_item("x", "other")
    store.commit([create(a), create(elsewhere)])
    change, _ = revise(a, text="newer")
    store.commit([change])
    before = state(store)
    with pytest.raises(VersionConflict):
        store.commit([build(derived_entry("kv-old", "c", a))])
    with pytest.raises(ItemNotFound):
        store.commit([build(derived_entry("kv-x", "c", elsewhere))])
    deleted, _ = revise(make_item("a", "c", version=2), status=ItemStatus.DELETED)
    store.commit([deleted])
    with pytest.raises(VersionConflict):
        store.commit([build(derived_entry("kv-del", "c", make_item("a", "c", version=3)))])
    assert store.derived_entries("c") == []
    assert state(store)["other"] == before["other"]


def test_dropping_an_unknown_entry_writes_nothing(store: Store) -> None:
    store.create_cube(cube_info("c"), actor="alice")
    before = state(store)
    drop = Change(op=EventOp.KV_DROP, cube="c", actor="alice", ts=T0, dropped="kv-none")
    with pytest.raises(NotFound):
        store.commit([drop])
    assert state(store) == before


def test_an_adapter_version_number_is_taken_once(store: Store) -> None:
    """Two trainings of one adapter that finish together cannot both land as the same
    version: the second commit is a VersionConflict naming the taken version, and writes
    nothing."""
    store.create_cube(cube_info("c"), actor="alice")
    a = make_item("a", "c")
    store.commit([create(a)])

    def adapter(entry_id: str, name: str, version: int) -> Change:
        entry = derived_entry(entry_id, "c", a).model_copy(
            update={"kind": "adapter", "manifest": {"name": name, "version": version}}
        )
        return Change(op=EventOp.ADAPTER_BUILD, cube="c", actor="alice", ts=T0, derived=entry)

    store.commit([adapter("lora-1", "trip", 1)])
    before = state(store)
    with pytest.raises(VersionConflict) as raised:
        store.commit([adapter("lora-2", "trip", 1)])
    assert raised.value.details["taken"] == "trip@1"
    assert state(store) == before
    store.commit([adapter("lora-2", "trip", 2), adapter("lora-3", "other", 1)])
    with pytest.raises(VersionConflict):  # within one batch too
        store.commit([adapter("lora-4", "new", 1), adapter("lora-5", "new", 1)])
    assert [e.id for e in store.derived_entries("c", "adapter")] == ["lora-1", "lora-2", "lora-3"]
    check_chain(store, "c")
