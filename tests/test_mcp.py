"""The MCP server (``memos.integrations.mcp``) through the official ``mcp`` client: over stdio
(``memos mcp``, a real process on a data dir) and over streamable HTTP (``/mcp`` of a real
``memos serve`` app in a thread), with API keys, tenants and the tiny chat model."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from _servers import serve
from fastapi.testclient import TestClient
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from memos.api import ServerSettings, create_app

from memos import HashEmbedder, MemOS
from memos.engine._handle import Handle
from memos.engine._operations import operations_of
from memos.integrations.mcp import tools_of
from memos.llm import LocalModel

# the tools the brief of every MCP client names; each is called below
CORE_TOOLS = {"add", "search", "get", "update", "delete", "history", "rollback", "log", "verify",
              "chat"}  # fmt: skip
# operations that move a tar or stream: no tool
NO_TOOL = {"export_cube", "import_cube", "lora_export", "lora_import_adapter", "chat_stream"}
TOOLS = tools_of()


@dataclass(frozen=True)
class Server:
    url: str
    alice: str  # owns the cube "notes"
    bob: str  # another tenant, with a cube "notes" of his own ("bob:notes")
    item: str  # a memory of alice's "notes"
    revoked: str  # a key of alice's, revoked


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: LocalModel) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("mcp-server") / "data"
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64), model=tiny_model)
    alice, bob = (mos.keys.create(principal)[1] for principal in ("alice", "bob"))
    revoked_key, revoked = mos.keys.create("alice")
    mos.keys.revoke(revoked_key.id)
    mos.create_cube("notes", owner="alice")
    mos.as_principal("bob").create_cube("notes")  # "bob:notes": bob's own "notes"
    item = mos.add("the spare key is under the blue flowerpot", cube="notes").id
    with serve(mos, ServerSettings(store=f"sqlite:///{data_dir}", max_new_tokens=8)) as url:
        yield Server(url, alice, bob, item, revoked)


@asynccontextmanager
async def http_client(server: Server, key: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        transport = streamable_http_client(f"{server.url}/mcp", http_client=http)
        async with Client(transport) as client:
            yield client


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """The tool's reply, as JSON; a tool error fails the test."""
    result = await client.call_tool(tool, arguments)
    text = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error, text
    reply = json.loads(text)
    # the client has checked the structured content against the tool's output schema
    assert result.structured_content == ({"result": reply} if TOOLS[tool].wraps else reply)
    return reply


async def refused(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """The error body of a call that must be a tool error."""
    result = await client.call_tool(tool, arguments)
    text = result.content[0].text  # type: ignore[union-attr]
    assert result.is_error, text
    body: dict[str, Any] = json.loads(text)["error"]
    assert result.structured_content == {"error": body}
    return body


# the tools ---------------------------------------------------------------------------------


def test_a_tool_per_operation_but_tars_and_streams() -> None:
    declared = {op.name for op in operations_of(Handle)}
    assert set(tools_of()) == declared - NO_TOOL
    assert set(tools_of()) >= CORE_TOOLS


async def test_tools_list_their_schemas_and_documentation(server: Server) -> None:
    async with http_client(server, server.alice) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) >= CORE_TOOLS
    assert not NO_TOOL & set(listed)
    search = listed["search"]
    assert search.input_schema["type"] == "object"
    assert set(search.input_schema["required"]) == {"cube", "query"}
    assert search.input_schema["properties"]["k"] == {"default": 5, "title": "K", "type": "integer"}
    assert search.input_schema["additionalProperties"] is False
    assert set(listed["get"].input_schema["properties"]) == {"item_id"}
    # the route's body field is named on the wire: add takes ``text``, as POST .../memories
    assert {"cube", "text"} <= set(listed["add"].input_schema["required"])
    # verify's anchor travels as a query string's JSON over REST; a tool takes the object
    anchor = listed["verify"].input_schema["properties"]["anchor"]
    assert {"$ref": "#/$defs/CubeAnchor"} in anchor["anyOf"]
    # the output schema is the reply's (a list under ``result``), definitions at the top
    outputs = {name: tool.output_schema or {} for name, tool in listed.items()}
    assert all(schema["type"] == "object" for schema in outputs.values())
    assert outputs["search"] == {
        "type": "object", "required": ["result"], "$defs": outputs["search"]["$defs"],
        "properties": {"result": {"type": "array", "items": {"$ref": "#/$defs/SearchHit"}}},
    }  # fmt: skip
    assert outputs["get"]["title"] == "MemoryItem"
    search_op = next(op for op in operations_of(Handle) if op.name == "search")
    assert search.description == inspect.getdoc(search_op.function)
    get, delete = listed["get"].annotations, listed["delete"].annotations
    assert get is not None
    assert get.read_only_hint
    assert delete is not None
    assert delete.destructive_hint


async def test_a_memory_from_add_to_delete_over_http(server: Server) -> None:
    async with http_client(server, server.alice) as client:
        added = await call(client, "add", cube="notes", text="Alice lives in Lisbon")
        item = added["id"]
        assert (added["cube"], added["version"]) == ("notes", 1)
        assert (await call(client, "get", item_id=item))["text"] == "Alice lives in Lisbon"
        hits = await call(client, "search", cube="notes", query="Alice lives in Lisbon", k=1)
        assert [hit["item"]["id"] for hit in hits] == [item]
        updated = await call(client, "update", item_id=item, text="Alice lives in Porto")
        assert (updated["text"], updated["version"]) == ("Alice lives in Porto", 2)
        history = await call(client, "history", item_id=item)
        assert [entry["version"] for entry in history] == [1, 2]
        assert [entry["event"]["actor"] for entry in history] == ["alice", "alice"]
        back = await call(client, "rollback", item_id=item, to_version=1)
        assert (back["text"], back["version"]) == ("Alice lives in Lisbon", 3)
        deleted = await call(client, "delete", item_id=item, reason="moved away")
        assert deleted["status"] == "deleted"
        log = await call(client, "log", cube="notes")
        assert [e["op"] for e in log if e["item_id"] == item] == [
            "create", "update", "rollback", "delete"]  # fmt: skip
        report = await call(client, "verify", cube="notes")
        assert report["ok"]
        assert report["events"] == len(log)
        assert (await call(client, "get", item_id=item))["status"] == "deleted"
        again = await refused(client, "update", item_id=item, text="x", expected_version=3)
        assert again["code"] == "version_conflict"


async def test_chat_answers_from_the_cube_on_the_model(server: Server) -> None:
    async with http_client(server, server.alice) as client:
        reply = await call(
            client, "chat", cube="notes", query="Where is the spare key?", k=1,
            max_new_tokens=4,
        )  # fmt: skip
    assert reply["query"] == "Where is the spare key?"
    assert [memory["id"] for memory in reply["memories"]] == [server.item]
    assert isinstance(reply["answer"], str)
    assert 0 < len(reply["tokens"]) <= 4


async def test_memories_are_resources(server: Server) -> None:
    async with http_client(server, server.alice) as client:
        uris = [str(r.uri) for r in (await client.list_resources()).resources]
        assert uris == ["memos://cubes", "memos://cubes/notes"]
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == [
            "memos://cubes/{cube}", "memos://cubes/{cube}/items/{item_id}"]  # fmt: skip
        cubes = await client.read_resource("memos://cubes")
        assert [c["name"] for c in json.loads(cubes.contents[0].text)] == ["notes"]  # type: ignore[union-attr]
        uri = f"memos://cubes/notes/items/{server.item}"
        memory = json.loads((await client.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
        assert memory["text"] == "the spare key is under the blue flowerpot"
        with pytest.raises(MCPError, match="invalid_input"):
            await client.read_resource("memos://elsewhere")


# errors ------------------------------------------------------------------------------------


async def test_an_unknown_cube_is_a_tool_error_with_its_code(server: Server) -> None:
    async with http_client(server, server.alice) as client:
        error = await refused(client, "search", cube="nowhere", query="key")
        assert error["code"] == "cube_not_found"
        assert "nowhere" in error["message"]
        error = await refused(client, "add", cube="nowhere", text="a memory")
        assert error["code"] == "cube_not_found"
        with pytest.raises(MCPError, match="cube_not_found"):
            await client.read_resource("memos://cubes/nowhere")


@pytest.mark.parametrize(
    ("tool", "arguments", "where"),
    [
        ("search", {"cube": "notes"}, ["query"]),  # a required argument missing
        ("search", {"cube": "notes", "query": "key", "k": "many"}, ["k"]),  # a bad type
        ("get", {"item_id": "x", "version": 2}, ["version"]),  # an argument it does not take
        ("no_such_tool", {}, None),
    ],
)
async def test_bad_arguments_are_invalid_input(
    server: Server, tool: str, arguments: dict[str, Any], where: list[str] | None
) -> None:
    async with http_client(server, server.alice) as client:
        error = await refused(client, tool, **arguments)
    assert error["code"] == "invalid_input"
    if where is not None:
        assert [problem["loc"] for problem in error["details"]["problems"]] == [where]


async def test_an_input_limit_of_the_server_holds_for_tools(server: Server) -> None:
    async with http_client(server, server.alice) as client:
        error = await refused(client, "chat", cube="notes", query="key", max_new_tokens=99)
    assert error["code"] == "invalid_input"


@pytest.mark.parametrize("authorization", [None, "Bearer memos_not_a_key", "revoked", "Basic eDo="])
def test_mcp_over_http_needs_a_live_key(server: Server, authorization: str | None) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    if authorization == "revoked":
        headers["Authorization"] = f"Bearer {server.revoked}"
    elif authorization is not None:
        headers["Authorization"] = authorization
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    answer = httpx.post(f"{server.url}/mcp", json=body, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthenticated"


# tenants -----------------------------------------------------------------------------------


async def test_another_tenant_neither_sees_nor_reads_the_cube(server: Server) -> None:
    async with http_client(server, server.bob) as client:
        uris = [str(r.uri) for r in (await client.list_resources()).resources]
        assert uris == ["memos://cubes", "memos://cubes/bob%3Anotes"]
        assert [cube["name"] for cube in await call(client, "list_cubes")] == ["bob:notes"]
        # "notes" names bob's own cube for bob: alice's memory is not in it
        assert await call(client, "search", cube="notes", query="the spare key") == []
        for tool, arguments in (
            ("search", {"cube": "alice:notes", "query": "spare key"}),
            ("add", {"cube": "alice:notes", "text": "bob was here"}),
            ("log", {"cube": "alice:notes"}),
            ("verify", {"cube": "alice:notes"}),
            ("chat", {"cube": "alice:notes", "query": "Where is the key?", "max_new_tokens": 4}),
        ):
            assert (await refused(client, tool, **arguments))["code"] == "cube_not_found", tool
        for tool in ("get", "history", "delete"):
            error = await refused(client, tool, item_id=server.item)
            assert error["code"] == "item_not_found", tool
        for uri, code in (
            ("memos://cubes/alice%3Anotes", "cube_not_found"),
            (f"memos://cubes/alice%3Anotes/items/{server.item}", "cube_not_found"),
            (f"memos://cubes/notes/items/{server.item}", "item_not_found"),
        ):
            with pytest.raises(MCPError, match=code):
                await client.read_resource(uri)
    async with http_client(server, server.alice) as client:  # and alice's memory is intact
        assert (await call(client, "get", item_id=server.item))["version"] == 1
        assert [cube["name"] for cube in await call(client, "list_cubes")] == ["notes"]


# stdio -------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_memos_mcp_serves_the_data_dir_over_stdio(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with MemOS.open(data_dir, create=True) as mos:
        mos.create_cube("notes", embedder="hash-64")
    memos = Path(sys.executable).parent / "memos"
    parameters = StdioServerParameters(
        command=str(memos),
        args=["--data-dir", str(data_dir), "mcp"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    async with Client(parameters) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} >= CORE_TOOLS
        item = (await call(client, "add", cube="notes", text="the boat leaves at nine"))["id"]
        hits = await call(client, "search", cube="notes", query="the boat leaves at nine")
        assert hits[0]["item"]["id"] == item
        await call(client, "update", item_id=item, text="the boat leaves at ten")
        assert len(await call(client, "history", item_id=item)) == 2
        await call(client, "rollback", item_id=item, to_version=1)
        assert (await call(client, "get", item_id=item))["text"] == "the boat leaves at nine"
        await call(client, "delete", item_id=item)
        log = await call(client, "log", cube="notes")
        assert [e["op"] for e in log if e["item_id"] == item] == [
            "create", "update", "rollback", "delete"]  # fmt: skip
        assert (await call(client, "verify", cube="notes"))["ok"]
        assert (await refused(client, "log", cube="elsewhere"))["code"] == "cube_not_found"
        assert (await refused(client, "log", cube="notes", limit="all"))["code"] == "invalid_input"
        uris = [str(r.uri) for r in (await client.list_resources()).resources]
        assert uris == ["memos://cubes", "memos://cubes/notes"]
    with MemOS.open(data_dir) as mos:  # what the process did is in the data dir, and verifies
        assert mos.get(item).status == "deleted"
        assert mos.verify("notes").ok


@pytest.mark.slow
def test_memos_mcp_writes_nothing_but_mcp_on_stdout(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with MemOS.open(data_dir, create=True) as mos:
        mos.create_cube("notes", embedder="hash-64")
    messages: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "add", "arguments": {"cube": "notes", "text": "a memory"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "search", "arguments": {"cube": "notes", "query": "a memory"}}},
    ]  # fmt: skip
    command = [str(Path(sys.executable).parent / "memos"), "--data-dir", str(data_dir), "mcp"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        answers = []
        for message in messages:  # each request answered before the next is sent
            process.stdin.write(json.dumps(message) + "\n")
            process.stdin.flush()
            if "id" in message:
                answers.append(json.loads(process.stdout.readline()))
        process.stdin.close()  # the end of stdin ends the server
        assert process.wait(timeout=60) == 0
        assert process.stdout.read() == ""
    assert [answer["id"] for answer in answers] == [1, 2, 3]
    assert all(answer["jsonrpc"] == "2.0" and "result" in answer for answer in answers)
    assert answers[0]["result"]["serverInfo"]["name"] == "memos"
    hits = json.loads(answers[2]["result"]["content"][0]["text"])
    assert [hit["item"]["text"] for hit in hits] == ["a memory"]


@pytest.mark.slow
async def test_memos_mcp_serves_a_server_as_the_keys_principal(server: Server) -> None:
    parameters = StdioServerParameters(
        command=str(Path(sys.executable).parent / "memos"),
        args=["--url", server.url, "mcp"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MEMOS_API_KEY": server.bob},
    )
    async with Client(parameters) as client:
        assert [cube["name"] for cube in await call(client, "list_cubes")] == ["bob:notes"]
        error = await refused(client, "get", item_id=server.item)
        assert error["code"] == "item_not_found"
        assert (await refused(client, "log", cube="alice:notes"))["code"] == "cube_not_found"


def test_the_endpoint_answers_only_while_the_app_runs(tmp_path: Path) -> None:
    mos = MemOS.open(tmp_path / "data", embedder=HashEmbedder(64))
    _, token = mos.keys.create("alice")
    app = create_app(ServerSettings(store=f"sqlite:///{tmp_path / 'data'}"), mos=mos)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    answer = TestClient(app).post("/mcp", json=body, headers=headers)  # the lifespan never ran
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "storage_error"
    with TestClient(app) as client:  # started
        answer = client.post("/mcp", json=body, headers=headers)
    assert answer.status_code == 200
    assert {"add", "search"} <= {tool["name"] for tool in answer.json()["result"]["tools"]}
