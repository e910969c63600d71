"""The cubes a caller can read and their memories as MCP resources: ``memos://cubes`` (the
list), ``memos://cubes/{cube}`` (one cube) and ``memos://cubes/{cube}/items/{item_id}`` (one
memory). A cube name is percent-encoded in a URI (a namespaced name holds a ``/``)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote

from mcp import types
from pydantic import TypeAdapter

from memos.core._types import CubeInfo, MemoryItem
from memos.engine._handle import Handle
from memos.errors import InvalidInput, ItemNotFound

SCHEME = "memos://"
CUBES = f"{SCHEME}cubes"
JSON = "application/json"
_CUBE_LIST = TypeAdapter(list[CubeInfo])

TEMPLATES = [
    types.ResourceTemplate(
        name="cube",
        uri_template=f"{CUBES}/{{cube}}",
        description="A cube the caller can read: its owner, grants, embedder and codec.",
        mime_type=JSON,
    ),
    types.ResourceTemplate(
        name="memory",
        uri_template=f"{CUBES}/{{cube}}/items/{{item_id}}",
        description="One memory of a cube: its text, metadata, version and status.",
        mime_type=JSON,
    ),
]


def cube_uri(cube: str) -> str:
    return f"{CUBES}/{quote(cube, safe='')}"


def item_uri(item: MemoryItem) -> str:
    return f"{cube_uri(item.cube)}/items/{quote(item.id, safe='')}"


def listed(handle: Handle) -> list[types.Resource]:
    """The list of cubes, and each cube the caller can read."""
    cubes = [
        types.Resource(
            name=info.name,
            uri=cube_uri(info.name),
            description=f"The cube {info.name}, owned by {info.owner}.",
            mime_type=JSON,
        )
        for info in handle.list_cubes()
    ]
    every = types.Resource(
        name="cubes", uri=CUBES, description="The cubes the caller can read.", mime_type=JSON
    )
    return [every, *cubes]


def read(handle: Handle, uri: str) -> types.TextResourceContents:
    """The JSON of the resource ``uri`` names; a cube or memory the caller cannot read is not
    found, exactly as one that does not exist."""
    return types.TextResourceContents(
        uri=uri, mime_type=JSON, text=json.dumps(_value(handle, uri), ensure_ascii=False)
    )


def _value(handle: Handle, uri: str) -> Any:
    if uri == CUBES:
        return _CUBE_LIST.dump_python(handle.list_cubes(), mode="json")
    parts = uri.removeprefix(f"{CUBES}/").split("/") if uri.startswith(f"{CUBES}/") else []
    if len(parts) == 1 and parts[0]:
        return handle.get_cube(unquote(parts[0])).model_dump(mode="json")
    if len(parts) == 3 and parts[0] and parts[1] == "items" and parts[2]:
        cube = handle.get_cube(unquote(parts[0]))
        item = handle.get(unquote(parts[2]))
        if item.cube != cube.name:
            raise ItemNotFound(f"no memory {unquote(parts[2])!r} in cube {cube.name!r}")
        return item.model_dump(mode="json")
    raise InvalidInput(f"no MemOS resource has the URI {uri!r}", uri=uri)
