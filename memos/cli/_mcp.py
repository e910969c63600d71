"""``memos mcp``: the MCP server over stdio, for an MCP client (an agent, an IDE) that starts
it as a subprocess. It works on the data dir (or ``--store``), or on the server ``--url``
names as its API key's principal; stdout carries MCP messages only, everything else goes to
stderr."""

import typer

from memos.cli._session import open_memos


def mcp(ctx: typer.Context) -> None:
    """Serve the memory to an MCP client over stdio: a tool per operation, cubes as resources."""
    import anyio

    from memos.integrations.mcp import mcp_server, serve_stdio

    with open_memos(ctx) as handle:
        anyio.run(serve_stdio, mcp_server(handle))
