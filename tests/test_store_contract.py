"""The contract every ``Store`` backend passes.

The tests talk to a store only through the ``Store`` protocol; what a backend needs to exist
(a file, a server, a key prefix) lives in the ``make_store`` factory below, so adding a backend
means adding one entry to ``BACKENDS`` (and, for one that keeps data outside the tmp dir, a
cleanup in ``CLEANUPS``) and nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _backends import STORES
from _backends import store_url as backend_url

from memos import Change, CubeImport, CubeInfo, Event, EventOp, ItemFilter, MemoryItem, Store
from memos.core._chain import GENESIS_HASH, verify_chain
from memos.core._store import Vector, open_store
from memos.core._types import Access, ApiKey, DerivedEntry, ItemStatus, SourceRef
from memos.errors import (
    Conflict,
    CubeExists,
    CubeNotFound,
    InvalidInput,
    ItemNotFound,
    NotFound,
    VersionConflict,
)

DIM = 8
T0 = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)

StoreFactory = Callable[[], Store]


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


# helpers --------------------------------------------------------------------------------------


def cube_info(name: str, owner: str = "alice") -> CubeInfo:
    return CubeInfo(name=name, owner=owner, embedder="hash-8", dim=DIM, created_at=T0)


def vec(seed: int) -> Vector:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def make_item(
    item_id: str,
    cube: str,
    text: str = "some text",
    *,
    user: str | None = "alice",
    tags: tuple[str, ...] = (),
    metadata: dict[str, Any] | None = None,
    occurred_at: datetime = T0,
    version: int = 1,
    status: ItemStatus = ItemStatus.ACTIVE,
) -> MemoryItem:
    return MemoryItem(
        id=item_id,
        cube=cube,
        text=text,
        user=user,
        tags=tags,
        metadata=metadata or {},
        occurred_at=occurred_at,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=version),
        version=version,
        status=status,
    )


def create(item: MemoryItem, vector: Vector | None = None, **kw: Any) -> Change:
    return Change(
        op=EventOp.CREATE,
        cube=item.cube,
        actor=kw.pop("actor", "alice"),
        ts=kw.pop("ts", T0),
        item_id=item.id,
        after=item,
        vector=vec(zlib.crc32(item.id.encode())) if vector is None else vector,
        expected_version=kw.pop("expected_version", 0),
        **kw,
    )


def revise(
    item: MemoryItem,
    *,
    vector: Vector | None = None,
    expected_version: int | None = -1,
    op: EventOp = EventOp.UPDATE,
    reason: str | None = None,
    **fields: Any,
) -> tuple[Change, MemoryItem]:
    """The change that moves ``item`` to its next version with ``fields`` replaced."""
    after = item.model_copy(update={"version": item.version + 1, **fields})
    expected = item.version if expected_version == -1 else expected_version
    change = Change(
        op=op,
        cube=item.cube,
        actor="alice",
        ts=T0 + timedelta(minutes=after.version),
        item_id=item.id,
        after=after,
        vector=vector,
        expected_version=expected,
        reason=reason,
    )
    return change, after


def check_chain(store: Store, cube: str) -> None:
    report = verify_chain(
        cube, store.events(cube), head=store.head(cube), items=store.iter_items(cube)
    )
    assert report.ok, report
    assert report.head_seq == store.head(cube)[0]


def state(store: Store) -> dict[str, Any]:
    """Everything observable through the protocol, for all-or-nothing checks."""
    out: dict[str, Any] = {}
    for info in store.list_cubes():
        items = list(store.iter_items(info.name))
        vectors = store.get_vectors([i.id for i in items])
        every_word = " ".join(item.text for item in items) or "nothing"
        out[info.name] = {
            "info": info,
            "head": store.head(info.name),
            "events": store.events(info.name),
            "items": items,
            "vectors": {k: v.tobytes() for k, v in sorted(vectors.items())},
            "keyword": store.keyword_search(info.name, every_word, 1000, ItemFilter()),
        }
    return out


# cubes ----------------------------------------------------------------------------------------


def test_store_satisfies_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(store.url, str)


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


def api_key(key_id: str, principal: str = "alice", minutes: int = 0) -> ApiKey:
    return ApiKey(
        id=key_id,
        principal=principal,
        secret_sha256=hashlib.sha256(key_id.encode()).hexdigest(),
        created_at=T0 + timedelta(minutes=minutes),
    )


def test_api_keys_round_trip_and_revoke(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.list_api_keys() == []
    first, second = api_key("k2", minutes=0), api_key("k1", principal="bob", minutes=1)
    store.put_api_key(first)
    store.put_api_key(second)
    with pytest.raises(Conflict):
        store.put_api_key(api_key("k1", principal="mallory"))
    assert store.get_api_key("k1") == second
    assert store.get_api_key("nope") is None
    assert store.list_api_keys() == [first, second]
    revoked = store.revoke_api_key("k1", T0 + timedelta(hours=1))
    assert revoked == second.model_copy(update={"revoked_at": T0 + timedelta(hours=1)})
    assert store.revoke_api_key("k1", T0 + timedelta(hours=2)) == revoked
    with pytest.raises(NotFound):
        store.revoke_api_key("nope", T0)
    store.close()
    again = open_store(store.url)
    try:
        assert again.list_api_keys() == [first, revoked]
    finally:
        again.close()


def test_blobs_are_content_addressed(store: Store) -> None:
    data = b"\x00safetensors bytes \xff" * 100
    digest = store.put_blob(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.put_blob(data) == digest  # idempotent
    assert store.get_blob(digest) == data
    assert store.get_blob(hashlib.sha256(b"other").hexdigest()) is None
    empty = store.put_blob(b"")
    assert store.get_blob(empty) == b""
    for bad in ("", "../memos.db", "AB" * 32, "g" * 64, digest[:-1], "/" + digest[1:]):
        with pytest.raises(InvalidInput):
            store.get_blob(bad)


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


# derived artifacts and access statistics ---------------------------------------------------


def derived_entry(entry_id: str, cube: str, *sources: MemoryItem) -> DerivedEntry:
    return DerivedEntry(
        id=entry_id,
        cube=cube,
        kind="kv",
        blob="ab" * 32,
        size=10,
        sources=tuple(SourceRef(item_id=s.id, version=s.version) for s in sources),
        manifest={"any": "json"},
        created_at=T0,
    )


def build(entry: DerivedEntry) -> Change:
    return Change(op=EventOp.KV_BUILD, cube=entry.cube, actor="alice", ts=T0, derived=entry)


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


def test_access_is_counted_and_decays(store: Store) -> None:
    store.create_cube(cube_info("c"), actor="alice")
    day = 24 * 3600.0
    store.record_access(["a", "b", "a"], T0, half_life_s=day)
    store.record_access(["a"], T0 + timedelta(days=1), half_life_s=day)
    stats = store.access_stats(["a", "b", "never"])
    assert set(stats) == {"a", "b"}
    assert stats["a"].count == 2
    assert stats["b"].count == 1
    assert stats["a"].last_access == T0 + timedelta(days=1)
    assert stats["a"].frequency == pytest.approx(1.5)
    assert stats["b"].frequency == pytest.approx(1.0)


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
