"""The model tiers and chat streaming on the SDK's two faces, and the server's model routes.

Each parametrized test runs on an embedded handle and over HTTP (a uvicorn server on an
embedded store, and one on the Redis store), on the tiny random Llama: KV caches and adapters
come back as the SDK's own models, adapters travel out and back in as peft directories, and a
chat streams its pieces. The HTTP-only tests send crafted adapter archives, read a stream as it
arrives, and check that the published schemas of the model tiers are the SDK's models.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _backends import FACES, clients
from _canned import Canned, canned_server
from fastapi.testclient import TestClient
from memos.api import ServerSettings, create_app
from pydantic import BaseModel

from memos import ChatReply, Event, EventOp, HashEmbedder, MemOS
from memos.activation import KVEntry, KVManifest
from memos.engine._remote import RemoteMemOS
from memos.errors import (
    CubeNotFound,
    InvalidInput,
    MemosError,
    NotFound,
    StorageError,
    VersionConflict,
)
from memos.llm import LocalModel, ModelFingerprint
from memos.parametric import AdapterEntry, AdapterManifest, LoraSettings

CUBE = "facts"
FACTS = ["alice moved to lisbon in may", "the capital of france is paris"]
# a few steps: these tests move adapters around, they do not measure what they learned
QUICK = {"max_steps": 3, "batch_size": 2, "recall_every": 1000}
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "memos_manifest.json"]


@pytest.fixture(params=FACES)
def sdk(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: LocalModel) -> Iterator[Any]:
    """Alice's client on the tiny model, on the face the test is parametrized with."""
    handle = {"embedder": HashEmbedder(64), "model": tiny_model}
    with clients(request.param, tmp_path / "data", **handle) as (_, connect):
        yield connect("alice")


@pytest.fixture
def facts(sdk: Any) -> list[str]:
    sdk.create_cube(CUBE)
    return [item.id for item in sdk.add_many(FACTS, cube=CUBE)]


@pytest.fixture
def trained(sdk: Any, facts: list[str]) -> AdapterEntry:
    entry: AdapterEntry = sdk.lora.consolidate(CUBE, facts, name="trip", recipe=QUICK, density=None)
    return entry


# both faces ---------------------------------------------------------------------------------


def test_kv_entries_are_the_sdks_models(sdk: Any, facts: list[str]) -> None:
    entry = sdk.kv.build(CUBE, facts, reason="warm")
    assert isinstance(entry, KVEntry)
    assert [(s.item_id, s.version) for s in entry.sources] == [(i, 1) for i in facts]
    assert sdk.kv.list(CUBE) == [entry]
    assert sdk.kv.get(CUBE, entry.id) == entry
    reply = sdk.chat("where is alice", cube=CUBE, k=2, max_new_tokens=2)
    assert (reply.kv_entry, reply.cached_tokens) == (entry.id, entry.tokens)
    dropped = sdk.kv.drop(CUBE, entry.id, reason="cold")
    assert isinstance(dropped, Event)
    assert (dropped.op, dropped.reason) == (EventOp.KV_DROP, "cold")
    assert sdk.kv.list(CUBE) == []


def test_adapter_entries_are_the_sdks_models(sdk: Any, trained: AdapterEntry) -> None:
    assert isinstance(trained, AdapterEntry)
    assert (trained.name, trained.version, trained.manifest.origin) == ("trip", 1, "consolidate")
    assert trained.manifest.recipe is not None
    assert sdk.lora.list(CUBE) == [trained]
    assert sdk.lora.show(CUBE, "trip") == trained
    restored = sdk.lora.rollback(CUBE, "trip", to_version=1, reason="again")
    assert isinstance(restored, AdapterEntry)
    assert (restored.version, restored.manifest.from_version) == (2, 1)
    assert sdk.lora.show(CUBE, "trip", version=1) == trained
    assert sdk.lora.list(CUBE, "trip") == [trained, restored]


def test_an_adapter_exported_and_imported_answers_the_same(
    sdk: Any, trained: AdapterEntry, tmp_path: Path
) -> None:
    directory = sdk.lora.export(CUBE, "trip", tmp_path / "trip")
    assert directory == tmp_path / "trip"
    assert sorted(p.name for p in directory.iterdir()) == ADAPTER_FILES
    imported = sdk.lora.import_adapter(CUBE, directory, name="copy", reason="moved")
    assert isinstance(imported, AdapterEntry)
    assert (imported.name, imported.version, imported.manifest.origin) == ("copy", 1, "import")
    assert imported.manifest.parameters == trained.manifest.parameters
    assert sdk.log(CUBE)[-1].reason == "moved"
    ask = {"cube": CUBE, "max_new_tokens": 6, "retrieve": False}
    assert (
        sdk.chat("where is alice", adapter="copy", **ask).tokens
        == sdk.chat("where is alice", adapter="trip", **ask).tokens
    )
    older = sdk.lora.export(CUBE, "trip", tmp_path / "v1", version=1)
    assert (older / "adapter_model.safetensors").read_bytes() == (
        directory / "adapter_model.safetensors"
    ).read_bytes()


def test_bad_adapter_exports_and_imports_are_refused_alike(
    sdk: Any, trained: AdapterEntry, tmp_path: Path
) -> None:
    before = sdk.log(CUBE)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput):
        sdk.lora.export(CUBE, "trip", full)
    with pytest.raises(NotFound):
        sdk.lora.export(CUBE, "nope", tmp_path / "nope")
    with pytest.raises(NotFound):
        sdk.lora.export(CUBE, "trip", tmp_path / "v9", version=9)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text("{}")
    (pickled / "adapter_model.bin").write_bytes(pickle.dumps({"weights": []}))
    with pytest.raises(InvalidInput, match="pickled"):
        sdk.lora.import_adapter(CUBE, pickled, name="bin")
    with pytest.raises(InvalidInput):
        sdk.lora.import_adapter(CUBE, tmp_path / "absent", name="none")
    exported = sdk.lora.export(CUBE, "trip", tmp_path / "trip")
    with pytest.raises(InvalidInput):
        sdk.lora.import_adapter(CUBE, exported, name="bad name!")
    with pytest.raises(InvalidInput):
        sdk.lora.import_adapter(CUBE, exported, name="copy", density=2.0)
    assert sdk.log(CUBE) == before
    assert sdk.lora.list(CUBE) == [trained]


def test_a_streamed_chat_is_the_chat_in_pieces(sdk: Any, facts: list[str]) -> None:
    whole = sdk.chat("where is alice", cube=CUBE, k=2, max_new_tokens=8)
    stream = sdk.chat_stream("where is alice", cube=CUBE, k=2, max_new_tokens=8)
    with pytest.raises(RuntimeError):
        _ = stream.reply
    pieces = list(stream)
    reply = stream.reply
    assert isinstance(reply, ChatReply)
    assert "".join(pieces) == reply.answer == whole.answer
    assert reply.tokens == whole.tokens
    assert [m.id for m in reply.memories] == [m.id for m in whole.memories]
    again = sdk.chat_stream("where is alice", cube=CUBE, k=2, max_new_tokens=8).run()
    assert again.tokens == whole.tokens


STREAM_REFUSALS: dict[str, tuple[type[MemosError], Callable[[Any], object]]] = {
    "unknown cube": (CubeNotFound, lambda m: m.chat_stream("q", cube="nope")),
    "empty query": (InvalidInput, lambda m: m.chat_stream("", cube=CUBE)),
    "no tokens": (InvalidInput, lambda m: m.chat_stream("q", cube=CUBE, max_new_tokens=0)),
    "unknown adapter": (NotFound, lambda m: m.chat_stream("q", cube=CUBE, adapter="nope")),
}


@pytest.mark.parametrize("case", sorted(STREAM_REFUSALS))
def test_a_refused_stream_raises_before_any_piece(sdk: Any, facts: list[str], case: str) -> None:
    expected, call = STREAM_REFUSALS[case]
    with pytest.raises(MemosError) as caught:
        call(sdk)  # opening the stream raises: nothing is iterated
    assert type(caught.value) is expected
    assert sdk.access_stats(facts) == {}


# over HTTP only -----------------------------------------------------------------------------


@pytest.fixture
def served(data_dir: Path, tiny_model: LocalModel) -> Iterator[tuple[TestClient, MemOS, Any]]:
    """The app in process over a cube with a trained adapter, Alice's headers, and her
    embedded handle."""
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64), model=tiny_model)
    alice = mos.as_principal("alice")
    alice.create_cube(CUBE)
    ids = [item.id for item in alice.add_many(FACTS, cube=CUBE)]
    alice.lora.consolidate(CUBE, ids, name="trip", recipe=QUICK, density=None)
    headers = {"Authorization": f"Bearer {mos.keys.create('alice')[1]}"}
    settings = ServerSettings(store=f"sqlite:///{data_dir}", max_body_bytes=1024)
    with TestClient(create_app(settings, mos=mos)) as client:
        yield client, alice, headers


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


class Marker:
    """Pickled, it writes a file when loaded: proof that nothing unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.path, "ran"))


def crafted_archives(escape: Path, config: bytes) -> dict[str, tuple[bytes, str]]:
    """Adapter uploads broken in one way each, and the error code each must get."""
    marker = pickle.dumps(Marker(escape.parent / "ran.txt"))
    sparse = _entry("adapter_model.safetensors")
    sparse.pax_headers = {"GNU.sparse.map": "0,8", "GNU.sparse.size": str(10**10),
                          "GNU.sparse.name": "adapter_model.safetensors"}  # fmt: skip
    config_entry = (_entry("adapter_config.json"), config)
    return {
        "not a tar": (b"plainly not a tar archive" * 8, "tampered_export"),
        "parent traversal": (_tar((_entry("../escape.json"), b"{}")), "tampered_export"),
        "absolute path": (_tar((_entry(str(escape)), b"{}")), "tampered_export"),
        "symlink": (
            _tar((_entry("adapter_model.safetensors", tarfile.SYMTYPE, str(escape)), b"")),
            "tampered_export",
        ),
        "hard link": (
            _tar((_entry("adapter_config.json", tarfile.LNKTYPE, "/etc/passwd"), b"")),
            "tampered_export",
        ),
        "device": (_tar((_entry("adapter_config.json", tarfile.CHRTYPE), b"")), "tampered_export"),
        "folder": (_tar((_entry("weights", tarfile.DIRTYPE), b"")), "tampered_export"),
        "pickle file": (
            _tar(config_entry, (_entry("adapter_model.bin"), marker)),
            "tampered_export",
        ),
        "pickle as safetensors": (
            _tar(config_entry, (_entry("adapter_model.safetensors"), marker)),
            "corrupt_artifact",
        ),
        "sparse": (_tar(config_entry, (sparse, b"\0" * 8)), "tampered_export"),
        "twice": (_tar(config_entry, config_entry), "tampered_export"),
        "empty": (_tar(), "invalid_input"),
    }


def test_crafted_adapter_archives_get_typed_errors_and_change_nothing(
    served: tuple[TestClient, Any, dict[str, str]], tmp_path: Path
) -> None:
    client, alice, headers = served
    exported = alice.lora.export(CUBE, "trip", tmp_path / "trip")
    config = (exported / "adapter_config.json").read_bytes()
    escape = tmp_path / "outside" / "escape.json"
    escape.parent.mkdir()
    before, adapters = alice.log(CUBE), alice.lora.list(CUBE)
    for case, (data, code) in crafted_archives(escape, config).items():
        response = client.post(
            f"/v1/cubes/{CUBE}/adapters/crafted/import", content=data, headers=headers
        )
        assert 400 <= response.status_code < 500, (case, response.text)
        assert response.json()["error"]["code"] == code, (case, response.text)
        assert alice.log(CUBE) == before, case
    assert alice.lora.list(CUBE) == adapters
    assert sorted(p.name for p in escape.parent.iterdir()) == []  # nothing escaped, nothing ran


def test_adapter_uploads_have_the_import_limit(
    served: tuple[TestClient, Any, dict[str, str]], tmp_path: Path
) -> None:
    """The app's bodies are limited to 1 KiB; an adapter upload to the import limit."""
    client, alice, headers = served
    data = _tar(*((_entry(p.name), p.read_bytes()) for p in sorted(
        alice.lora.export(CUBE, "trip", tmp_path / "trip").iterdir())))  # fmt: skip
    assert len(data) > 1024
    path = f"/v1/cubes/{CUBE}/adapters/copy/import"
    imported = client.post(path, content=data, params={"reason": "r"}, headers=headers)
    assert imported.status_code == 201, imported.text
    assert imported.json()["manifest"]["origin"] == "import"
    before = alice.log(CUBE)
    limited = ServerSettings(store="sqlite:///unused", max_import_bytes=1024)
    # over Alice's handle, which closing (when this app stops) leaves open
    with TestClient(create_app(limited, mos=alice)) as small:
        declared = small.post(path, content=data, headers=headers)
        chunked = small.post(path, content=iter([data[:1000], data[1000:]]), headers=headers)
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "request_too_large"
    assert alice.log(CUBE) == before


@contextmanager
def _streaming(
    *chunks: bytes, before_each: Callable[[int], None] = lambda i: None
) -> Iterator[RemoteMemOS]:
    """A client of a server whose chat stream sends ``chunks``, calling ``before_each(i)``
    before it sends the i-th."""
    canned = Canned(200, chunks, "text/event-stream", before_each)
    with canned_server(canned) as server, RemoteMemOS(server.url, api_key="k") as client:
        yield client


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


REPLY = ChatReply(
    query="q", answer="hello", tokens=(1, 2), memories=(), kv_entry=None, prompt_tokens=3,
    cached_tokens=0,
)  # fmt: skip


def test_a_stream_is_read_as_it_arrives() -> None:
    """Each piece reaches the caller before the server sends the next: the server waits for
    the caller to have read every piece it sent (a client that read the whole answer first
    would leave it waiting in vain)."""
    pieces: list[str] = []
    read = threading.Semaphore(0)  # released by the caller for each piece it reads
    seen: list[list[str]] = []  # the pieces the caller had before each chunk was sent
    chunks = [b": ping\n\n", _event({"text": "hel"}), _event({"text": "lo"}),
              _event({"reply": REPLY.model_dump(mode="json")})]  # fmt: skip
    texts = [i for i, chunk in enumerate(chunks) if b'"text"' in chunk]

    def before_each(i: int) -> None:
        if i - 1 in texts:  # the piece sent just before: wait until the caller has it
            read.acquire(timeout=10)
        seen.append(list(pieces))

    with _streaming(*chunks, before_each=before_each) as client:
        stream = client.chat_stream("q", cube="c")
        for piece in stream:
            pieces.append(piece)
            read.release()
    assert seen == [[], [], ["hel"], ["hel", "lo"]]
    assert stream.reply == REPLY


def _read(stream: Iterable[str], into: list[str]) -> None:
    for piece in stream:
        into.append(piece)


def test_a_stream_that_fails_or_breaks_raises_after_its_pieces() -> None:
    failed = {"code": "version_conflict", "message": "changed", "details": {"item_id": "x"}}
    cases: list[tuple[bytes, type[MemosError]]] = [
        (_event({"error": failed}), VersionConflict),
        (b"", StorageError),  # the stream ends before its reply
        (_event({"surprise": 1}), MemosError),
        (b"data: {not json\n\n", MemosError),
    ]
    for last, expected in cases:
        pieces: list[str] = []
        with _streaming(_event({"text": "a"}), last) as client:
            stream = client.chat_stream("q", cube="c")
            with pytest.raises(MemosError) as caught:
                _read(stream, into=pieces)
        assert type(caught.value) is expected, last
        assert pieces == ["a"]
        if expected is VersionConflict:
            assert (caught.value.message, caught.value.details) == ("changed", {"item_id": "x"})


def test_a_refusal_of_a_stream_is_the_error_envelope(
    served: tuple[TestClient, Any, dict[str, str]],
) -> None:
    client, _, headers = served
    for cube, body, status, code in [
        ("nope", {"query": "q"}, 404, "cube_not_found"),
        (CUBE, {"query": "q", "adapter": "nope"}, 404, "not_found"),
        (CUBE, {"query": "q", "max_new_tokens": 10**6}, 422, "invalid_input"),
        (CUBE, {"query": ""}, 422, "invalid_input"),
    ]:
        response = client.post(f"/v1/cubes/{cube}/chat/stream", json=body, headers=headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == code
    streamed = client.post(
        f"/v1/cubes/{CUBE}/chat/stream", json={"query": "q", "max_new_tokens": 3}, headers=headers
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert '"reply"' in streamed.text.strip().split("\n\n")[-1]


PUBLISHED: dict[str, type[BaseModel]] = {
    "KVEntry": KVEntry,
    "KVManifest": KVManifest,
    "AdapterEntry": AdapterEntry,
    "AdapterManifest": AdapterManifest,
    "LoraSettings": LoraSettings,
    "ModelFingerprint": ModelFingerprint,
}
_OPENAPI_WITHOUT_TORCH = """
import json, sys
from memos.api import ServerSettings, create_app
app = create_app(ServerSettings(store=sys.argv[1]))
print(json.dumps({"torch": "torch" in sys.modules, "openapi": app.openapi()}))
"""


def test_the_model_tiers_publish_the_sdks_models_without_loading_torch(tmp_path: Path) -> None:
    """The server's schemas of the model tiers are the SDK's own models, field for field, and
    publishing them loads no model code."""
    store = f"sqlite:///{tmp_path / 'data'}"
    done = subprocess.run(
        [sys.executable, "-c", _OPENAPI_WITHOUT_TORCH, store],
        capture_output=True, text=True, check=True, env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    answer = json.loads(done.stdout)
    assert answer["torch"] is False
    schemas = answer["openapi"]["components"]["schemas"]
    for name, sdk_model in PUBLISHED.items():
        assert set(schemas[name]["properties"]) == set(sdk_model.model_fields), name


def test_every_model_route_documents_its_answer(
    served: tuple[TestClient, Any, dict[str, str]],
) -> None:
    client, _, _ = served
    paths = client.get("/openapi.json").json()["paths"]
    model_routes = [p for p in paths if p.startswith("/v1/cubes/{cube}/") and any(
        part in p for part in ("/kv", "/adapters", "/chat"))]  # fmt: skip
    assert len(model_routes) >= 10
    for path in model_routes:
        for method, operation in paths[path].items():
            ok = next(v for k, v in operation["responses"].items() if k.startswith("2"))
            assert ok.get("content"), (method, path)
            for media, described in ok["content"].items():
                if media != "application/x-tar":
                    assert described.get("schema") or described.get("itemSchema"), (method, path)
    tar = paths["/v1/cubes/{cube}/adapters/{name}/import"]["post"]["requestBody"]["content"]
    assert list(tar) == ["application/x-tar"]
