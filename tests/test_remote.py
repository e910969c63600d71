"""The SDK's two faces, one suite: each test runs on an embedded handle and over HTTP.

``embedded`` is ``MemOS.open(...).as_principal(...)``; ``http`` is ``MemOS.connect(url, ...)``
to a real uvicorn server on loopback over the same kind of data directory, with an API key of
the same principal. Both must return the same models and raise the same typed errors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _backends import FACES, Connect, clients
from _canned import Canned, canned_server
from _servers import free_port, serve
from memos.api import ServerSettings

from memos import (
    CubeInfo,
    CubeStats,
    Event,
    EventOp,
    HashEmbedder,
    HistoryEntry,
    ItemDiff,
    ItemStatus,
    MemoryItem,
    MemOS,
    SearchHit,
    VerifyReport,
)
from memos.engine._handle import Handle
from memos.engine._jobs import Jobs
from memos.engine._kv import KV
from memos.engine._lora import Lora
from memos.engine._remote import RemoteMemOS
from memos.errors import (
    AccessDenied,
    CubeExists,
    CubeNotFound,
    InvalidInput,
    ItemNotFound,
    MemosError,
    NotFound,
    StorageError,
    TextTooLong,
    Unauthenticated,
    VersionConflict,
)

Client = MemOS | RemoteMemOS


@pytest.fixture(params=FACES)
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connect]:
    """Make clients that act as a principal, on the face the test is parametrized with (see
    ``_backends``)."""
    with clients(request.param, tmp_path / "data", embedder=HashEmbedder(64)) as (_, connect):
        yield connect


@pytest.fixture
def sdk(connect: Connect) -> Any:
    """Alice's client: ``MemOS`` embedded, ``RemoteMemOS`` over HTTP."""
    return connect("alice")


@pytest.fixture
def notes(sdk: Any) -> str:
    return str(sdk.create_cube("notes").name)


# cubes and items --------------------------------------------------------------------------


def test_create_list_and_get_cube(sdk: Any) -> None:
    info = sdk.create_cube("notes", codec="fp16")
    assert isinstance(info, CubeInfo)
    # a principal's cube is named in its namespace; the short name still finds it
    assert (info.name, info.owner, info.codec, info.dim) == ("alice:notes", "alice", "fp16", 64)
    assert sdk.get_cube("notes") == sdk.get_cube("alice:notes") == info
    assert sdk.list_cubes() == [info]
    stats = sdk.cube_stats("notes")
    assert isinstance(stats, CubeStats)
    assert (stats.cube, stats.items_active) == ("alice:notes", 0)
    with pytest.raises(CubeExists):
        sdk.create_cube("notes")


def test_item_lifecycle_add_get_update_delete_rollback(sdk: Any, notes: str) -> None:
    item = sdk.add(
        "Alice moved to Lisbon", cube=notes, user="alice", tags=["travel"],
        metadata={"source": "chat", "session": "s1"},
    )  # fmt: skip
    assert isinstance(item, MemoryItem)
    assert (item.version, item.tags, item.session) == (1, ("travel",), "s1")
    assert sdk.get(item.id) == item
    updated = sdk.update(item.id, "Alice moved to Porto", tags=["travel", "home"], reason="typo")
    assert (updated.version, updated.text, updated.tags) == (2, "Alice moved to Porto",
                                                            ("travel", "home"))  # fmt: skip
    deleted = sdk.delete(item.id, reason="gone", expected_version=2)
    assert (deleted.version, deleted.status) == (3, ItemStatus.DELETED)
    restored = sdk.rollback(item.id, to_version=1, reason="undo")
    assert (restored.version, restored.text, restored.status) == (
        4, "Alice moved to Lisbon", ItemStatus.ACTIVE,
    )  # fmt: skip
    history = sdk.history(item.id)
    assert all(isinstance(entry, HistoryEntry) for entry in history)
    assert [e.version for e in history] == [1, 2, 3, 4]
    assert [e.event.op for e in history] == [EventOp.CREATE, EventOp.UPDATE, EventOp.DELETE,
                                             EventOp.ROLLBACK]  # fmt: skip
    assert history[1].event.reason == "typo"
    diff = sdk.diff(item.id, 1, 2)
    assert isinstance(diff, ItemDiff)
    assert {c.field for c in diff.changes} >= {"text", "tags"}
    assert "Porto" in diff.text_diff


def test_add_chat_messages_and_add_many_in_batches(sdk: Any, notes: str) -> None:
    stamp = "2023-05-08T13:56:00+00:00"
    messages = [
        {"role": "user", "content": "I adopted a collie", "timestamp": stamp},
        {"role": "assistant", "content": "What is its name?"},
    ]
    added = sdk.add(messages, cube=notes, user="alice", session="s7")
    assert [i.metadata["role"] for i in added] == ["user", "assistant"]
    assert all(i.session == "s7" for i in added)
    assert added[0].occurred_at == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    seen: list[int] = []
    records: list[Any] = ["plain text one", {"text": "a record", "tags": ["x"]}, "three",
                          {"role": "user", "content": "a message"}, "five"]  # fmt: skip
    many = sdk.add_many(iter(records), cube=notes, tags=["bulk"], batch_size=2,
                        progress=seen.append)  # fmt: skip
    assert seen == [2, 2, 1]
    assert [i.text for i in many] == ["plain text one", "a record", "three", "a message", "five"]
    assert [i.tags for i in many[:2]] == [("bulk",), ("x",)]  # a record's own tags win
    assert len(sdk.log(notes)) == 1 + 2 + 5
    with pytest.raises(InvalidInput):
        sdk.add_many([], cube=notes)
    with pytest.raises(InvalidInput):
        sdk.add([], cube=notes)
    with pytest.raises(InvalidInput):
        sdk.add_many(["ok"], cube=notes, batch_size=0)


def test_search_filters_and_modes(sdk: Any, notes: str) -> None:
    early = datetime(2020, 1, 1, tzinfo=UTC)
    sdk.add("the cat sleeps on the sofa", cube=notes, user="ann", tags=["pets"],
            metadata={"room": "living"}, session="a", occurred_at=early)  # fmt: skip
    sdk.add("the dog sleeps in the garden", cube=notes, user="ben", tags=["pets"],
            metadata={"room": "garden"}, session="b")  # fmt: skip
    sdk.add("the kettle is in the kitchen", cube=notes, user="ann", tags=["home"])
    for mode in ("dense", "keyword", "hybrid"):
        hits = sdk.search("sleeps", cube=notes, k=3, mode=mode)
        assert hits
        assert all(isinstance(h, SearchHit) for h in hits)
    keyword = sdk.search("kettle kitchen", cube=notes, k=1, mode="keyword")
    assert keyword[0].item.text == "the kettle is in the kitchen"

    def texts(**filters: Any) -> set[str]:
        return {h.item.text for h in sdk.search("sleeps", cube=notes, k=10, **filters)}

    assert texts(user="ben") == {"the dog sleeps in the garden"}
    assert texts(tags=["home"]) == {"the kettle is in the kitchen"}
    assert texts(where={"room": "living"}) == {"the cat sleeps on the sofa"}
    assert texts(session="b") == {"the dog sleeps in the garden"}
    assert texts(until=datetime(2021, 1, 1, tzinfo=UTC)) == {"the cat sleeps on the sofa"}
    assert "the cat sleeps on the sofa" not in texts(since="2021-01-01T00:00:00+00:00")
    with pytest.raises(InvalidInput):
        sdk.search("sleeps", cube=notes, mode="fuzzy")
    with pytest.raises(InvalidInput):
        sdk.search("", cube=notes)


def test_list_memories_pages_through_the_filtered_cube_oldest_first(
    sdk: Any, connect: Connect, notes: str
) -> None:
    added = [
        sdk.add(f"memory {n}", cube=notes, user="ann" if n % 2 else "ben",
                tags=[] if n % 2 else ["even"], metadata={"n": n})
        for n in range(7)
    ]  # fmt: skip
    sdk.delete(added[3].id)
    active = [item for item in added if item.id != added[3].id]
    assert sdk.list_memories(cube=notes) == [sdk.get(item.id) for item in active]
    pages, after = [], None
    while page := sdk.list_memories(cube=notes, limit=2, after=after):
        pages.append([item.text for item in page])
        after = page[-1].id
    assert pages == [["memory 0", "memory 1"], ["memory 2", "memory 4"], ["memory 5", "memory 6"]]
    assert [i.text for i in sdk.list_memories(cube=notes, user="ann")] == ["memory 1", "memory 5"]
    assert [i.text for i in sdk.list_memories(cube=notes, tags=["even"], where={"n": 4})] == [
        "memory 4"
    ]
    # a read of the catalogue: no use is counted (a search's hit is one)
    assert sdk.access_stats([i.id for i in active]) == {}
    hit = sdk.search("memory 6", cube=notes, k=1, mode="keyword")[0].item
    assert list(sdk.access_stats([i.id for i in active])) == [hit.id]
    for bad in ({"limit": 0}, {"limit": 10**6}, {"after": 5}, {"where": {"n": [1]}}):
        with pytest.raises(InvalidInput):
            sdk.list_memories(cube=notes, **bad)
    with pytest.raises(CubeNotFound):  # another principal's cube is not there to list
        connect("bob").list_memories(cube="alice:notes")


def test_log_verify_and_rollback_cube(sdk: Any, notes: str) -> None:
    first = sdk.add("first memory", cube=notes)
    keep_seq = sdk.log(notes)[-1].seq
    sdk.update(first.id, "first memory, changed")
    later = sdk.add("a later memory", cube=notes)
    events = sdk.log(notes)
    assert all(isinstance(e, Event) for e in events)
    assert [e.op for e in events] == [EventOp.CUBE_CREATE, EventOp.CREATE, EventOp.UPDATE,
                                      EventOp.CREATE]  # fmt: skip
    assert sdk.log(notes, after_seq=keep_seq) == events[2:]
    assert sdk.log(notes, limit=1) == events[-1:]
    report = sdk.verify(notes)
    assert isinstance(report, VerifyReport)
    assert (report.ok, report.events, report.head_seq) == (True, 4, events[-1].seq)
    assert sdk.verify_all() == [report]
    changed = sdk.rollback_cube(notes, to_seq=keep_seq, reason="back")
    assert {i.id for i in changed} == {first.id, later.id}
    assert sdk.get(first.id).text == "first memory"
    assert sdk.get(later.id).status == ItemStatus.DELETED
    assert sdk.verify(notes).ok


def test_reencode_refit_and_access_stats(sdk: Any, notes: str) -> None:
    item = sdk.add("a memory to count", cube=notes)
    info = sdk.reencode(notes, codec="fp16", reason="smaller")
    assert info.codec == "fp16"
    assert sdk.log(notes)[-1].op == EventOp.REENCODE
    with pytest.raises(InvalidInput):
        sdk.refit(notes)  # fp16 is not a fitted codec
    assert sdk.access_stats([item.id]) == {}
    with pytest.raises(InvalidInput):
        sdk.access_stats(item.id)


def test_grant_and_revoke(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    shared = alice.create_cube("shared").name
    item = alice.add("the spare key is under the flowerpot", cube="shared")
    with pytest.raises(CubeNotFound):
        bob.get_cube(shared)
    with pytest.raises(ItemNotFound):
        bob.get(item.id)
    info = alice.grant("shared", "bob", "read", reason="reader")
    assert info.grants == {"bob": "read"}
    assert bob.get(item.id) == item
    assert [h.item.id for h in bob.search("spare key", cube=shared)] == [item.id]
    with pytest.raises(AccessDenied):
        bob.add("bob was here", cube=shared)
    with pytest.raises(AccessDenied):
        bob.grant(shared, "carol")
    alice.grant("shared", "bob", "write")
    assert bob.add("bob was here", cube=shared).cube == shared == "alice:shared"
    assert alice.revoke("shared", "bob").grants == {}
    with pytest.raises(CubeNotFound):
        bob.log(shared)
    with pytest.raises(NotFound):
        alice.revoke("shared", "bob")


# portability --------------------------------------------------------------------------------


def _fresh(path: Path) -> MemOS:
    return MemOS.open(path, embedder=HashEmbedder(64))


def test_export_then_import_into_another_data_dir(sdk: Any, notes: str, tmp_path: Path) -> None:
    item = sdk.add("exported memory", cube=notes, tags=["t"])
    sdk.update(item.id, "exported memory, revised")
    exported = sdk.export_cube(notes, tmp_path / "export")
    assert exported == tmp_path / "export"
    assert (exported / "manifest.json").is_file()
    with _fresh(tmp_path / "other") as other:
        alice = other.as_principal("alice")
        assert alice.import_cube(exported).name == notes
        assert alice.verify(notes).ok
        assert [e.hash for e in alice.log(notes)] == [e.hash for e in sdk.log(notes)]
        assert alice.get(item.id) == sdk.get(item.id)
    with pytest.raises(InvalidInput):
        sdk.export_cube(notes, exported)  # not empty


def test_import_an_export_made_elsewhere(sdk: Any, tmp_path: Path) -> None:
    with _fresh(tmp_path / "origin") as origin:
        alice = origin.as_principal("alice")
        alice.create_cube("moved")
        alice.add_many(["one", "two", "three"], cube="moved")
        hashes = [e.hash for e in alice.log("moved")]
        directory = alice.export_cube("moved", tmp_path / "moved")
    info = sdk.import_cube(directory)
    assert (info.name, info.owner) == ("alice:moved", "alice")
    assert sdk.verify("moved").ok
    assert [e.hash for e in sdk.log("moved")] == hashes
    assert {h.item.text for h in sdk.search("two", cube="moved", k=3)} == {"one", "two", "three"}
    with pytest.raises(CubeExists):
        sdk.import_cube(directory)
    with pytest.raises(InvalidInput):
        sdk.import_cube(tmp_path / "no-such-export")


# typed errors -------------------------------------------------------------------------------

ERROR_CASES: dict[str, tuple[type[MemosError], Callable[[Any, str, MemoryItem], object]]] = {
    "cube_not_found": (CubeNotFound, lambda m, c, i: m.get_cube("nope")),
    "item_not_found": (ItemNotFound, lambda m, c, i: m.get("0" * 32)),
    "item_not_found_non_str": (ItemNotFound, lambda m, c, i: m.get(42)),
    "item_not_found_dots": (ItemNotFound, lambda m, c, i: m.delete("..")),
    "item_not_found_slash": (ItemNotFound, lambda m, c, i: m.history("a/b")),
    "version_conflict": (VersionConflict, lambda m, c, i: m.update(i.id, "x", expected_version=7)),
    "invalid_input_empty": (InvalidInput, lambda m, c, i: m.add("", cube=c)),
    "invalid_input_cube_name": (InvalidInput, lambda m, c, i: m.log("../etc")),
    "invalid_input_user": (InvalidInput, lambda m, c, i: m.update(i.id, "x", user="")),
    "invalid_input_tags": (InvalidInput, lambda m, c, i: m.add("x", cube=c, tags="travel")),
    "invalid_input_k": (InvalidInput, lambda m, c, i: m.search("x", cube=c, k=0)),
    "text_too_long": (TextTooLong, lambda m, c, i: m.add("x" * 40_000, cube=c)),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_typed_errors_are_the_same_on_both_faces(sdk: Any, notes: str, case: str) -> None:
    expected, call = ERROR_CASES[case]
    item = sdk.add("a memory", cube=notes)
    before = sdk.log(notes)
    with pytest.raises(MemosError) as caught:
        call(sdk, notes, item)
    assert type(caught.value) is expected
    assert caught.value.code == expected.code
    assert caught.value.message
    assert sdk.log(notes) == before  # a failing call changes nothing


def test_error_details_travel(sdk: Any, notes: str) -> None:
    item = sdk.add("a memory", cube=notes)
    with pytest.raises(VersionConflict) as caught:
        sdk.delete(item.id, expected_version=3)
    assert caught.value.details == {"item_id": item.id, "current": 1, "expected": 3}
    assert caught.value.to_dict()["error"]["code"] == "version_conflict"


def test_a_reader_writing_is_access_denied(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    diary = alice.create_cube("diary").name
    item = alice.add("dear diary", cube=diary)
    alice.grant("diary", "bob", "read")
    writes: list[Callable[[], object]] = [
        lambda: bob.add("bob", cube=diary),
        lambda: bob.add_many(["bob"], cube=diary),
        lambda: bob.update(item.id, "bob"),
        lambda: bob.delete(item.id),
        lambda: bob.rollback(item.id, to_version=1),
        lambda: bob.rollback_cube(diary, to_seq=1),
        lambda: bob.reencode(diary, codec="fp16"),
    ]
    for write in writes:
        with pytest.raises(AccessDenied) as caught:
            write()
        assert caught.value.code == "access_denied"
    assert alice.get(item.id) == item


def test_chat_on_a_cube_the_caller_cannot_see_loads_no_model(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    private = alice.create_cube("private").name
    with pytest.raises(CubeNotFound):
        bob.chat("what is in the cube?", cube=private)


# HTTP only ----------------------------------------------------------------------------------


def _parameters(function: Callable[..., object]) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_the_one_method_the_client_writes_keeps_the_embedded_signature() -> None:
    # the client writes only add_many (a batch sent in parts); all else is declared once
    written = {n for n in vars(RemoteMemOS) if not n.startswith("_") and n != "url"}
    assert written == {"add_many", "close"}
    for name in written:
        assert _parameters(getattr(RemoteMemOS, name)) == _parameters(getattr(MemOS, name))


def test_the_embedded_tiers_have_the_catalogs_signatures() -> None:
    from memos.activation import KVMemory
    from memos.engine._kv import EmbeddedKV
    from memos.engine._lora import EmbeddedLora
    from memos.parametric import LoraMemory

    # ``extra`` (more fields of an event's payload) is the scheduler's, not the SDK's
    for tier, catalog in ((EmbeddedKV, KVMemory), (EmbeddedLora, LoraMemory)):
        public = {n for k in tier.__mro__[:-3] for n in vars(k) if not n.startswith("_")}
        assert len(public) >= 6
        for name in public:
            theirs = [p for p in _parameters(getattr(catalog, name)) if p[0] != "extra"]
            assert _parameters(getattr(tier, name)) == theirs, name


def test_both_handles_are_handles_with_the_same_namespaces(connect: Connect) -> None:
    handle = connect("alice")
    assert isinstance(handle, Handle)
    assert isinstance(handle.kv, KV)
    assert isinstance(handle.lora, Lora)
    assert isinstance(handle.jobs, Jobs)
    assert handle.kv is handle.kv  # made once per handle


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, MemOS]]:
    mos = MemOS.open(tmp_path / "data", embedder=HashEmbedder(64))
    with serve(mos, ServerSettings(store=f"sqlite:///{tmp_path / 'data'}")) as url:
        yield url, mos


def test_a_wrong_api_key_is_unauthenticated(server: tuple[str, MemOS]) -> None:
    url, mos = server
    key, token = mos.keys.create("alice")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for wrong in (forged, "memos_000000000000_" + "x" * 43, "not-a-key"):
        with MemOS.connect(url, api_key=wrong) as client, pytest.raises(Unauthenticated) as caught:
            client.list_cubes()
        assert (caught.value.status, caught.value.code) == (401, "unauthenticated")
    mos.keys.revoke(key.id)
    with MemOS.connect(url, api_key=token) as client, pytest.raises(Unauthenticated):
        client.list_cubes()


def test_reasons_of_deletes_travel_in_the_query(server: tuple[str, MemOS]) -> None:
    url, mos = server
    _, token = mos.keys.create("alice")
    with MemOS.connect(url, api_key=token) as alice:
        alice.create_cube("c")
        alice.grant("c", "team/bob")
        assert alice.revoke("c", "team/bob", reason="left the team").grants == {}
        last = alice.log("c")[-1]
        assert (last.op, last.reason) == (EventOp.REVOKE, "left the team")
        assert alice.create_cube("d", owner="alice").name == "alice:d"
        with pytest.raises(AccessDenied, match="owned by 'bob'"):
            alice.create_cube("e", owner="bob")


def test_an_unreachable_server_is_a_storage_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with MemOS.connect(url, api_key="memos_x") as client, pytest.raises(StorageError) as caught:
        client.list_cubes()
    assert url in caught.value.message
    assert caught.value.status == 503


def test_bad_connect_arguments_are_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        MemOS.connect("localhost:8000", api_key="k")
    with pytest.raises(InvalidInput):
        MemOS.connect("http://localhost:8000", api_key="k\nX-Evil: 1")
    with pytest.raises(InvalidInput):
        MemOS.connect("http://localhost:8000", api_key="k", timeout=0)


@contextmanager
def _answering(status: int, body: bytes) -> Iterator[RemoteMemOS]:
    """A client of a server that answers every request with ``status`` and ``body``."""
    with canned_server(Canned(status, [body])) as server, RemoteMemOS(server.url, api_key="k") as c:
        yield c


def test_an_unknown_error_code_keeps_the_servers_status_and_code() -> None:
    body = b'{"error": {"code": "teapot", "message": "short and stout", "details": {"a": 1}}}'
    with _answering(418, body) as client, pytest.raises(MemosError) as caught:
        client.list_cubes()
    error = caught.value
    assert (error.status, error.code, error.message, error.details) == (
        418, "teapot", "short and stout", {"a": 1},
    )  # fmt: skip
    assert error.to_dict()["error"]["code"] == "teapot"


def test_an_answer_without_the_envelope_names_the_status() -> None:
    with _answering(502, b"<html>bad gateway</html>") as client, pytest.raises(MemosError) as e:
        client.get_cube("c")
    assert (e.value.status, e.value.code) == (502, "http_error")
    assert "502" in e.value.message
