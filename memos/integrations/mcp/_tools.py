"""The MCP tools of MemOS: one per declared operation (see :mod:`memos.engine._operations`),
made from its declaration: its name, its docstring as the description, its path parameters and
request fields (by wire name) as the input schema, its reply's JSON schema as the output schema,
and its reply as JSON text and as structured content. Structured content is an object: a reply
whose schema is not one (a list, a union, nothing) is under ``result``.

Operations that move a directory as a tar (``export_cube``, ``import_cube``, the adapters'
``export`` and ``import_adapter``) and streamed ones (``chat_stream``) have no tool: a tool
call takes JSON arguments and answers one result (``chat`` answers the whole reply)."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_type_hints

from mcp import types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from memos.engine._handle import Handle
from memos.engine._operations import Operation, operations_of, wire_type
from memos.errors import InvalidInput, MemosError

_READS = frozenset({"GET"})


@dataclass(frozen=True)
class McpTool:
    """An operation as a tool: its arguments are one model of every parameter by wire name."""

    operation: Operation
    arguments: type[BaseModel]

    @property
    def name(self) -> str:
        return self.operation.name

    @functools.cached_property
    def _reply_schema(self) -> dict[str, Any]:
        return dict(self.operation.reply_adapter.json_schema(mode="serialization"))

    @property
    def wraps(self) -> bool:
        """Whether the structured content holds the reply under ``result``."""
        return self._reply_schema.get("type") != "object"

    @functools.cached_property
    def output_schema(self) -> dict[str, Any]:
        """The schema of the structured content (its definitions at the top, where a
        ``$ref`` finds them)."""
        if not self.wraps:
            return self._reply_schema
        reply = dict(self._reply_schema)
        definitions = reply.pop("$defs", None)
        schema = {"type": "object", "properties": {"result": reply}, "required": ["result"]}
        return schema if definitions is None else {**schema, "$defs": definitions}

    def describe(self) -> types.Tool:
        """The tool as ``tools/list`` lists it."""
        op = self.operation
        return types.Tool(
            name=op.name,
            description=inspect.getdoc(op.function) or op.summary,
            input_schema=self.arguments.model_json_schema(),
            output_schema=self.output_schema,
            annotations=types.ToolAnnotations(
                read_only_hint=op.method in _READS,
                destructive_hint=op.method == "DELETE",
                open_world_hint=False,
            ),
        )

    def call(self, handle: Handle, arguments: Mapping[str, Any] | None) -> Any:
        """Run the operation on ``handle``; the reply as JSON values. Arguments that do not
        match the schema are :class:`InvalidInput`."""
        try:
            given = self.arguments.model_validate(dict(arguments or {}))
        except ValidationError as error:
            raise _invalid(self.name, error) from None
        values = {name: getattr(given, name) for name in type(given).model_fields}
        result = self.operation.call(handle, values)
        return self.operation.reply_adapter.dump_python(result, mode="json")


def tools_of(handle: type[Handle] = Handle) -> dict[str, McpTool]:
    """A tool per operation of the handle class, by name, but those that move a directory or
    stream (see the module docstring)."""
    return {
        op.name: McpTool(op, _arguments_model(op))
        for op in operations_of(handle)
        if op.archive is None and not op.stream
    }


def _arguments_model(op: Operation) -> type[BaseModel]:
    """Every parameter of ``op`` by wire name, typed as JSON carries it (a model as an object,
    even where the HTTP route takes it in a query string)."""
    hints = get_type_hints(op.function, include_extras=True)
    fields: dict[str, Any] = {}
    for name, wire in op.parameters.items():
        default = op.signature.parameters[name].default
        required = default is inspect.Parameter.empty
        if wire in op.path_parameters:
            annotation: Any = op.path_types[wire]
        else:
            annotation = wire_type(hints[name])
        fields[wire] = (annotation, Field(... if required else default))
    model_name = "".join(part.title() for part in op.name.split("_")) + "Arguments"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def _invalid(tool: str, error: ValidationError) -> InvalidInput:
    problems = [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in error.errors(include_url=False)
    ]
    return InvalidInput(f"the arguments of {tool} do not match its schema", problems=problems)


def reply_result(tool: McpTool, reply: Any) -> types.CallToolResult:
    """A tool's reply: its JSON as text, and as structured content (under ``result`` where
    the tool's reply is not an object)."""
    structured = {"result": reply} if tool.wraps else reply
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(reply, ensure_ascii=False))],
        structured_content=structured,
    )


def error_result(error: MemosError) -> types.CallToolResult:
    """A refused call as a tool error: the error envelope (code, message, details) as text and
    as structured content, as the server's JSON error answer carries it."""
    body = jsonable(error.to_dict())
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body, ensure_ascii=False))],
        structured_content=body,
        is_error=True,
    )


def jsonable(value: Any) -> Any:
    """``value`` as JSON values: an error's details may hold any value (a path, a date)."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))
