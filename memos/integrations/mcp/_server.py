"""The MCP server of MemOS on the official SDK's low-level server: the tools of
:mod:`memos.integrations.mcp._tools` and the resources of
:mod:`memos.integrations.mcp._resources`, over stdio (``memos mcp``) or streamable HTTP (the
``/mcp`` route of ``memos serve``).

Each request acts through a handle: the one given, or the one ``handle_of`` makes for the
request (over HTTP: the handle of the API key's principal), so a caller sees exactly the cubes
it could see over the REST routes. Every call into a handle blocks (SQLite, the embedder, the
model), so it runs in a worker thread, never on the event loop."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio.to_thread
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from memos import __version__
from memos.engine._handle import Handle
from memos.errors import InvalidInput, MemosError, NotFound, StorageError

from . import _resources
from ._tools import error_result, jsonable, reply_result, tools_of

T = TypeVar("T")
# the handle a request acts through, from the transport's request (None over stdio)
HandleOf = Callable[[Any], Handle]
Redact = Callable[[MemosError], MemosError]
Context = ServerRequestContext[Any, Any]
NAME = "memos"
INSTRUCTIONS = """MemOS: a memory store for LLM applications. Memories live in cubes; each change
is an audited event that can be rolled back. Tools: add, search, get, update, delete, history,
rollback, log, verify, chat and more (one per operation of the MemOS API). Resources:
memos://cubes and memos://cubes/{cube}/items/{item_id}."""
# the JSON-RPC code of a resource that is not found (as the MCP specification names it)
RESOURCE_NOT_FOUND = -32002


def mcp_server(
    handle: Handle | None = None,
    *,
    handle_of: HandleOf | None = None,
    redact: Redact | None = None,
) -> Server[Any]:
    """The MCP server over ``handle``, or over the handle ``handle_of`` gives for each request
    (it receives the transport's request: the HTTP request, or ``None`` over stdio).
    ``redact`` rewrites an error before a client sees it (a server hides its own paths)."""
    acting = _acting(handle, handle_of)
    shown: Redact = redact or (lambda error: error)
    tools = tools_of()
    listed = types.ListToolsResult(tools=[tool.describe() for tool in tools.values()])

    async def in_thread(ctx: Context, work: Callable[[Handle], T]) -> T:
        def run() -> T:
            return work(acting(ctx.request))

        return await anyio.to_thread.run_sync(run)

    async def list_tools(ctx: Context, params: types.PaginatedRequestParams | None) -> Any:
        return listed

    async def call_tool(ctx: Context, params: types.CallToolRequestParams) -> Any:
        try:
            tool = tools.get(params.name)
            if tool is None:
                raise InvalidInput(f"no tool is named {params.name!r}", tool=params.name)
            reply = await in_thread(ctx, functools.partial(tool.call, arguments=params.arguments))
        except MemosError as error:
            return error_result(shown(error))
        return reply_result(tool, reply)

    async def list_resources(ctx: Context, params: types.PaginatedRequestParams | None) -> Any:
        try:
            resources = await in_thread(ctx, _resources.listed)
        except MemosError as error:
            raise _protocol_error(shown(error)) from None
        return types.ListResourcesResult(resources=resources)

    async def list_templates(ctx: Context, params: types.PaginatedRequestParams | None) -> Any:
        return types.ListResourceTemplatesResult(resource_templates=_resources.TEMPLATES)

    async def read_resource(ctx: Context, params: types.ReadResourceRequestParams) -> Any:
        try:
            contents = await in_thread(ctx, functools.partial(_resources.read, uri=str(params.uri)))
        except MemosError as error:
            raise _protocol_error(shown(error)) from None
        return types.ReadResourceResult(contents=[contents])

    return Server(
        NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
    )


def _acting(handle: Handle | None, handle_of: HandleOf | None) -> HandleOf:
    if handle_of is not None and handle is None:
        return handle_of
    if handle is not None and handle_of is None:
        return lambda _request: handle
    raise ValueError("mcp_server takes a handle or handle_of, not both nor neither")


def _protocol_error(error: MemosError) -> MCPError:
    """A refused resource request as a JSON-RPC error: its code and message in the message,
    the envelope's body as the data."""
    if isinstance(error, NotFound):
        code = RESOURCE_NOT_FOUND
    elif isinstance(error, InvalidInput):
        code = types.INVALID_PARAMS
    else:
        code = types.INTERNAL_ERROR
    body = error.to_dict()["error"]
    return MCPError(code, f"{error.code}: {error.message}", data=jsonable(body))


async def serve_stdio(server: Server[Any]) -> None:
    """Serve ``server`` over this process's stdin and stdout until stdin closes."""
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


class HttpEndpoint:
    """A server as a streamable-HTTP ASGI app (stateless, JSON answers). It answers while its
    :meth:`run` block runs (an app's lifespan; each run with a session manager of its own, as
    one runs once), and before that answers ``503``."""

    def __init__(self, server: Server[Any]) -> None:
        self.server = server
        self._sessions: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        sessions = StreamableHTTPSessionManager(app=self.server, json_response=True, stateless=True)
        async with sessions.run():
            self._sessions = sessions
            try:
                yield
            finally:
                self._sessions = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._sessions is None:
            error = StorageError("the MCP endpoint is not running: the app has not started")
            answer = JSONResponse(error.to_dict(), status_code=error.status)
            await answer(scope, receive, send)
            return
        await self._sessions.handle_request(scope, receive, send)


def http_app(server: Server[Any]) -> HttpEndpoint:
    """``server`` as a streamable-HTTP ASGI app; see :class:`HttpEndpoint`."""
    return HttpEndpoint(server)
