"""The contract of ``CubeLog``: cubes, their hash-chained event logs, the item projections, the
full-precision vectors and the search indexes over the items, on every backend.

The tests talk to a store only through the protocol; what a backend needs to exist (a file, a
server, a key prefix) lives in the ``make_store`` fixture of ``conftest.py``, so adding a backend
means adding it to ``_backends.STORES`` (with its ``store_url``) and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from _contract import (
    DIM,
    T0,
    StoreFactory,
    check_chain,
    create,
    cube_info,
    make_item,
    revise,
    state,
    vec,
)

from memos import Change, CubeImport, Event, EventOp, ItemFilter, Store
from memos.core._chain import GENESIS_HASH
from memos.core._store import open_store
from memos.core._types import Access, ItemStatus
from memos.errors import CubeExists, CubeNotFound, InvalidInput, ItemNotFound, VersionConflict

# cubes ---------------------------------------------------------------------------------------


def test_create_get_and_list_cubes(store: Store) -> None:
    assert store.list_cubes() == []
    assert store.get_cube("notes") is None

    event = store.create_cube(cube_info("notes"), actor="alice")
    store.create_cube(cube_info("diary", owner="bob"), actor="bob")

    assert event.cube == "notes"
    assert event.seq == 1
    assert event.op == EventOp.CUBE_CREATE
    assert event.actor == "alice"
    assert event.item_id is None
    assert event.prev_hash == GENESIS_HASH
    assert store.get_cube("notes") == cube_info("notes")
    assert store.get_cube("diary") == cube_info("diary", owner="bob")
    assert sorted(c.name for c in store.list_cubes()) == ["diary", "notes"]
    assert store.events("notes") == [event]


def test_head_starts_at_the_create_event(store: Store) -> None:
    event = store.create_cube(cube_info("notes"), actor="alice")
    assert store.head("notes") == (1, event.hash)
    check_chain(store, "notes")


def test_create_existing_cube_raises_and_changes_nothing(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    before = state(store)
    with pytest.raises(CubeExists):
        store.create_cube(cube_info("notes", owner="mallory"), actor="mallory")
    assert state(store) == before


def test_unknown_cube(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    before = state(store)
    assert store.get_cube("nope") is None
    with pytest.raises(CubeNotFound):
        store.head("nope")
    with pytest.raises(CubeNotFound):
        store.commit([create(make_item("a", "nope"))])
    # reads of an unknown cube may find nothing or say so; they never invent anything
    reads: list[Callable[[], Any]] = [
        lambda: store.events("nope"),
        lambda: list(store.iter_items("nope")),
        lambda: store.filter_item_ids("nope", ItemFilter()),
    ]
    for read in reads:
        with contextlib.suppress(CubeNotFound):
            assert read() == []
    assert state(store) == before


def test_reopening_the_url_keeps_everything(make_store: StoreFactory) -> None:
    store = make_store()
    store.create_cube(cube_info("notes"), actor="alice")
    a = make_item("a", "notes", tags=("t",), metadata={"session": "s1"})
    store.commit([create(a, vector=vec(3))])
    change, _ = revise(a, text="edited")
    store.commit([change])
    before = state(store)
    store.close()

    again = open_store(store.url)
    try:
        assert state(again) == before
        assert again.filter_item_ids("notes", ItemFilter(tags=("t",), session="s1")) == ["a"]
        (event,) = again.commit([create(make_item("b", "notes"))])
        assert event.seq == 4
        check_chain(again, "notes")
    finally:
        again.close()


# commit ---------------------------------------------------------------------------------------


def test_commit_appends_one_event_per_change(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    a, b = make_item("a", "notes", "first"), make_item("b", "notes", "second")
    a2_change, a2 = revise(a, text="first, edited", reason="typo")
    a3_change, a3 = revise(a2, op=EventOp.DELETE, status=ItemStatus.DELETED)
    changes = [create(a), create(b), a2_change, a3_change]

    events = store.commit(changes)

    assert [e.seq for e in events] == [2, 3, 4, 5]
    assert store.events("notes")[1:] == events
    for change, event in zip(changes, events, strict=True):
        assert event.cube == "notes"
        assert event.op == change.op
        assert event.actor == change.actor
        assert event.ts == change.ts
        assert event.item_id == change.item_id
        assert event.reason == change.reason
        assert event.payload == change.payload()
        assert event.after == change.after
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert store.head("notes") == (5, events[-1].hash)
    assert store.get_item("a") == a3
    assert store.get_item("b") == b
    check_chain(store, "notes")

    more = store.commit([create(make_item("c", "notes"))])
    assert [e.seq for e in more] == [6]
    assert more[0].prev_hash == events[-1].hash
    check_chain(store, "notes")


def test_commit_extra_payload_is_kept(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    item = make_item("a", "notes")
    store.commit([create(item)])
    change, _ = revise(item, op=EventOp.ROLLBACK)
    change = dataclasses.replace(change, extra={"to_version": 1})
    (event,) = store.commit([change])
    assert event.payload is not None
    assert event.payload["to_version"] == 1
    assert store.events("notes", after_seq=2) == [event]
    check_chain(store, "notes")


def test_commit_with_a_new_cube_configuration(store: Store) -> None:
    info = cube_info("notes")
    store.create_cube(info, actor="alice")
    store.commit([create(make_item("a", "notes"))])
    fitted = info.model_copy(update={"codec": "int8", "codec_state": "ab" * 32, "codec_version": 1})
    change = Change(op=EventOp.CODEC_FIT, cube="notes", actor="alice", ts=T0, cube_info=fitted)
    (event,) = store.commit([change])
    assert store.get_cube("notes") == fitted
    assert store.list_cubes() == [fitted]
    assert event.item_id is None
    assert event.payload is not None
    assert event.payload["cube"] == fitted.model_dump(mode="json")
    assert store.events("notes", after_seq=2) == [event]
    check_chain(store, "notes")


@pytest.mark.parametrize("wrong", ["same_version", "skipped_version", "other_cube", "item_event"])
def test_a_configuration_that_does_not_follow_is_refused(store: Store, wrong: str) -> None:
    info = cube_info("notes")
    store.create_cube(info, actor="alice")
    store.create_cube(cube_info("other"), actor="alice")
    item = make_item("a", "notes")
    store.commit([create(item)])
    version = {"same_version": 0, "skipped_version": 2}.get(wrong, 1)
    new = info.model_copy(update={"codec": "fp16", "codec_version": version})
    change = Change(op=EventOp.REENCODE, cube="notes", actor="alice", ts=T0, cube_info=new)
    if wrong == "other_cube":
        change = dataclasses.replace(change, cube="other")
    if wrong == "item_event":
        change = dataclasses.replace(change, item_id="a")
    before = state(store)
    expected = VersionConflict if "version" in wrong else InvalidInput
    with pytest.raises(expected):
        # in a batch: the item change before it is not written either
        store.commit([create(make_item("b", "notes")), change])
    assert state(store) == before


def test_a_grant_changes_the_grants_alone(store: Store) -> None:
    info = cube_info("notes")
    store.create_cube(info, actor="alice")
    granted = info.model_copy(update={"grants": {"bob": Access.READ}})
    change = Change(op=EventOp.GRANT, cube="notes", actor="alice", ts=T0, cube_info=granted)
    (event,) = store.commit([change])
    assert store.get_cube("notes") == granted
    assert event.payload is not None
    assert event.payload["cube"]["grants"] == {"bob": "read"}
    before = state(store)
    # a grant that would also change the codec, or one computed from a stale configuration
    sneaky = granted.model_copy(update={"grants": {"bob": Access.WRITE}, "codec": "int8"})
    stale = info.model_copy(update={"grants": {"carol": Access.WRITE}, "owner": "mallory"})
    for wrong in (sneaky, stale):
        with pytest.raises(VersionConflict):
            store.commit([dataclasses.replace(change, cube_info=wrong)])
    # a new configuration only comes with the cube-level events that may change it
    with pytest.raises(InvalidInput):
        store.commit([dataclasses.replace(change, op=EventOp.KV_DROP)])
    assert state(store) == before
    revoked = granted.model_copy(update={"grants": {}})
    store.commit([dataclasses.replace(change, op=EventOp.REVOKE, cube_info=revoked)])
    assert store.get_cube("notes") == revoked
    check_chain(store, "notes")


def test_commit_nothing(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    before = state(store)
    assert store.commit([]) == []
    assert state(store) == before


def test_batch_across_two_cubes(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    store.create_cube(cube_info("diary"), actor="alice")
    n1, d1, n2 = make_item("n1", "notes"), make_item("d1", "diary"), make_item("n2", "notes")
    d1_change, d1v2 = revise(d1, text="dear diary")

    events = store.commit([create(n1), create(d1), create(n2), d1_change])

    assert [(e.cube, e.seq, e.item_id) for e in events] == [
        ("notes", 2, "n1"),
        ("diary", 2, "d1"),
        ("notes", 3, "n2"),
        ("diary", 3, "d1"),
    ]
    assert store.head("notes") == (3, events[2].hash)
    assert store.head("diary") == (3, events[3].hash)
    assert {i.id for i in store.iter_items("notes")} == {"n1", "n2"}
    assert list(store.iter_items("diary")) == [d1v2]
    check_chain(store, "notes")
    check_chain(store, "diary")


# expected_version and atomicity ---------------------------------------------------------------


def test_expected_version_zero_means_must_not_exist(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    item = make_item("a", "notes")
    store.commit([create(item)])
    before = state(store)
    with pytest.raises(VersionConflict):
        store.commit([create(make_item("a", "notes", "again"))])
    assert state(store) == before


def test_expected_version_must_match(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    item = make_item("a", "notes")
    store.commit([create(item)])
    change, v2 = revise(item, text="v2")
    store.commit([change])
    before = state(store)

    for stale in (1, 3, 0):
        stale_change, _ = revise(v2, text="lost update", expected_version=stale)
        with pytest.raises(VersionConflict):
            store.commit([stale_change])
        assert state(store) == before

    fresh, v3 = revise(v2, text="v3", expected_version=2)
    store.commit([fresh])
    assert store.get_item("a") == v3


def test_expected_version_of_missing_item(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    before = state(store)
    ghost = make_item("ghost", "notes")
    change, _ = revise(ghost, text="boo", expected_version=1)
    with pytest.raises(ItemNotFound):
        store.commit([change])
    assert state(store) == before
    assert store.get_item("ghost") is None


def test_no_expected_version_means_no_check(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    item = make_item("a", "notes")
    store.commit([create(item)])
    change, after = revise(item, text="blind write", expected_version=None)
    store.commit([change])
    assert store.get_item("a") == after
    check_chain(store, "notes")


@pytest.mark.parametrize("failure", ["version_conflict", "item_not_found", "unknown_cube"])
def test_failing_commit_writes_nothing(store: Store, failure: str) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    store.create_cube(cube_info("diary"), actor="alice")
    a = make_item("a", "notes")
    store.commit([create(a, vector=vec(1))])
    before = state(store)

    good_update, _ = revise(a, text="would be lost", vector=vec(2))
    good = [create(make_item("b", "notes")), create(make_item("d", "diary")), good_update]
    bad: Change
    expected: type[Exception]
    if failure == "version_conflict":
        bad, _ = revise(a, text="stale", expected_version=1)  # a is at 2 after good_update
        expected = VersionConflict
    elif failure == "item_not_found":
        bad, _ = revise(make_item("ghost", "diary"), text="x", expected_version=3)
        expected = ItemNotFound
    else:
        bad = create(make_item("z", "nope"))
        expected = CubeNotFound

    with pytest.raises(expected):
        store.commit([*good, bad])

    assert state(store) == before
    assert store.get_item("b") is None
    assert store.get_item("d") is None
    assert store.get_vectors(["a", "b", "d"]).keys() == {"a"}
    assert store.get_vectors(["a"])["a"].tobytes() == vec(1).tobytes()
    assert store.changed_since("notes", 2) == (set(), 2)
    # the store still works after the rollback, continuing the chain where it was
    events = store.commit(good)
    assert [(e.cube, e.seq) for e in events] == [("notes", 3), ("diary", 2), ("notes", 4)]
    check_chain(store, "notes")
    check_chain(store, "diary")


# reads ----------------------------------------------------------------------------------------


def test_items_round_trip(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    store.create_cube(cube_info("diary"), actor="alice")
    a = make_item(
        "a",
        "notes",
        'Ünïcödé — text with "quotes" and\nnewlines 🙂',
        tags=("travel", "z", "a"),
        metadata={"source": "chat", "n": 3, "x": 1.25, "flag": True, "none": None},
        occurred_at=datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    b = make_item("b", "notes", user=None)
    d = make_item("d", "diary")
    store.commit([create(a), create(b), create(d)])

    assert store.get_item("a") == a
    assert store.get_item("a").snapshot() == a.snapshot()  # type: ignore[union-attr]
    assert store.get_item("missing") is None
    assert store.get_items(["a", "d", "missing"]) == {"a": a, "d": d}
    assert store.get_items([]) == {}
    assert sorted(store.iter_items("notes"), key=lambda i: i.id) == [a, b]
    assert list(store.iter_items("diary")) == [d]

    change, a2 = revise(a, status=ItemStatus.DELETED, op=EventOp.DELETE)
    store.commit([change])
    assert store.get_item("a") == a2
    assert sorted(store.iter_items("notes"), key=lambda i: i.id) == [a2, b]


def test_many_items_round_trip(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    items = [make_item(f"i{n:04d}", "notes", f"text {n}") for n in range(1200)]
    store.commit([create(item, vector=vec(n)) for n, item in enumerate(items)])
    ids = [item.id for item in items]
    assert store.get_items(ids) == {item.id: item for item in items}
    vectors = store.get_vectors(ids)
    assert len(vectors) == len(items)
    assert all(np.array_equal(vectors[item.id], vec(n)) for n, item in enumerate(items))
    assert sorted(store.filter_item_ids("notes", ItemFilter())) == ids
    assert store.head("notes")[0] == 1201
    check_chain(store, "notes")


def test_vectors_round_trip_exactly(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    special = np.array(
        [0.0, -0.0, 1e-45, -3.4028235e38, 3.4028235e38, 1 / 3, np.pi, -1e-7], dtype=np.float32
    )
    a, b = make_item("a", "notes"), make_item("b", "notes")
    store.commit([create(a, vector=special), create(b, vector=vec(7))])

    got = store.get_vectors(["a", "b", "missing"])
    assert got.keys() == {"a", "b"}
    for item_id, expected in (("a", special), ("b", vec(7))):
        assert got[item_id].dtype == np.float32
        assert got[item_id].shape == (DIM,)
        assert got[item_id].tobytes() == expected.tobytes()
    assert store.get_vectors([]) == {}

    # an update without a vector keeps the old one; with one, replaces it
    keep, a2 = revise(a, tags=("t",))
    store.commit([keep])
    assert store.get_vectors(["a"])["a"].tobytes() == special.tobytes()
    replace, _ = revise(a2, text="new text", vector=vec(8))
    store.commit([replace])
    assert store.get_vectors(["a"])["a"].tobytes() == vec(8).tobytes()


def test_vectors_of_one_cube(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    store.create_cube(cube_info("other"), actor="alice")
    a, b, x = make_item("a", "notes"), make_item("b", "notes"), make_item("x", "other")
    store.commit([create(a, vector=vec(1)), create(b, vector=vec(2)), create(x, vector=vec(3))])
    got = store.get_vectors(["a", "x", "b", "a", "missing"], cube="notes")
    assert got.keys() == {"a", "b"}
    assert got["b"].tobytes() == vec(2).tobytes()
    assert store.get_vectors(["x"], cube="other")["x"].tobytes() == vec(3).tobytes()
    assert store.get_vectors([], cube="notes") == {}


def test_items_of_one_cube(store: Store) -> None:
    store.create_cube(cube_info("notes"), actor="alice")
    store.create_cube(cube_info("other"), actor="alice")
    a, b, x = make_item("a", "notes"), make_item("b", "notes"), make_item("x", "other")
    store.commit([create(a), create(b), create(x)])
    assert store.get_items(["a", "x", "b", "a", "missing"], cube="notes") == {"a": a, "b": b}
    assert store.get_items(["a", "x"], cube="other") == {"x": x}
    assert store.get_items(["a"], cube="nowhere") == {}
    assert store.get_items([], cube="notes") == {}


@pytest.fixture
def filter_store(store: Store) -> Store:
    """Items that differ in exactly the ways filters look at."""
    store.create_cube(cube_info("notes"), actor="alice")
    store.create_cube(cube_info("diary"), actor="alice")
    day = timedelta(days=1)
    items = [
        make_item("a1", "notes", user="alice", tags=("travel", "work"), occurred_at=T0,
                  metadata={"session": "s1", "source": "chat", "n": 1}),
        make_item("a2", "notes", user="alice", tags=("travel",), occurred_at=T0 + day,
                  metadata={"session": "s2", "source": "email", "n": 2}),
        make_item("b1", "notes", user="bob", tags=("work", "home"), occurred_at=T0 + 2 * day,
                  metadata={"session": "s1", "source": "chat", "flag": True}),
        make_item("n1", "notes", user=None, tags=(), occurred_at=T0 + 3 * day,
                  metadata={"dotted.key-x": "v", "score": 0.5}),
        make_item("x1", "notes", user="alice", tags=("travel", "work"), occurred_at=T0,
                  metadata={"session": "s1", "source": "chat", "n": 1},
                  status=ItemStatus.ARCHIVED),
        make_item("d1", "diary", user="alice", tags=("travel", "work"), occurred_at=T0,
                  metadata={"session": "s1", "source": "chat", "n": 1}),
    ]  # fmt: skip
    gone = make_item("g1", "notes", user="alice", tags=("travel", "work"), occurred_at=T0,
                     metadata={"session": "s1", "source": "chat", "n": 1})  # fmt: skip
    store.commit([create(item) for item in [*items, gone]])
    delete, _ = revise(gone, op=EventOp.DELETE, status=ItemStatus.DELETED)
    store.commit([delete])
    return store


ALL_ACTIVE = {"a1", "a2", "b1", "n1"}


FILTER_CASES = pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (ItemFilter(), ALL_ACTIVE),
        (ItemFilter(user="alice"), {"a1", "a2"}),
        (ItemFilter(user="bob"), {"b1"}),
        (ItemFilter(user="carol"), set()),
        (ItemFilter(session="s1"), {"a1", "b1"}),
        (ItemFilter(session="s2"), {"a2"}),
        (ItemFilter(tags=("travel",)), {"a1", "a2"}),
        (ItemFilter(tags=("work",)), {"a1", "b1"}),
        (ItemFilter(tags=("travel", "work")), {"a1"}),
        (ItemFilter(tags=("work", "travel")), {"a1"}),
        (ItemFilter(tags=("travel", "nowhere")), set()),
        (ItemFilter(since=T0 + timedelta(days=1)), {"a2", "b1", "n1"}),
        (ItemFilter(until=T0 + timedelta(days=1)), {"a1"}),
        (ItemFilter(since=T0 + timedelta(days=1), until=T0 + timedelta(days=3)), {"a2", "b1"}),
        (ItemFilter(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=2)), set()),
        (ItemFilter(where={"source": "chat"}), {"a1", "b1"}),
        (ItemFilter(where={"source": "chat", "n": 1}), {"a1"}),
        (ItemFilter(where={"n": 2}), {"a2"}),
        (ItemFilter(where={"flag": True}), {"b1"}),
        (ItemFilter(where={"score": 0.5}), {"n1"}),
        (ItemFilter(where={"dotted.key-x": "v"}), {"n1"}),
        (ItemFilter(where={"source": "fax"}), set()),
        (ItemFilter(user="alice", session="s1", tags=("work",), where={"n": 1}), {"a1"}),
    ],
    ids=lambda v: repr(v) if isinstance(v, ItemFilter) else None,
)


@FILTER_CASES
def test_filter_item_ids(filter_store: Store, flt: ItemFilter, expected: set[str]) -> None:
    found = filter_store.filter_item_ids("notes", flt)
    assert len(found) == len(set(found))
    assert set(found) == expected


def test_filter_follows_updates(filter_store: Store) -> None:
    a1 = filter_store.get_item("a1")
    assert a1 is not None
    change, _ = revise(a1, user="bob", tags=("home",), metadata={"session": "s9"})
    filter_store.commit([change])
    assert set(filter_store.filter_item_ids("notes", ItemFilter(user="bob"))) == {"a1", "b1"}
    assert set(filter_store.filter_item_ids("notes", ItemFilter(tags=("work",)))) == {"b1"}
    assert set(filter_store.filter_item_ids("notes", ItemFilter(tags=("home",)))) == {"a1", "b1"}
    assert filter_store.filter_item_ids("notes", ItemFilter(session="s1")) == ["b1"]
    assert filter_store.filter_item_ids("notes", ItemFilter(session="s9")) == ["a1"]
    assert set(filter_store.filter_item_ids("diary", ItemFilter())) == {"d1"}


# keyword search -------------------------------------------------------------------------------


def found_ids(found: list[tuple[str, float]]) -> list[str]:
    return [item_id for item_id, _ in found]


@FILTER_CASES
def test_keyword_search_filters(filter_store: Store, flt: ItemFilter, expected: set[str]) -> None:
    # every item says "some text": only the filters (and the cube, and status) tell them apart
    found = found_ids(filter_store.keyword_search("notes", "some text", 100, flt))
    assert len(found) == len(set(found))
    assert set(found) == expected


@pytest.fixture
def word_store(store: Store) -> Store:
    store.create_cube(cube_info("notes"), actor="alice")
    store.create_cube(cube_info("diary"), actor="alice")
    texts = {
        "inv": "Invoice INV-2291 is overdue",
        "paint": "Melanie painted a sunrise over the lake",
        "lake": "We swam in the lake; the lake was cold",
        "other": "nothing in common here",
    }
    store.commit([create(make_item(item_id, "notes", text)) for item_id, text in texts.items()])
    store.commit([create(make_item("d-inv", "diary", "invoice INV-2291, in the diary"))])
    return store


def test_keyword_search_ranks_best_first(word_store: Store) -> None:
    found = word_store.keyword_search("notes", "lake", 10, ItemFilter())
    assert found_ids(found) == ["lake", "paint"]  # twice in a short text beats once
    scores = [score for _, score in found]
    assert all(score > 0 for score in scores)
    assert scores == sorted(scores, reverse=True)
    assert found_ids(word_store.keyword_search("notes", "lake", 1, ItemFilter())) == ["lake"]
    # any of the words is enough; an item with more of them ranks higher
    found = found_ids(word_store.keyword_search("notes", "cold sunrise Melanie", 10, ItemFilter()))
    assert found == ["paint", "lake"]
    assert word_store.keyword_search("notes", "zeppelin", 10, ItemFilter()) == []


def test_keyword_search_words_are_never_syntax(word_store: Store) -> None:
    def search(query: str) -> list[str]:
        return found_ids(word_store.keyword_search("notes", query, 10, ItemFilter()))

    assert search("INV-2291") == ["inv"]
    assert search("inv 2291") == ["inv"]
    assert search("LAKE") == ["lake", "paint"]
    assert search("NOT lake") == ["lake", "paint"]  # NOT is a word here, not an operator
    assert search('text:invoice OR "overdue') == ["inv"]
    hostile = [
        'what\'s "AND" NEAR(',
        '"',
        '""',
        "'",
        "*",
        "lake*",
        "-lake",
        "^lake",
        "AND",
        "OR OR",
        "NEAR(lake sunrise, 2)",
        "{text}: lake",
        "(((",
        ")",
        "\\",
        "%_",
        "lake'); DROP TABLE items; --",
        "\x01\x7f",
        "\u200b",
        "🙂",
        "?!",
        "+",
        " ",
    ]
    for query in hostile:
        assert set(search(query)) <= {"inv", "paint", "lake", "other"}, query
    assert search("lake'); DROP TABLE items; --")[0] == "lake"
    assert len(list(word_store.iter_items("notes"))) == 4


def test_keyword_search_stays_in_its_cube(word_store: Store) -> None:
    assert found_ids(word_store.keyword_search("diary", "invoice", 10, ItemFilter())) == ["d-inv"]
    assert found_ids(word_store.keyword_search("notes", "diary", 10, ItemFilter())) == []
    assert word_store.keyword_search("nowhere", "invoice", 10, ItemFilter()) == []


def test_keyword_search_follows_updates_deletes_and_restores(word_store: Store) -> None:
    def search(query: str) -> list[str]:
        return found_ids(word_store.keyword_search("notes", query, 10, ItemFilter()))

    lake = word_store.get_item("lake")
    assert lake is not None
    change, lake2 = revise(lake, text="We hiked up the mountain")
    word_store.commit([change])
    assert search("lake") == ["paint"]
    assert search("mountain") == ["lake"]
    delete, lake3 = revise(lake2, op=EventOp.DELETE, status=ItemStatus.DELETED)
    word_store.commit([delete])
    assert search("mountain") == []
    restore, lake4 = revise(lake3, op=EventOp.ROLLBACK, status=ItemStatus.ACTIVE)
    word_store.commit([restore])
    assert search("mountain") == ["lake"]
    archive, _ = revise(lake4, status=ItemStatus.ARCHIVED)
    word_store.commit([archive])
    assert search("mountain") == []
    # a retagged item keeps its words
    inv = word_store.get_item("inv")
    assert inv is not None
    word_store.commit([revise(inv, tags=("billing",))[0]])
    assert search("invoice") == ["inv"]


# events and changed_since ---------------------------------------------------------------------


@pytest.fixture
def log_store(store: Store) -> Store:
    """notes: 1 cube_create, 2 create a, 3 create b, 4 update a, 5 delete b, 6 update a."""
    store.create_cube(cube_info("notes"), actor="alice")
    store.create_cube(cube_info("diary"), actor="alice")
    a, b = make_item("a", "notes"), make_item("b", "notes")
    store.commit([create(a), create(b)])
    store.commit([create(make_item("d", "diary"))])
    a_update, a2 = revise(a, text="a2")
    b_delete, _ = revise(b, op=EventOp.DELETE, status=ItemStatus.DELETED)
    store.commit([a_update, b_delete])
    a_again, _ = revise(a2, text="a3")
    store.commit([a_again])
    return store


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


def test_events_filters(log_store: Store) -> None:
    everything = log_store.events("notes")
    assert seqs(everything) == [1, 2, 3, 4, 5, 6]
    assert all(e.cube == "notes" for e in everything)
    assert seqs(log_store.events("notes", after_seq=3)) == [4, 5, 6]
    assert seqs(log_store.events("notes", until_seq=2)) == [1, 2]
    assert seqs(log_store.events("notes", after_seq=2, until_seq=4)) == [3, 4]
    assert seqs(log_store.events("notes", after_seq=3, until_seq=4)) == [4]
    assert log_store.events("notes", after_seq=6) == []
    assert log_store.events("notes", after_seq=4, until_seq=4) == []
    assert seqs(log_store.events("notes", item_id="a")) == [2, 4, 6]
    assert seqs(log_store.events("notes", item_id="b")) == [3, 5]
    assert seqs(log_store.events("notes", item_id="a", after_seq=2, until_seq=5)) == [4]
    assert log_store.events("notes", item_id="d") == []
    assert seqs(log_store.events("diary")) == [1, 2]
    # a slice is exactly the corresponding part of the full log
    assert log_store.events("notes", after_seq=1, until_seq=5) == everything[1:5]


def test_changed_since(log_store: Store) -> None:
    assert log_store.changed_since("notes", 0) == ({"a", "b"}, 6)
    assert log_store.changed_since("notes", 1) == ({"a", "b"}, 6)
    assert log_store.changed_since("notes", 4) == ({"a", "b"}, 6)
    assert log_store.changed_since("notes", 5) == ({"a"}, 6)
    assert log_store.changed_since("notes", 6) == (set(), 6)
    assert log_store.changed_since("diary", 0) == ({"d"}, 2)
    assert log_store.changed_since("diary", 2) == (set(), 2)


# import ---------------------------------------------------------------------------------------


def test_import_cube_writes_identical_events(log_store: Store, make_store: StoreFactory) -> None:
    items = list(log_store.iter_items("notes"))
    info = log_store.get_cube("notes")
    assert info is not None
    data = CubeImport(
        cube=info,
        events=log_store.events("notes"),
        items=items,
        vectors=log_store.get_vectors([i.id for i in items]),
    )
    target = make_store()
    target.create_cube(cube_info("other"), actor="bob")
    other_before = state(target)["other"]

    target.import_cube(data)

    assert target.get_cube("notes") == info
    assert target.events("notes") == log_store.events("notes")
    assert target.head("notes") == log_store.head("notes")
    assert sorted(target.iter_items("notes"), key=lambda i: i.id) == sorted(
        items, key=lambda i: i.id
    )
    got = target.get_vectors([i.id for i in items])
    assert {k: v.tobytes() for k, v in got.items()} == {
        k: v.tobytes() for k, v in data.vectors.items()
    }
    assert set(target.filter_item_ids("notes", ItemFilter())) == set(
        log_store.filter_item_ids("notes", ItemFilter())
    )
    for query in ("a3", "a2 some text"):
        imported = target.keyword_search("notes", query, 10, ItemFilter())
        assert imported == log_store.keyword_search("notes", query, 10, ItemFilter())
    assert found_ids(target.keyword_search("notes", "a3 text", 10, ItemFilter())) == ["a"]
    assert target.changed_since("notes", 4) == log_store.changed_since("notes", 4)
    check_chain(target, "notes")
    assert state(target)["other"] == other_before

    # the imported chain continues where the export ended
    a = target.get_item("a")
    assert a is not None
    change, _ = revise(a, text="after import")
    (event,) = target.commit([change])
    assert event.seq == 7
    assert event.prev_hash == log_store.head("notes")[1]
    check_chain(target, "notes")

    # importing over an existing cube is refused and changes nothing
    before = state(target)
    with pytest.raises(CubeExists):
        target.import_cube(data)
    assert state(target) == before
