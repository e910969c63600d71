"""Operations declared once (``memos.engine._operations``): a declaration alone gives the embedded
call, the HTTP route and its OpenAPI entry, and the HTTP client's call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _servers import serve
from memos.api import ServerSettings

from memos import HashEmbedder, MemOS
from memos.core._types import ItemStatus
from memos.engine._handle import Handle
from memos.engine._operations import operation, operations_of
from memos.engine._remote import RemoteMemOS
from memos.errors import CubeNotFound, InvalidInput


class Tally(Handle):
    """A toy operation, declared once: how many of a cube's memories are active."""

    @operation("GET", "/v1/cubes/{cube}/tally", tag="toys")
    def tally(self, cube: str, *, tag: str | None = None) -> int:
        """How many of the cube's memories are active (with ``tag``, when given)."""
        info = self._scope.cube(cube)
        items = self._engine.store.iter_items(info.name)
        active = [i for i in items if i.status == ItemStatus.ACTIVE]
        return sum(1 for i in active if tag is None or tag in i.tags)


class TallyingMemOS(Tally, MemOS):
    """The embedded handle, with the toy operation."""


class TallyingClient(Tally, RemoteMemOS):
    """The HTTP client, with the toy operation."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TallyingMemOS, TallyingClient]]:
    root = TallyingMemOS.open(tmp_path / "data", embedder=HashEmbedder(64))
    with serve(root, ServerSettings(store=f"sqlite:///{tmp_path / 'data'}")) as url:
        _, token = root.keys.create("alice")
        with TallyingClient(url, api_key=token) as client:
            yield root, client


def test_a_toy_operation_runs_embedded_and_over_http(
    served: tuple[TallyingMemOS, TallyingClient],
) -> None:
    root, client = served
    cube = client.create_cube("notes").name
    kept = client.add("a kept memory", cube="notes", tags=["kept"])
    client.add("another memory", cube="notes")
    client.delete(client.add("a deleted memory", cube="notes", tags=["kept"]).id)
    alice = root.as_principal("alice")
    assert isinstance(alice, TallyingMemOS)
    assert alice.tally("notes") == client.tally("notes") == root.tally(cube) == 2
    assert alice.tally("notes", tag="kept") == client.tally("notes", tag="kept") == 1
    assert client.get(kept.id) == kept
    with pytest.raises(CubeNotFound):
        client.tally("nope")
    with pytest.raises(InvalidInput):
        client.tally("not a cube name")
    with pytest.raises(TypeError):
        client.tally()  # type: ignore[call-arg]


def test_the_toy_operation_is_a_documented_route(
    served: tuple[TallyingMemOS, TallyingClient],
) -> None:
    _, client = served
    document = httpx.get(f"{client.url}/openapi.json").json()
    route = document["paths"]["/v1/cubes/{cube}/tally"]["get"]
    assert route["summary"] == (
        "How many of the cube's memories are active (with ``tag``, when given)."
    )
    assert route["tags"] == ["toys"]
    assert {p["name"]: p["in"] for p in route["parameters"]} == {"cube": "path", "tag": "query"}
    assert route["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "integer"


# the HTTP client splits a batch into requests, each sent through the declaration
SENT_IN_PARTS = {"add_many"}


def test_the_shared_operations_are_declared_once_for_both_handles() -> None:
    ops = operations_of(Handle)
    declared = {op.name for op in ops}
    assert {"get", "search", "update", "delete", "log", "grant", "revoke"} <= declared
    assert {"kv_build", "lora_consolidate", "jobs_submit", "verify", "add_many"} <= declared
    for op in ops:
        # neither handle writes the operation again: both inherit the one declaration
        own = op.function.__name__
        for handle in (MemOS, RemoteMemOS):
            holder = _namespace_class(handle, op.namespace) if op.namespace else handle
            if op.name in SENT_IN_PARTS and handle is RemoteMemOS:
                continue
            written = vars(holder).get(own)
            assert written is None or hasattr(written, "operation"), (handle, op.name)
    assert issubclass(MemOS, Handle)
    assert issubclass(RemoteMemOS, Handle)
    # each route is a (method, path) of its own
    routes = [(op.method, op.path) for op in operations_of(TallyingMemOS)]
    assert len(routes) == len(set(routes))


def _namespace_class(handle: type, name: str) -> type:
    return next(vars(k)[name].cls for k in handle.__mro__ if name in vars(k))


def test_a_declaration_makes_its_request_model_from_the_signature() -> None:
    search = next(op for op in operations_of(Handle) if op.name == "search")
    assert (search.method, search.path, search.path_parameters) == (
        "POST", "/v1/cubes/{cube}/search", ["cube"],
    )  # fmt: skip
    fields = search.request.model_fields
    assert "cube" not in fields  # a path parameter travels in the path
    assert fields["query"].is_required()
    assert not fields["k"].is_required()
    assert fields["k"].default == 5
    # on the wire an iterable is a list and a mapping an object
    schema = search.request.model_json_schema()
    assert {"array", "null"} == {t.get("type") for t in schema["properties"]["tags"]["anyOf"]}
    assert {"object", "null"} == {t.get("type") for t in schema["properties"]["where"]["anyOf"]}
    with pytest.raises(ValueError, match="extra"):
        search.request.model_validate({"query": "q", "colour": "red"})
    add = next(op for op in operations_of(Handle) if op.name == "add")
    assert "text" in add.request.model_fields  # the wire name of the parameter ``content``
    assert add.arguments(("hello",), {"cube": "notes"})["text"] == "hello"
