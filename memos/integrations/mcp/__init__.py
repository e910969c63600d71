"""MemOS as an MCP server (the official ``mcp`` SDK): a tool per operation of the MemOS API,
made from its declaration (see :mod:`memos.engine._operations`), and the cubes and memories a
caller can read as resources.

- :func:`mcp_server`: the server over a handle (an embedded ``MemOS.open(...)`` or a
  ``MemOS.connect(...)`` client), or over the handle each request acts as;
- :func:`tools_of`: the tools, by name; the operations that move a directory as a tar (cube
  and adapter export and import) and streamed chat have none;
- :func:`serve_stdio`: serve over stdin and stdout (``memos mcp``);
- :func:`http_app`: the streamable-HTTP ASGI app (:class:`HttpEndpoint`; ``/mcp`` in
  ``memos serve``).

A refused call is a tool error whose text is the error envelope (``{"error": {"code",
"message", "details"}}``); arguments that do not match a tool's schema are ``invalid_input``.
Importing this module imports ``mcp``; ``import memos`` does not.
"""

from memos.integrations.mcp._resources import CUBES, TEMPLATES
from memos.integrations.mcp._server import HttpEndpoint, http_app, mcp_server, serve_stdio
from memos.integrations.mcp._tools import McpTool, tools_of

__all__ = [
    "CUBES",
    "TEMPLATES",
    "HttpEndpoint",
    "McpTool",
    "http_app",
    "mcp_server",
    "serve_stdio",
    "tools_of",
]
