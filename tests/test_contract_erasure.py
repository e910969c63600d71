"""The contract of erasure on every backend: a commit with an ``erase`` change removes the
items (rows, vectors, keyword entries, access statistics) and the payloads of all their
earlier events, while the chain still verifies; it is refused while an artifact is still built
from one of them, or when an item is not of the cube, and then writes nothing. Beside it:
listing and deleting blobs, and clearing what finished jobs say of erased items."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from _contract import T0, build, check_chain, create, cube_info, derived_entry, make_item, state
from _contract import revise as revised

from memos import Change, EventOp, ItemFilter, Store
from memos.core._access import Use
from memos.core._jobs import Job, JobKind, JobState
from memos.core._store import CubeImport
from memos.errors import ItemNotFound, VersionConflict


def _erase(cube: str, *item_ids: str) -> Change:
    record = {"items": list(item_ids)}
    return Change(op=EventOp.ERASE, cube=cube, actor="alice", ts=T0, erased=item_ids,
                  extra={"erasure": record})  # fmt: skip


@pytest.fixture
def filled(store: Store) -> Store:
    store.create_cube(cube_info("c1"), "alice")
    store.create_cube(cube_info("c2"), "alice")
    a, b = make_item("a", "c1", "alpha secret"), make_item("b", "c1", "beta kept")
    store.commit([create(a), create(b), create(make_item("z", "c2", "alpha elsewhere"))])
    update, _ = revised(a, text="alpha secret again")
    store.commit([update])
    store.record_uses("c1", [Use(("a", "b"), T0)], half_life_s=3600.0)
    return store


def test_erase_removes_the_items_and_their_payloads(filled: Store) -> None:
    store = filled
    (event,) = store.commit([_erase("c1", "a")])
    assert event.op == EventOp.ERASE
    assert store.get_item("a") is None
    assert store.get_vectors(["a"]) == {}
    assert [i.id for i in store.iter_items("c1")] == ["b"]
    assert store.keyword_search("c1", "alpha", 10, ItemFilter()) == []
    assert [i for i, _ in store.keyword_search("c2", "alpha", 10, ItemFilter())] == ["z"]
    assert set(store.cube_access("c1")) == {"b"}
    assert store.access_stats(["a"]) == {}
    assert store.co_access("c1") == {}
    erased = [e.seq for e in store.events("c1") if e.item_id == "a"]
    assert len(erased) == 2
    assert all(e.payload is None for e in store.events("c1") if e.item_id == "a")
    assert store.index_mismatches("c1", list(store.iter_items("c1"))) == []
    check_chain(store, "c1")
    changed, last = store.changed_since("c1", erased[-1])
    assert "a" in changed
    assert last == event.seq


def test_an_erase_is_refused_while_an_artifact_stands_on_an_item(filled: Store) -> None:
    store = filled
    entry = derived_entry("kv-1", "c1", store.get_item("a"))  # type: ignore[arg-type]
    store.commit([build(entry)])
    before = state(store)
    with pytest.raises(VersionConflict):
        store.commit([_erase("c1", "a")])
    assert state(store) == before
    drop = Change(op=EventOp.KV_DROP, cube="c1", actor="alice", ts=T0, dropped="kv-1")
    store.commit([drop, _erase("c1", "a")])  # dropped in the same commit: accepted
    assert store.derived_entries("c1") == []
    check_chain(store, "c1")


def test_an_erase_of_an_item_of_another_cube_or_none_is_refused(filled: Store) -> None:
    store = filled
    before = state(store)
    for ids in (("z",), ("a", "nothing")):
        with pytest.raises(ItemNotFound):
            store.commit([_erase("c1", *ids)])
    assert state(store) == before


def test_an_erased_cube_imports_with_its_log(filled: Store, make_store: object) -> None:
    store = filled
    store.commit([_erase("c1", "a")])
    other = make_store()  # type: ignore[operator]
    items = list(store.iter_items("c1"))
    other.import_cube(
        CubeImport(
            cube=store.get_cube("c1"),  # type: ignore[arg-type]
            events=store.events("c1"),
            items=items,
            vectors=store.get_vectors([i.id for i in items]),
        )
    )
    check_chain(other, "c1")


def test_blobs_are_listed_and_deleted(store: Store) -> None:
    assert store.blob_ages() == {}
    digests = sorted(store.put_blob(data) for data in (b"one", b"two", b"three"))
    ages = store.blob_ages()
    assert list(ages) == digests
    assert all(0.0 <= age < 60.0 for age in ages.values())
    assert store.delete_blobs([digests[0], hashlib.sha256(b"never").hexdigest()]) == 1
    assert list(store.blob_ages()) == digests[1:]
    assert store.get_blob(digests[0]) is None
    assert store.delete_blobs([]) == 0


def test_finished_jobs_forget_erased_items(store: Store) -> None:
    def job(n: int, state: JobState, params: dict[str, object]) -> Job:
        return Job(id=f"job-{n:024x}", cube="c1", kind=JobKind.CONSOLIDATE, params=params,
                   actor="alice", reason=f"about {params}", after_seq=0, state=state,
                   submitted_at=T0, result={"sources": params.get("item_ids")})  # fmt: skip

    made = [
        job(1, JobState.QUEUED, {"name": "x", "item_ids": ["a"]}),
        job(2, JobState.QUEUED, {"name": "x", "item_ids": ["a"]}),
        job(3, JobState.QUEUED, {"name": "x", "item_ids": ["b"]}),
    ]
    for one in made:
        store.enqueue_job(one)
    claimed = store.claim_job("w", T0, 60.0)
    assert claimed is not None
    done = claimed.model_copy(update={"state": JobState.DONE, "finished_at": T0 + timedelta(1)})
    store.finish_job(done)
    assert store.erase_from_jobs("c1", {"a"}) == 1
    cleared = store.get_job(made[0].id)
    assert cleared is not None
    assert (cleared.params, cleared.result, cleared.reason) == ({}, {"erased": True}, None)
    assert store.get_job(made[1].id) == made[1]  # unfinished: left as it is
    assert store.get_job(made[2].id) == made[2]  # names another item
